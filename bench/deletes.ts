/**
 * `npm run bench:deletes` — how fast a burst of blob-deletion jobs drains through the real job
 * runner (pg-boss, polling every JOBS_POLL_SECONDS = 2 s, the default), against the same number
 * of blobs deleted straight through the Azure SDK in the same run.
 *
 * 1. Embedded PostgreSQL + Azurite (bench/harness.ts), the real app (buildApp, jobs on).
 * 2. Baseline: BENCH_DELETES tiny blobs written, then deleted directly, 50 at a time.
 * 3. The same number written again, one DELETE_LORA_BLOB job each enqueued in one transaction
 *    (what a burst of deleteLora calls, or a storage outage, leaves behind); timed until every job
 *    is completed, then every blob checked gone.
 *
 * Exit 0 when the queue drained within MAX_DRAIN_SECONDS; 1 otherwise. Knobs: BENCH_DELETES=1000.
 */
import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { buildApp } from '../server/app.ts';
import { Queue } from '../server/jobs/queues.ts';
import { loraBlobPath } from '../server/storage/blob-store.ts';
import { log, onCleanup, runBench, runtimeConfig, startServices } from './harness.ts';

const COUNT = Number(process.env.BENCH_DELETES ?? '1000');
const MAX_DRAIN_SECONDS = 15;
const CONCURRENCY = 50;

async function inChunks<T>(items: T[], fn: (item: T) => Promise<unknown>): Promise<void> {
  for (let i = 0; i < items.length; i += CONCURRENCY) await Promise.all(items.slice(i, i + CONCURRENCY).map(fn));
}

await runBench(async () => {
  const { pgHandle, azurite } = await startServices();
  const app = buildApp(
    runtimeConfig({
      NODE_ENV: 'test',
      PORT: '0',
      DATABASE_URL: pgHandle.url,
      AZURE_STORAGE_CONNECTION_STRING: azurite.connectionString,
      JWT_SECRET: 'bench-secret-bench-secret-bench-secret-0123',
      LOG_LEVEL: 'silent',
      JOBS_POLL_SECONDS: '2',
    }),
  );
  onCleanup('app', () => app.stop());
  await app.start();
  const userId = randomUUID();
  const paths = Array.from({ length: COUNT }, (_, i) => loraBlobPath(userId, BigInt(i), 'safetensors'));
  const body = Buffer.from('lora bytes');

  await inChunks(paths, (p) => app.blobs.put(p, body));
  let t0 = performance.now();
  await inChunks(paths, (p) => app.blobs.delete(p));
  const directMs = performance.now() - t0;
  log(`baseline: ${COUNT} blobs deleted through the SDK, ${CONCURRENCY} at a time: ${(directMs / 1000).toFixed(2)} s`);

  await inChunks(paths, (p) => app.blobs.put(p, body));
  await app.db.$transaction(
    async (tx) => {
      for (const [i, blobPath] of paths.entries())
        await app.jobs.enqueue(tx, Queue.DELETE_LORA_BLOB, { loraId: String(i), userId, blobPath });
    },
    { timeout: 120_000 },
  );
  t0 = performance.now();
  for (;;) {
    const [row] = await app.db.$queryRaw<{ n: bigint }[]>`
      SELECT count(*) AS n FROM pgboss.job WHERE name = ${Queue.DELETE_LORA_BLOB} AND state = 'completed'`;
    if (Number(row?.n) === COUNT) break;
    if (performance.now() - t0 > 300_000) throw new Error(`only ${row?.n} of ${COUNT} jobs completed after 300 s`);
    await sleep(50);
  }
  const drainMs = performance.now() - t0;
  const left = (await Promise.all(paths.map((p) => app.blobs.exists(p)))).filter(Boolean).length;
  if (left > 0) throw new Error(`${left} blobs left after every job completed`);

  const ok = drainMs / 1000 <= MAX_DRAIN_SECONDS;
  log(
    `queue: ${COUNT} blob-deletion jobs drained in ${(drainMs / 1000).toFixed(2)} s (${Math.round(COUNT / (drainMs / 1000))} jobs/s, ` +
      `${(drainMs / directMs).toFixed(1)}× the direct deletes, including up to one 2 s poll) — target ≤ ${MAX_DRAIN_SECONDS} s: ${ok ? 'met' : 'MISSED'}`,
  );
  return ok ? 0 : 1;
});
