import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { azuriteConnectionString } from '../../server/embedded/azurite.ts';
import { Queue } from '../../server/jobs/queues.ts';
import { loraBlobPath } from '../../server/storage/blob-store.ts';
import { type CorruptingProxy, startCorruptingProxy } from '../testkit/corrupting-proxy.ts';
import { loraDownload, mintGrant } from '../testkit/grants.ts';
import { member } from '../testkit/graphql-assertions.ts';
import { deleteJobsFor, deleteLora as deleteLoraResult, isolatedDatabase } from '../testkit/library-helpers.ts';
import { eventually, newUserId, seedLora } from '../testkit/seed.ts';
import { startTestServer, type TestServer } from '../testkit/server.ts';

/**
 * Deleting a LoRA's blob (issue 10, point 5; THREATS.md row 37): download URLs handed out before
 * the delete stop working as soon as `deleteLora` returns, a storage that does not answer does not
 * hold the mutation up (the durable job finishes the work), and a backlog of blob-deletion jobs
 * drains in batches instead of one job per poll. Each block has its own database, so pg-boss
 * workers of other test files never run these jobs.
 */

async function deleteLora(server: TestServer, token: string, id: string): Promise<void> {
  member(await deleteLoraResult(server, token, id), 'DeleteLoraSuccess');
}

describe('a download URL handed out before the delete', () => {
  let db: Awaited<ReturnType<typeof isolatedDatabase>>;
  let server: TestServer;
  beforeAll(async () => {
    db = await isolatedDatabase();
    // No job workers anywhere on this database: whatever removes the blob happens inside deleteLora.
    server = await startTestServer({ DATABASE_URL: db.url, JOBS_ENABLED: 'false' });
  });
  afterAll(async () => {
    await server?.stop();
    await db?.drop();
  });

  it('stops working (404) as soon as deleteLora returns; the durable job is still queued as the fallback', async () => {
    const userId = newUserId();
    const lora = await seedLora(server.app, userId);
    const grant = await mintGrant(server, userId);
    const { url } = member(await loraDownload(server, await server.tokens.machine(), lora.id, grant), 'LoraDownload');
    expect(url).toMatch(/^http/);
    const before = await fetch(url);
    expect(before.status).toBe(200);
    await before.arrayBuffer();

    await deleteLora(server, await server.tokens.user(userId), lora.id);

    const after = await fetch(url);
    await after.arrayBuffer();
    expect([403, 404]).toContain(after.status);
    expect((await deleteJobsFor(server, lora.id)).length).toBe(1);
  });
});

describe('storage that does not answer the immediate delete', () => {
  let db: Awaited<ReturnType<typeof isolatedDatabase>>;
  let proxy: CorruptingProxy;
  let server: TestServer;
  beforeAll(async () => {
    db = await isolatedDatabase();
    const azuritePort = Number(/BlobEndpoint=http:\/\/127\.0\.0\.1:(\d+)/.exec(inject('storageConnectionString'))?.[1]);
    proxy = await startCorruptingProxy(azuritePort);
    server = await startTestServer({ DATABASE_URL: db.url, AZURE_STORAGE_CONNECTION_STRING: azuriteConnectionString(proxy.port) });
  });
  afterAll(async () => {
    await server?.stop();
    await proxy?.close();
    await db?.drop();
  });

  it('does not hold deleteLora up: the mutation answers, and the durable job removes the blob once storage recovers', async () => {
    const userId = newUserId();
    const lora = await seedLora(server.app, userId);
    const row = await server.app.db.lora.findUniqueOrThrow({ where: { file_id: BigInt(lora.id) } });
    const outageEnds = Date.now() + 8_000;
    proxy.add({
      fault: { kind: 'status', status: 503 },
      times: 1_000,
      match: (r) => r.method === 'DELETE' && r.url.includes(row.blob_path) && Date.now() < outageEnds,
    });

    const started = Date.now();
    await deleteLora(server, await server.tokens.user(userId), lora.id);
    // far below the outage (and the SDK's own retries of up to a minute): the immediate delete gave up
    expect(Date.now() - started).toBeLessThan(7_000);
    expect(await server.app.blobs.exists(row.blob_path)).toBe(true);

    await eventually(async () => !(await server.app.blobs.exists(row.blob_path)), 60_000, 'blob deletion by the job');
    await eventually(async () => (await deleteJobsFor(server, lora.id))[0]?.state === 'completed', 30_000, 'job completion');
  }, 90_000);
});

describe('a backlog of blob-deletion jobs', () => {
  const COUNT = 400;
  let db: Awaited<ReturnType<typeof isolatedDatabase>>;
  let server: TestServer;
  beforeAll(async () => {
    db = await isolatedDatabase();
    server = await startTestServer({ DATABASE_URL: db.url, JOBS_POLL_SECONDS: '2' }); // the production default
  });
  afterAll(async () => {
    await server?.stop();
    await db?.drop();
  });

  it(`of ${COUNT} jobs drains in batches, far faster than one job per poll (${COUNT} × 2 s)`, async () => {
    const userId = newUserId();
    const paths = Array.from({ length: COUNT }, (_, i) => loraBlobPath(userId, `${Date.now()}${i}`, 'safetensors'));
    for (let i = 0; i < paths.length; i += 25) {
      await Promise.all(paths.slice(i, i + 25).map((p) => server.app.blobs.put(p, Buffer.from('lora bytes'))));
    }
    // The queue as deletes leave it (one job per deleted LoRA), e.g. after a burst or a storage outage.
    await server.app.db.$transaction(async (tx) => {
      for (const [i, blobPath] of paths.entries()) {
        await server.app.jobs.enqueue(tx, Queue.DELETE_LORA_BLOB, { loraId: `${i}-${randomUUID()}`, userId, blobPath });
      }
    });

    // Generous for a loaded 2-core machine; one job per 2 s poll would need over 13 minutes.
    await eventually(
      async () => {
        const rows = await server.app.db.$queryRaw<{ n: bigint }[]>`
          SELECT count(*) AS n FROM pgboss.job WHERE name = ${Queue.DELETE_LORA_BLOB} AND state = 'completed'`;
        return Number(rows[0]?.n) === COUNT;
      },
      120_000,
      `${COUNT} jobs completed`,
    );
    const left = await Promise.all(paths.map((p) => server.app.blobs.exists(p)));
    expect(left.filter(Boolean).length).toBe(0);
  }, 180_000);
});
