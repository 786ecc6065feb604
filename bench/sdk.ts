/**
 * `npm run bench:sdk` — the SDK's streamed upload from disk (`uploadLora({ file: { path } })`)
 * against a raw node:http streamed multipart POST of the same file, to the same server, in the
 * same run; and the client's memory during the SDK's uploads.
 *
 * 1. A valid 1 GiB safetensors file written to a temp dir in 4 MiB chunks (never held in memory),
 *    its sha256 computed on the way; free disk space checked first.
 * 2. Embedded PostgreSQL + Azurite (bench/harness.ts); the real app in a child process
 *    (bench/upload-server.ts).
 * 3. Warm-up of the server (a small file both ways), then BENCH_RUNS rounds alternating which
 *    goes first (SDK, raw | raw, SDK | …) so drift hits both. Each timed upload runs in a fresh
 *    client process (this file with --client), so that its RSS is the client's alone: sampled
 *    every 20 ms (`process.memoryUsage.rss()`) during the upload, plus VmHWM (peak, reset before
 *    the upload with /proc/self/clear_refs) after it; growth = peak − RSS just before the upload.
 *    Every upload is checked (UploadLoraSuccess, size, sha256, READY) and its LoRA deleted after.
 *
 * Both ways send the same operation (the SDK's UploadLoraDocument), read the file in 1 MiB chunks
 * and stream it with a content-length; the raw one is the baseline a hand-written client gets.
 * Exit 0 when SDK/raw throughput (medians) ≥ MIN_RATIO and the client's peak RSS growth during
 * every SDK upload < MAX_RSS_GROWTH; 1 otherwise. Temp files, blobs and processes are removed or
 * stopped on every exit path (also SIGINT). MB = 10^6 bytes.
 * Knobs: BENCH_RUNS=2 (rounds)  BENCH_FILE_MB=1024 (MiB)  BENCH_KEEP=1 (keep the temp dir)
 */
import { spawn } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { createReadStream, readFileSync, writeFileSync } from 'node:fs';
import { statfs } from 'node:fs/promises';
import http from 'node:http';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { print } from 'graphql';
import { UploadLoraDocument } from '../sdk/gql/graphql.ts';
import { createLoraClient, type LoraClient, LoraSdkError } from '../sdk/index.ts';
import { signToken } from '../server/auth/tokens.ts';
import { BlobStore } from '../server/storage/blob-store.ts';
import { type BenchFile, deleteAllBlobs, writeSafetensorsFile } from './files.ts';
import {
  benchTempDir,
  log,
  median,
  onCleanup,
  runBench,
  runtimeConfig,
  serverChildEnv,
  startServerChild,
  startServices,
  timed,
} from './harness.ts';

// ---------------------------------------------------------------------------------------------
// Parameters

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const MB = 1e6;
const RUNS = Number(process.env.BENCH_RUNS ?? '2');
const FILE_BYTES = Number(process.env.BENCH_FILE_MB ?? '1024') * MiB;
const WARMUP_BYTES = 16 * MiB + 4096;
const MIN_RATIO = 0.9;
const MAX_RSS_GROWTH = 64 * MB;
const SAMPLE_MS = 20;
const CHUNK_BYTES = MiB; // both ways read the file in 1 MiB chunks (the SDK's default)
const JWT_SECRET = 'bench-secret-bench-secret-bench-secret-0123456789';
const ROOT = fileURLToPath(new URL('..', import.meta.url));
const SELF = fileURLToPath(import.meta.url);
const CLIENT_TIMEOUT_MS = 15 * 60_000;

if (!Number.isInteger(FILE_BYTES) || FILE_BYTES < 64 * MiB || FILE_BYTES > 2 * GiB) {
  console.error('BENCH_FILE_MB must be an integer number of MiB between 64 and 2048');
  process.exit(2);
}
if (!Number.isInteger(RUNS) || RUNS < 1) {
  console.error('BENCH_RUNS must be an integer ≥ 1');
  process.exit(2);
}

// ---------------------------------------------------------------------------------------------
// A client process's memory

function selfPeakRss(): number {
  const match = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync('/proc/self/status', 'utf8'));
  return match?.[1] ? Number(match[1]) * 1024 : Number.NaN;
}

/** Resets VmHWM (the peak RSS) to the current RSS; false where the kernel refuses. */
function resetSelfPeak(): boolean {
  try {
    writeFileSync('/proc/self/clear_refs', '5', { flag: 'r+' }); // 'r+': never create or truncate
    return true;
  } catch {
    return false;
  }
}

interface Measurement {
  label: string;
  method: 'sdk' | 'raw';
  ms: number;
  mbps: number;
  rssBefore: number;
  /** Max of the 20 ms samples and VmHWM. */
  rssPeak: number;
  samples: number;
  cpuMs: number;
}

const mb = (bytes: number) => (bytes / MB).toFixed(1);

async function measure(label: string, method: 'sdk' | 'raw', bytes: number, fn: () => Promise<void>): Promise<Measurement> {
  const rssBefore = process.memoryUsage.rss();
  const hwm = resetSelfPeak();
  let peak = rssBefore;
  let samples = 0;
  const timer = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage.rss());
    samples++;
  }, SAMPLE_MS);
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  try {
    await fn();
  } finally {
    clearInterval(timer);
  }
  const ms = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  if (hwm) peak = Math.max(peak, selfPeakRss());
  const m: Measurement = {
    label,
    method,
    ms,
    mbps: bytes / MB / (ms / 1000),
    rssBefore,
    rssPeak: peak,
    samples,
    cpuMs: (cpu.user + cpu.system) / 1000,
  };
  return m;
}

// ---------------------------------------------------------------------------------------------
// The raw baseline: a GraphQL multipart request written by hand over node:http

const UPLOAD_QUERY = print(UploadLoraDocument);

function rawUpload(
  url: string,
  token: string,
  file: BenchFile,
  fileName: string,
  variables: Record<string, unknown>,
): Promise<{ status: number; text: string }> {
  const boundary = `------------------------${randomBytes(8).toString('hex')}`; // curl's style
  const operations = JSON.stringify({ query: UPLOAD_QUERY, operationName: 'UploadLora', variables: { ...variables, file: null } });
  const head = Buffer.from(
    `--${boundary}\r\nContent-Disposition: form-data; name="operations"\r\n\r\n${operations}\r\n` +
      `--${boundary}\r\nContent-Disposition: form-data; name="map"\r\n\r\n${JSON.stringify({ 0: ['variables.file'] })}\r\n` +
      `--${boundary}\r\nContent-Disposition: form-data; name="0"; filename="${fileName}"\r\nContent-Type: application/octet-stream\r\n\r\n`,
  );
  const tail = Buffer.from(`\r\n--${boundary}--\r\n`);
  return new Promise((resolvePost, rejectPost) => {
    let answered = false;
    const req = http.request(url, {
      method: 'POST',
      headers: {
        'content-type': `multipart/form-data; boundary=${boundary}`,
        'content-length': String(head.length + file.size + tail.length),
        authorization: `Bearer ${token}`,
        'x-graphql-yoga-csrf': '1',
      },
    });
    req.on('response', (res) => {
      answered = true; // the server may answer before the whole body was sent (a refusal)
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolvePost({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', rejectPost);
    });
    req.on('error', (error) => {
      if (!answered) rejectPost(error);
    });
    void (async () => {
      const source = createReadStream(file.path, { highWaterMark: CHUNK_BYTES });
      try {
        if (!req.write(head)) await once(req, 'drain');
        for await (const chunk of source) {
          if (answered || req.destroyed) return;
          if (!req.write(chunk)) await once(req, 'drain');
        }
        req.end(tail);
      } finally {
        source.destroy();
      }
    })().catch((error: unknown) => {
      req.destroy();
      if (!answered) rejectPost(error);
    });
  });
}

/** Said when the server refuses the request body as too large (a 413 before the upload pipeline). */
const TOO_LARGE =
  "\n  (a 413 from the content-length, before the upload pipeline: Yoga's maxRequestBodySize, 25 MB by default, " +
  'applies to multipart requests too unless server/http/yoga.ts lifts it; MAX_UPLOAD_BYTES alone does not)';

// ---------------------------------------------------------------------------------------------
// The uploads

/** An upload to time: which way, where, as whom, which file, under which name. */
interface UploadJob {
  method: 'sdk' | 'raw';
  label: string;
  url: string;
  token: string;
  file: BenchFile;
  name: string;
}

function check(what: string, file: BenchFile, lora: { id: string; sizeBytes: number; sha256: string; status: string }): void {
  if (lora.sizeBytes !== file.size || lora.sha256 !== file.sha256 || lora.status !== 'READY')
    throw new Error(`${what} stored the wrong thing: ${JSON.stringify(lora)}, expected ${file.size} bytes sha256 ${file.sha256}`);
}

/** Uploads with the SDK (streamed from disk); resolves with the LoRA's id. */
async function viaSdk(sdk: LoraClient, job: UploadJob): Promise<string> {
  try {
    const { lora } = await sdk.uploadLora({
      file: { path: job.file.path, fileName: `${job.name}.safetensors` },
      name: job.name,
      tags: ['bench'],
    });
    check('SDK upload', job.file, lora);
    return lora.id;
  } catch (error) {
    if (error instanceof LoraSdkError && error.code === 'REQUEST_ENTITY_TOO_LARGE')
      throw new Error(`SDK upload: ${error.message}${TOO_LARGE}`);
    throw error;
  }
}

/** Uploads with the hand-written multipart POST; resolves with the LoRA's id. */
async function viaRaw(job: UploadJob): Promise<string> {
  const { file } = job;
  const res = await rawUpload(job.url, job.token, file, `${job.name}.safetensors`, {
    name: job.name,
    tags: ['bench'],
    sizeBytes: file.size,
  });
  let result: any;
  try {
    result = JSON.parse(res.text)?.data?.uploadLora;
  } catch {
    result = undefined;
  }
  if (res.status !== 200 || result?.__typename !== 'UploadLoraSuccess')
    throw new Error(
      `raw upload of ${file.size} bytes failed (HTTP ${res.status}): ${res.text.slice(0, 500)}${/REQUEST_ENTITY_TOO_LARGE/.test(res.text) ? TOO_LARGE : ''}`,
    );
  check('raw upload', file, result.lora);
  return result.lora.id;
}

// ---------------------------------------------------------------------------------------------
// The client in a fresh process per timed upload (this file with --client): its RSS is the
// client's alone, with no garbage left from an earlier upload to hide (or add to) the growth.

const CLIENT_FLAG = '--client';
const JOB_ENV = 'BENCH_SDK_JOB';

/** The child: one upload, measured, the result sent to the parent over IPC. */
async function clientMain(): Promise<never> {
  process.on('disconnect', () => process.exit(1)); // the parent went away
  const job = JSON.parse(process.env[JOB_ENV] ?? '') as UploadJob;
  const sdk = createLoraClient({ url: job.url, token: job.token, retry: false });
  let reply: unknown;
  try {
    let loraId = '';
    const measurement = await measure(job.label, job.method, job.file.size, async () => {
      loraId = job.method === 'sdk' ? await viaSdk(sdk, job) : await viaRaw(job);
    });
    reply = { ok: true, measurement, loraId };
  } catch (error) {
    reply = { ok: false, error: (error as Error).message };
  }
  await sdk.close();
  await new Promise<void>((resolve) => (process.send ? process.send(reply, () => resolve()) : resolve()));
  process.exit(0);
}

/** Runs one timed upload in a client child; resolves with its measurement and the LoRA's id. */
async function uploadInChild(job: UploadJob): Promise<{ measurement: Measurement; loraId: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', SELF, CLIENT_FLAG], {
    cwd: ROOT,
    env: { ...process.env, [JOB_ENV]: JSON.stringify(job) },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const exited = once(child, 'exit');
  const kill = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGKILL');
    await exited;
  };
  onCleanup(`client ${job.label}`, kill);
  type Reply = { ok: true; measurement: Measurement; loraId: string } | { ok: false; error: string };
  let reply: Reply | undefined;
  child.on('message', (message) => {
    reply = message as Reply;
  });
  const timeout = setTimeout(() => void kill(), CLIENT_TIMEOUT_MS);
  try {
    const [code, signal] = await exited;
    if (!reply) throw new Error(`client ${job.label} exited without a result (${signal ?? `code ${code}`})`);
    if (!reply.ok) throw new Error(`client ${job.label}: ${reply.error}`);
    return { measurement: reply.measurement, loraId: reply.loraId };
  } finally {
    clearTimeout(timeout);
  }
}

// ---------------------------------------------------------------------------------------------

async function main(): Promise<number> {
  log(`lora-vault SDK upload benchmark: ${FILE_BYTES / MiB} MiB from disk, SDK uploadLora vs raw node:http multipart, ${RUNS} runs each`);

  // Disk: the files, and every byte Azurite stores (deleted blobs' space comes back only with its
  // garbage collection, so count everything), plus a margin.
  const fileBytes = WARMUP_BYTES + FILE_BYTES;
  const storedBytes = 2 * WARMUP_BYTES + 2 * RUNS * FILE_BYTES;
  const needBytes = fileBytes + storedBytes + 512 * MiB;
  const fsStats = await statfs(tmpdir());
  const freeBytes = fsStats.bavail * fsStats.bsize;
  log(`disk: ${(freeBytes / 1e9).toFixed(1)} GB free in ${tmpdir()}, this run needs ${(needBytes / 1e9).toFixed(1)} GB`);
  if (freeBytes < needBytes) {
    console.error(
      `not enough free disk space in ${tmpdir()}: ${(freeBytes / 1e9).toFixed(1)} GB free, ${(needBytes / 1e9).toFixed(1)} GB needed; ` +
        'set TMPDIR to a roomier disk',
    );
    return 1;
  }

  const dir = await benchTempDir();
  log(`temp dir ${dir}`);
  const [files] = await timed(`wrote ${mb(fileBytes)} MB of safetensors (warm-up, ${FILE_BYTES / MiB} MiB)`, async () => ({
    warm: await writeSafetensorsFile(join(dir, 'warmup.safetensors'), WARMUP_BYTES),
    main: await writeSafetensorsFile(join(dir, 'main.safetensors'), FILE_BYTES),
  }));
  log(`${files.main.size.toLocaleString('en')} bytes, sha256 ${files.main.sha256}`);

  const [{ pgHandle, azurite }] = await timed('started embedded PostgreSQL + Azurite', () => startServices());
  const env = serverChildEnv(dir, { pgHandle, azurite }, JWT_SECRET, { QUOTA_DEFAULT_MAX_BYTES: String(16 * GiB) });
  const config = runtimeConfig(env);
  if (config.maxUploadBytes < FILE_BYTES)
    throw new Error(`the server's MAX_UPLOAD_BYTES (${config.maxUploadBytes}) is below the file's ${FILE_BYTES} bytes`);
  const store = new BlobStore({
    connectionString: azurite.connectionString,
    loraContainer: config.storage.loraContainer,
    sharedContainer: config.storage.sharedContainer,
    sharedPrefix: config.storage.sharedPrefix,
  });
  // Registered after Azurite and before the server: runs after the server stopped, before Azurite does.
  onCleanup('blob deletion', () => deleteAllBlobs(store));

  const [server] = await timed('upload server started (child process)', () => startServerChild(env));
  const graphqlUrl = `${server.url}/graphql`;
  log(`server ${server.url} pid ${server.pid}`);
  const userId = randomUUID();
  const token = await signToken(JWT_SECRET, { role: 'user', sub: userId });
  const sdk: LoraClient = createLoraClient({ url: graphqlUrl, token, retry: false });
  onCleanup('SDK client', () => sdk.close());

  let uploads = 0;
  const job = (method: 'sdk' | 'raw', label: string, file: BenchFile): UploadJob => ({
    method,
    label,
    url: graphqlUrl,
    token,
    file,
    name: `${method}-${++uploads}`,
  });
  await timed('warm-up of the server (a small upload each way, in this process, then deleted)', async () => {
    await sdk.deleteLora({ id: await viaSdk(sdk, job('sdk', 'warm-up SDK', files.warm)) });
    await sdk.deleteLora({ id: await viaRaw(job('raw', 'warm-up raw', files.warm)) });
  });
  await sleep(500);

  const results: Measurement[] = [];
  const loadBefore = loadavg()[0] ?? 0;
  for (let round = 0; round < RUNS; round++) {
    const order = round % 2 === 0 ? (['sdk', 'raw'] as const) : (['raw', 'sdk'] as const);
    for (const method of order) {
      const label = `run ${round + 1} ${method === 'sdk' ? 'SDK' : 'raw'}`;
      const { measurement: m, loraId } = await uploadInChild(job(method, label, files.main));
      log(
        `${label}: ${(m.ms / 1000).toFixed(2)} s, ${m.mbps.toFixed(1)} MB/s; client CPU ${(m.cpuMs / 1000).toFixed(1)} s; ` +
          `client RSS ${mb(m.rssBefore)} → peak ${mb(m.rssPeak)} MB (+${mb(m.rssPeak - m.rssBefore)}, ${m.samples} samples)`,
      );
      results.push(m);
      await sdk.deleteLora({ id: loraId }); // frees the quota; not timed
      await sleep(500);
    }
  }
  const loadAfter = loadavg()[0] ?? 0;

  // -------------------------------------------------------------------------------------------
  // Summary
  const sdkRuns = results.filter((m) => m.method === 'sdk');
  const rawRuns = results.filter((m) => m.method === 'raw');
  const sdkMbps = sdkRuns.map((m) => m.mbps);
  const rawMbps = rawRuns.map((m) => m.mbps);
  const ratio = median(sdkMbps) / median(rawMbps);
  const bestRatio = Math.max(...sdkMbps) / Math.max(...rawMbps);
  const growth = (runs: Measurement[]) => Math.max(...runs.map((m) => m.rssPeak - m.rssBefore));
  const sdkGrowth = growth(sdkRuns);
  const rawGrowth = growth(rawRuns);
  const ratioOk = ratio >= MIN_RATIO;
  const rssOk = sdkGrowth < MAX_RSS_GROWTH;
  const ok = ratioOk && rssOk;

  const line = '─'.repeat(110);
  const fmt = (v: number[]) =>
    `best ${Math.max(...v).toFixed(1)}, median ${median(v).toFixed(1)} MB/s (${v.map((x) => x.toFixed(1)).join(', ')})`;
  const out: string[] = [];
  out.push('', line, `SUMMARY — uploading a ${FILE_BYTES / MiB} MiB safetensors LoRA from disk to the real server (MB = 10^6 bytes)`, line);
  out.push(
    `SDK = createLoraClient(...).uploadLora({ file: { path } }) (sdk/node-upload.ts: streamed multipart over node:http); ` +
      `raw = a hand-written multipart POST over node:http, same operation, same 1 MiB reads. Both verified (UploadLoraSuccess, size, sha256, READY).`,
  );
  out.push(
    `${RUNS} runs each, alternating (SDK first in odd rounds, raw first in even ones); server in a child process, each timed upload's client in a fresh process of its own. ` +
      `Machine: ${cpus().length} CPUs shared by client, server, Azurite and PostgreSQL (and whatever else runs); 1-min load ${loadBefore.toFixed(2)} before, ${loadAfter.toFixed(2)} after.`,
  );
  out.push(line);
  out.push(`SDK:  ${fmt(sdkMbps)}`);
  out.push(`raw:  ${fmt(rawMbps)}`);
  out.push(
    `ratio SDK/raw: ${ratio.toFixed(2)} (medians; best/best ${bestRatio.toFixed(2)}) — target ≥ ${MIN_RATIO}: ${ratioOk ? 'yes' : 'NO'}`,
  );
  out.push(
    `client peak RSS growth during an SDK upload: ${mb(sdkGrowth)} MB (raw: ${mb(rawGrowth)} MB) — target < ${MAX_RSS_GROWTH / MB} MB: ${rssOk ? 'yes' : 'NO'}`,
  );
  out.push(line, 'per upload:');
  for (const m of results)
    out.push(
      `  ${m.label.padEnd(10)} ${(m.ms / 1000).toFixed(2).padStart(6)} s ${m.mbps.toFixed(1).padStart(6)} MB/s │ client CPU ${(m.cpuMs / 1000).toFixed(1)} s │ ` +
        `client RSS ${mb(m.rssBefore)} → ${mb(m.rssPeak)} MB (+${mb(m.rssPeak - m.rssBefore)}; ${m.samples} samples)`,
    );
  out.push(line, `RESULT: ${ok ? 'PASS' : 'FAIL'} — ratio ${ratio.toFixed(2)}, SDK client RSS growth ${mb(sdkGrowth)} MB`, line);
  console.log(out.join('\n'));
  return ok ? 0 : 1;
}

/** Deletes every blob (committed or not) in both containers; best effort when Azurite is already down. */

if (process.argv.includes(CLIENT_FLAG)) await clientMain();
else await runBench(main);
