import { AgentError } from './errors.ts';

/**
 * Reads a job grant's claims WITHOUT checking its signature: the agent holds no key. The API
 * verifies the grant on every miss (the download URL needs it); locally the claims only keep hits
 * per-user and bound leases, and a forged `exp` gains nothing because leases are capped locally.
 * Until the trust issue replaces this with signature verification on the machine (docs/THREATS.md,
 * threat 26: a grant the API did not sign shown for a LoRA already cached), a hit is only as safe
 * as the claims' honesty.
 */
export function readGrantClaims(grant: string, now: Date): { sub: string; exp: number } {
  const payload = grant.split('.')[1];
  let claims: { sub?: unknown; exp?: unknown } = {};
  try {
    claims = JSON.parse(Buffer.from(payload ?? '', 'base64url').toString('utf8'));
  } catch {
    // handled below
  }
  if (typeof claims.sub !== 'string' || typeof claims.exp !== 'number') throw new AgentError('INVALID_GRANT', 'the job grant is malformed');
  if (claims.exp * 1000 <= now.getTime()) throw new AgentError('INVALID_GRANT', 'the job grant has expired');
  return { sub: claims.sub.toLowerCase(), exp: claims.exp };
}
