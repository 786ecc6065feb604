import { createHash } from 'node:crypto';

/** Hex sha256 of some bytes: what the API reports as `sha256` and the agent verifies. */
export function sha256(data: Buffer | Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}
