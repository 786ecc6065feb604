import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { member } from '../testkit/graphql-assertions.ts';
import { deleteLora, listLoras } from '../testkit/library-helpers.ts';
import { eventually, newUserId, seedLora } from '../testkit/seed.ts';
import { startTestServer, type TestServer } from '../testkit/server.ts';

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer();
});
afterAll(() => server?.stop());

describe('smoke', () => {
  it('lists a seeded LoRA, deletes it, and the job removes the blob', async () => {
    const userId = newUserId();
    const token = await server.tokens.user(userId);
    const lora = await seedLora(server.app, userId, { name: 'Smoke' });
    const list = await listLoras(server, token);
    expect(list.total).toBe(1);
    expect(list.loras).toEqual([expect.objectContaining({ id: lora.id, name: 'Smoke', sizeBytes: lora.sizeBytes })]);
    const del = member(await deleteLora(server, token, lora.id), 'DeleteLoraSuccess');
    expect(del.quota).toMatchObject({ loraCount: 0, usedStorageBytes: 0 });
    const row = await server.app.db.lora.findUniqueOrThrow({ where: { file_id: BigInt(lora.id) } });
    await eventually(async () => !(await server.app.blobs.exists(row.blob_path)), 15_000, 'blob deletion');
  });
});
