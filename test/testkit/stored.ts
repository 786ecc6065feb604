import { expect } from 'vitest';
import type { App } from '../../server/app.ts';
import { blobsOf } from './invariants.ts';

/** Nothing of this user's exists anywhere: no rows, no committed blobs, quota untouched. */
export async function expectNothingStored(app: App, userId: string): Promise<void> {
  expect(await app.db.lora.count({ where: { user_id: userId } })).toBe(0);
  expect(await app.db.flat_file.count({ where: { user_id: userId } })).toBe(0);
  expect(await blobsOf(app, userId)).toEqual([]);
  const quota = await app.db.user_lora_quota.findUnique({ where: { user_id: userId } });
  expect(Number(quota?.used_bytes ?? 0)).toBe(0);
  expect(quota?.lora_count ?? 0).toBe(0);
}
