import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { azuriteConnectionString } from '../../server/embedded/azurite.ts';
import { type CorruptingProxy, startCorruptingProxy } from '../testkit/corrupting-proxy.ts';
import { member } from '../testkit/graphql-assertions.ts';
import { deleteLora } from '../testkit/library-helpers.ts';
import { eventually, newUserId, seedLora } from '../testkit/seed.ts';
import { startTestServer, type TestServer } from '../testkit/server.ts';

/** THREATS row 16: storage answering 503 — the blob-deletion job retries with backoff and finishes. */

let proxy: CorruptingProxy;
let server: TestServer;

beforeAll(async () => {
  const azuritePort = Number(/BlobEndpoint=http:\/\/127\.0\.0\.1:(\d+)/.exec(inject('storageConnectionString'))?.[1]);
  proxy = await startCorruptingProxy(azuritePort);
  server = await startTestServer({ AZURE_STORAGE_CONNECTION_STRING: azuriteConnectionString(proxy.port) });
});
afterAll(async () => {
  await server?.stop();
  await proxy?.close();
});

describe('storage faults', () => {
  it('a delete whose blob deletion meets 503s still removes the blob exactly once', async () => {
    const userId = newUserId();
    const token = await server.tokens.user(userId);
    const lora = await seedLora(server.app, userId);
    const row = await server.app.db.lora.findUniqueOrThrow({ where: { file_id: BigInt(lora.id) } });

    proxy.add({ fault: { kind: 'status', status: 503 }, times: 3, match: (r) => r.method === 'DELETE' && r.url.includes(row.blob_path) });
    member(await deleteLora(server, token, lora.id), 'DeleteLoraSuccess');

    await eventually(async () => !(await server.app.blobs.exists(row.blob_path)), 30_000, 'blob deletion after 503s');
    expect(proxy.count('status')).toBe(3);
    const jobs = await eventually(
      async () => {
        const rows = await server.app.db.$queryRaw<{ state: string }[]>`
        SELECT state::text FROM pgboss.job WHERE name = 'lora.delete-blob' AND data->>'loraId' = ${lora.id}`;
        // completed by the job, or cancelled = done by deleteLora itself (the job then never deletes again)
        return rows.every((r) => r.state === 'completed' || r.state === 'cancelled') && rows;
      },
      10_000,
      'job completed',
    );
    expect(jobs).toHaveLength(1);
  }, 45_000);
});
