import { afterAll, beforeAll, describe, expect, it } from 'vitest';
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
    const list = await server.gql('{ loras { total loras { id name sizeBytes } } }', {}, { token });
    expect(list.body.data?.loras).toEqual({ total: 1, loras: [{ id: lora.id, name: 'Smoke', sizeBytes: lora.sizeBytes }] });
    const del = await server.gql(
      'mutation($id: ID!) { deleteLora(id: $id) { __typename ... on DeleteLoraSuccess { quota { loraCount usedStorageBytes } } } }',
      { id: lora.id },
      { token },
    );
    expect(del.body.data?.deleteLora).toEqual({ __typename: 'DeleteLoraSuccess', quota: { loraCount: 0, usedStorageBytes: 0 } });
    const row = await server.app.db.lora.findUniqueOrThrow({ where: { file_id: BigInt(lora.id) } });
    await eventually(async () => !(await server.app.blobs.exists(row.blob_path)), 15_000, 'blob deletion');
  });
});
