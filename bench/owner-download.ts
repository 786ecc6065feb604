/**
 * `npm run bench:download` — an owner's download streamed through the API (`GET
 * /downloads/loras/<token>`, issue 17 session 6) against the same snapshot fetched straight from
 * storage with a read SAS, in the same run, and the API process's RSS while it streams.
 *
 * 1. Embedded PostgreSQL + Azurite (bench/harness.ts), the real app in this process.
 * 2. A BENCH_DOWNLOAD_MB (1024) safetensors file stored as a READY LoRA (uploaded with the Azure
 *    SDK's uploadFile, then finalized like any upload: its own snapshot).
 * 3. Rounds (BENCH_ROUNDS, 2): curl (another process, writing to /dev/null) fetches the SAS URL
 *    (baseline), then the owner link; throughput of each, and this process's RSS sampled every 50 ms.
 *
 * Exit 0 when RSS grew < 64 MB while streaming (the file is never buffered) and the API reached
 * ≥ 0.5 × the direct throughput (one more loopback hop and a copy through Node); 1 otherwise.
 */
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { buildApp } from '../server/app.ts';
import { writeSafetensorsFile } from './files.ts';
import { log, median, onCleanup, runBench, runtimeConfig, startServices } from './harness.ts';

const MiB = 1024 * 1024;
const SIZE = Number(process.env.BENCH_DOWNLOAD_MB ?? '1024') * MiB;
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? '2');
const MAX_RSS_GROWTH = 64 * MiB;
const MIN_RATIO = 0.5;
const run = promisify(execFile);

/** Fetches `url` with curl into /dev/null: bytes and seconds as curl measured them. */
async function curl(url: string): Promise<{ bytes: number; seconds: number }> {
  const { stdout } = await run('curl', ['-sS', '--fail', '-o', '/dev/null', '-w', '%{size_download} %{time_total}', url]);
  const [bytes, seconds] = stdout.trim().split(' ').map(Number);
  return { bytes: bytes ?? 0, seconds: seconds ?? 0 };
}

/** Runs `fn` while sampling this process's RSS: the largest growth over the RSS at the start. */
async function withRss<T>(fn: () => Promise<T>): Promise<[T, number]> {
  const start = process.memoryUsage().rss;
  let peak = start;
  const timer = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage().rss);
  }, 50);
  try {
    return [await fn(), peak - start];
  } finally {
    clearInterval(timer);
  }
}

await runBench(async () => {
  const { tempDir, pgHandle, azurite } = await startServices();
  const app = buildApp(
    runtimeConfig({
      NODE_ENV: 'test',
      PORT: '0',
      DATABASE_URL: pgHandle.url,
      AZURE_STORAGE_CONNECTION_STRING: azurite.connectionString,
      JWT_SECRET: 'bench-secret-bench-secret-bench-secret-0123',
      LOG_LEVEL: 'silent',
      JOBS_ENABLED: 'false',
      SAS_TTL_SECONDS: '3600',
    }),
  );
  onCleanup('app', () => app.stop());
  await app.start();

  const file = await writeSafetensorsFile(join(tempDir, 'bench.safetensors'), SIZE);
  const userId = randomUUID();
  const { fileId, blobPath } = await app.services.registry.begin({
    userId,
    name: 'bench download',
    fileName: 'bench.safetensors',
    format: 'SAFETENSORS',
    tags: [],
  });
  await app.blobs.clientsForTests().loras.getBlockBlobClient(blobPath).uploadFile(file.path, { concurrency: 8 });
  await app.services.registry.finalize(
    { role: 'user', userId },
    {
      fileId,
      sizeBytes: SIZE,
      sha256: file.sha256,
      baseModel: 'SDXL',
      baseModelSource: 'METADATA',
      rank: 64,
      alpha: 32,
      metadata: {},
      uploadSource: 'api',
    },
  );
  const row = await app.db.lora.findUniqueOrThrow({ where: { file_id: fileId } });
  const sas = (await app.blobs.loraSas(row.blob_path, 3600, undefined, row.blob_snapshot)).url;
  const link = await app.services.ownerDownloads.create({ role: 'user', userId }, fileId.toString());
  log(`${SIZE / MiB} MiB LoRA stored; ${ROUNDS} rounds of SAS (direct) then API (proxied)`);

  const direct: number[] = [];
  const proxied: number[] = [];
  const growth: number[] = [];
  for (let round = 1; round <= ROUNDS; round++) {
    const d = await curl(sas);
    const [p, grew] = await withRss(() => curl(link.url));
    if (d.bytes !== SIZE || p.bytes !== SIZE) throw new Error(`short download: ${d.bytes} / ${p.bytes} of ${SIZE}`);
    direct.push(SIZE / MiB / d.seconds);
    proxied.push(SIZE / MiB / p.seconds);
    growth.push(grew);
    log(
      `round ${round}: direct ${direct.at(-1)?.toFixed(1)} MB/s, API ${proxied.at(-1)?.toFixed(1)} MB/s, API RSS +${(grew / MiB).toFixed(1)} MB`,
    );
  }
  const ratio = median(proxied) / median(direct);
  const rss = Math.max(...growth);
  const pass = rss < MAX_RSS_GROWTH && ratio >= MIN_RATIO;
  console.log(
    `RESULT: ${pass ? 'PASS' : 'FAIL'} — ${SIZE / MiB} MiB owner download: API median ${median(proxied).toFixed(1)} MB/s vs direct SAS ${median(direct).toFixed(1)} MB/s, ratio ${ratio.toFixed(2)} (target ≥ ${MIN_RATIO}); API RSS growth ${(rss / MiB).toFixed(1)} MB (target < ${MAX_RSS_GROWTH / MiB} MB)`,
  );
  return pass ? 0 : 1;
});
