import { expect } from 'vitest';
import type { App } from '../../server/app.ts';

/** Nothing of this user's exists anywhere: no rows, no committed blobs, quota untouched. */
export async function expectNothingStored(app: App, userId: string): Promise<void> {
  expect(await app.db.lora.count({ where: { user_id: userId } })).toBe(0);
  expect(await app.db.flat_file.count({ where: { user_id: userId } })).toBe(0);
  const blobs: string[] = [];
  for await (const b of app.blobs.list(`users/${userId}/`)) blobs.push(b.name);
  expect(blobs).toEqual([]);
  const quota = await app.db.user_lora_quota.findUnique({ where: { user_id: userId } });
  expect(Number(quota?.used_bytes ?? 0)).toBe(0);
  expect(quota?.lora_count ?? 0).toBe(0);
}
