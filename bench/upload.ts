/**
 * `npm run bench:upload` — uploadLora through the full HTTP + multipart + GraphQL stack versus the
 * Azure SDK writing the same file straight to the same storage, and the server's memory meanwhile.
 *
 * 1. Two valid safetensors files written to the temp dir in chunks (never held in memory), their
 *    sha256 computed on the way: 1 GiB, and 2 GiB — exactly MAX_UPLOAD_BYTES' default.
 * 2. Embedded PostgreSQL + Azurite in the temp dir; the real app (buildApp, port 0, jobs off) in a
 *    child process (bench/upload-server.ts), so that its RSS is its own: VmRSS sampled from
 *    /proc/<pid>/status every 50 ms, plus VmHWM (peak) reset before each upload (catches spikes
 *    between samples). Growth = peak during an upload − the RSS after warm-up.
 * 3. Warm-up (small uploads both ways), then BENCH_RUNS rounds alternating which goes first
 *    (API, SDK | SDK, API | …) so drift hits both: the 1 GiB file as a streamed multipart POST
 *    (node:http, content-length, read from disk, a curl-like boundary) checked to be
 *    UploadLoraSuccess with the right size and sha256 and a committed blob of that size (the first
 *    one's bytes also downloaded and hashed, untimed); and BlockBlobClient.uploadStream with the
 *    server's block size and number of blocks in flight (read from BlockStager).
 * 4. The 2 GiB file through the API: must succeed, size and sha256 right.
 * CPU time of client, server and Azurite (and of everything else on the machine) is reported per
 * upload: on a small machine they compete for the same cores.
 *
 * Exit 0 when API/SDK (medians) ≥ MIN_RATIO, server RSS growth < MAX_RSS_GROWTH, the 2 GiB upload
 * succeeded and the stored bytes are the file's. Every blob is deleted, the temp dir removed and
 * every process stopped on every exit path (also SIGINT). MB = 10^6 bytes.
 * Knobs (for quick runs while developing; the defaults are the benchmark):
 *   BENCH_RUNS=2         rounds of (API, SDK)          BENCH_FILE_MB=1024 / BENCH_LARGE_MB=2048   file sizes (MiB)
 *   BENCH_CPU_PROF=dir   run the server with --cpu-prof, profile written to dir when it stops
 *   BENCH_SDK=file       baseline with uploadFile (8 MiB blocks, concurrency 4) instead of uploadStream
 *   BENCH_SERVER_NODE_ARGS="--trace-gc"   extra node flags for the server process
 *   BENCH_BOUNDARY=XBOUNDARY   the multipart boundary (default: curl-like, 40 characters)
 *   BENCH_KEEP=1         keep the temp dir (path printed)
 */
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { createReadStream, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdir, statfs } from 'node:fs/promises';
import http from 'node:http';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { signToken } from '../server/auth/tokens.ts';
import { BlobStore, type StagedBlob } from '../server/storage/blob-store.ts';
import { BlockStager } from '../server/uploads/block-stager.ts';
import { type BenchFile, deleteAllBlobs, writeSafetensorsFile } from './files.ts';
import {
  benchTempDir,
  isCleaningUp,
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
import {
  cutAndResume,
  RESUMABLE_MAX_RESENT,
  RESUMABLE_MAX_RSS_GROWTH,
  RESUMABLE_MIN_RATIO,
  viaResumable,
  viaSdkUploadFile,
} from './upload-resumable.ts';

// ---------------------------------------------------------------------------------------------
// Parameters

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const MB = 1e6;
const RUNS = Number(process.env.BENCH_RUNS ?? '2');
const FILE_BYTES = Number(process.env.BENCH_FILE_MB ?? '1024') * MiB;
const LARGE_BYTES = Number(process.env.BENCH_LARGE_MB ?? '2048') * MiB;
const WARMUP_BYTES = 20 * MiB + 4096; // three blocks, the last one partial
const MAX_UPLOAD_BYTES = 2 * GiB; // the server's default MAX_UPLOAD_BYTES (not overridden below)
const MIN_RATIO = 0.8;
const MAX_RSS_GROWTH = 100 * MB;
const SAMPLE_MS = 50;
const JWT_SECRET = 'bench-secret-bench-secret-bench-secret-0123456789';
const SDK_MODE = process.env.BENCH_SDK === 'file' ? 'file' : 'stream';
const CPU_PROF_DIR = process.env.BENCH_CPU_PROF ? resolve(process.env.BENCH_CPU_PROF) : undefined;

// The server's staging parameters, read from BlockStager itself so the SDK baseline follows them.
const stagerDefaults = new BlockStager({} as StagedBlob) as unknown as { blockBytes: number; concurrency: number };
const BLOCK_BYTES = stagerDefaults.blockBytes;
const CONCURRENCY = stagerDefaults.concurrency;

for (const [name, bytes] of [
  ['BENCH_FILE_MB', FILE_BYTES],
  ['BENCH_LARGE_MB', LARGE_BYTES],
] as const) {
  if (!Number.isInteger(bytes) || bytes < 64 * MiB || bytes > MAX_UPLOAD_BYTES) {
    console.error(`${name} must be an integer number of MiB between 64 and ${MAX_UPLOAD_BYTES / MiB}`);
    process.exit(2);
  }
}
if (!Number.isInteger(RUNS) || RUNS < 1) {
  console.error('BENCH_RUNS must be an integer ≥ 1');
  process.exit(2);
}

// ---------------------------------------------------------------------------------------------
// The server in a child process (bench/harness.ts startServerChild), with this benchmark's flags

async function serverNodeArgs(): Promise<string[]> {
  const args = (process.env.BENCH_SERVER_NODE_ARGS ?? '').split(/\s+/).filter(Boolean);
  if (CPU_PROF_DIR) {
    await mkdir(CPU_PROF_DIR, { recursive: true });
    args.push('--cpu-prof', `--cpu-prof-dir=${CPU_PROF_DIR}`);
  }
  return args;
}

// ---------------------------------------------------------------------------------------------
// Process measurements (/proc)

const CLOCK_TICKS_PER_SECOND = 100; // USER_HZ on Linux

function procStatus(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  const match = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return match?.[1] ? Number(match[1]) * 1024 : Number.NaN;
}

/** Resets VmHWM (the peak RSS) to the current RSS; false where the kernel refuses. */
function resetPeak(pid: number): boolean {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5', { flag: 'r+' }); // 'r+': never create or truncate
    return true;
  } catch {
    return false;
  }
}

/** CPU time of one process (user and system), in ms. */
function procCpuMs(pid: number | undefined): { user: number; sys: number } {
  if (pid === undefined) return { user: Number.NaN, sys: Number.NaN };
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' '); // fields from 3 (state) on
    const ms = (ticks: string | undefined) => (Number(ticks) * 1000) / CLOCK_TICKS_PER_SECOND;
    return { user: ms(fields[11]), sys: ms(fields[12]) };
  } catch {
    return { user: Number.NaN, sys: Number.NaN };
  }
}

/** Busy and total jiffies of the whole machine. */
function machineCpu(): { busy: number; total: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '';
  const v = line.trim().split(/\s+/).slice(1, 9).map(Number);
  const total = v.reduce((a, b) => a + b, 0);
  const idle = (v[3] ?? 0) + (v[4] ?? 0);
  return { busy: total - idle, total };
}

/** The Azurite child of this process (it names itself 'azurite-blob'), for its CPU time. */
function findAzuritePid(): number | undefined {
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (comm.startsWith('azurite') && ppid === process.pid) return Number(entry);
    } catch {
      // the process went away
    }
  }
  return undefined;
}

interface Measurement {
  label: string;
  bytes: number;
  ms: number;
  mbps: number;
  /** Server RSS just before, and the peak during (max of the 50 ms samples and VmHWM). */
  rssBefore: number;
  rssPeak: number;
  samples: number;
  /** CPU time during the upload, ms; the server's also split into user and system time. */
  cpuMs: { client: number; server: number; serverUser: number; serverSys: number; azurite: number; others: number };
  /** Busy share of all CPUs of the machine during the upload. */
  machineBusy: number;
  /** Why the upload failed (then the figures are not a throughput). */
  error?: string;
}

async function measure(label: string, bytes: number, serverPid: number, azuritePid: number | undefined, fn: () => Promise<void>) {
  const rssBefore = procStatus(serverPid, 'VmRSS');
  const hwm = resetPeak(serverPid);
  let peak = rssBefore;
  let samples = 0;
  const timer = setInterval(() => {
    try {
      peak = Math.max(peak, procStatus(serverPid, 'VmRSS'));
      samples++;
    } catch {
      // the server is gone: the upload fails and says so
    }
  }, SAMPLE_MS);
  const cpu0 = { client: process.cpuUsage(), server: procCpuMs(serverPid), azurite: procCpuMs(azuritePid), machine: machineCpu() };
  const t0 = performance.now();
  let error: string | undefined;
  try {
    await fn();
  } catch (e) {
    error = (e as Error).message;
  } finally {
    clearInterval(timer);
  }
  const ms = performance.now() - t0;
  const client = process.cpuUsage(cpu0.client);
  const server = procCpuMs(serverPid);
  const azurite = procCpuMs(azuritePid);
  const machine = machineCpu();
  if (hwm) peak = Math.max(peak, procStatus(serverPid, 'VmHWM'));
  const machineMs = ((machine.busy - cpu0.machine.busy) * 1000) / CLOCK_TICKS_PER_SECOND;
  const m: Measurement = {
    label,
    bytes,
    ms,
    mbps: bytes / MB / (ms / 1000),
    rssBefore,
    rssPeak: peak,
    samples,
    cpuMs: {
      client: (client.user + client.system) / 1000,
      server: server.user + server.sys - cpu0.server.user - cpu0.server.sys,
      serverUser: server.user - cpu0.server.user,
      serverSys: server.sys - cpu0.server.sys,
      azurite: azurite.user + azurite.sys - cpu0.azurite.user - cpu0.azurite.sys,
      others: 0,
    },
    machineBusy: (machine.busy - cpu0.machine.busy) / (machine.total - cpu0.machine.total),
  };
  // PostgreSQL, the kernel's own work, and any other process on the machine
  m.cpuMs.others = Math.max(0, machineMs - m.cpuMs.client - m.cpuMs.server - m.cpuMs.azurite);
  if (error) {
    m.error = error;
    log(`${label}: FAILED after ${(ms / 1000).toFixed(2)} s: ${error}`);
  } else log(`${label}: ${describe(m)}`);
  return m;
}

const seconds = (ms: number) => (ms / 1000).toFixed(1);

function describe(m: Measurement, baseline?: number): string {
  const c = m.cpuMs;
  const rss =
    baseline === undefined
      ? `server RSS ${mb(m.rssBefore)} → peak ${mb(m.rssPeak)} MB`
      : `server RSS peak ${mb(m.rssPeak)} MB (${m.rssPeak >= baseline ? '+' : '−'}${mb(Math.abs(m.rssPeak - baseline))})`;
  return (
    `${(m.ms / 1000).toFixed(2).padStart(6)} s ${m.mbps.toFixed(1).padStart(5)} MB/s │ CPU s: client ${seconds(c.client)}, ` +
    `server ${seconds(c.server)} (user ${seconds(c.serverUser)} + sys ${seconds(c.serverSys)}), Azurite ${seconds(c.azurite)}, ` +
    `others ${seconds(c.others)}; machine ${(m.machineBusy * 100).toFixed(0).padStart(3)} % busy │ ${rss}`
  );
}

const mb = (bytes: number) => (bytes / MB).toFixed(1);

// ---------------------------------------------------------------------------------------------
// The two ways up

const UPLOAD_QUERY = `mutation BenchUpload($file: Upload!, $name: String, $sizeBytes: Bytes) {
  uploadLora(file: $file, name: $name, sizeBytes: $sizeBytes, tags: ["bench"]) {
    __typename
    ... on Error { code message }
    ... on UploadLoraSuccess { lora { id sizeBytes sha256 status format } }
  }
}`;

/**
 * A GraphQL multipart request (the spec curl -F and browsers send) over node:http, the file
 * streamed from disk with a content-length: constant memory however large the file. The boundary
 * looks like curl's (24 dashes + 16 hex digits); busboy's search for it costs more the shorter it
 * is (BENCH_BOUNDARY overrides it, e.g. test/testkit/multipart.ts's "XBOUNDARY").
 */
async function postUpload(
  url: string,
  token: string,
  file: BenchFile,
  filename: string,
  variables: Record<string, unknown>,
): Promise<{ status: number; text: string }> {
  try {
    return await sendMultipart(url, token, file, filename, variables, false);
  } catch (error) {
    // The server may refuse from the headers and close the connection (app.ts does so for
    // multipart): the client then sees EPIPE/ECONNRESET while writing, not the answer. Ask again
    // with the headers and the parts before the file only, and report what the server says.
    const code = (error as { code?: string }).code;
    if (code !== 'EPIPE' && code !== 'ECONNRESET') throw error;
    const probe = await sendMultipart(url, token, file, filename, variables, true).then(
      (r) => `HTTP ${r.status}: ${r.text.slice(0, 300)}`,
      (e: Error) => `no answer either (${e.message})`,
    );
    return { status: 0, text: `${code}: the connection was closed before the body was sent; asked again without the file: ${probe}` };
  }
}

/** The request itself; `headersOnly`: send the parts before the file and wait (at most 10 s) for an answer. */
function sendMultipart(
  url: string,
  token: string,
  file: BenchFile,
  filename: string,
  variables: Record<string, unknown>,
  headersOnly: boolean,
): Promise<{ status: number; text: string }> {
  const boundary = process.env.BENCH_BOUNDARY ?? `------------------------${randomBytes(8).toString('hex')}`;
  const operations = JSON.stringify({ query: UPLOAD_QUERY, variables: { ...variables, file: null } });
  const head = Buffer.from(
    `--${boundary}\r\nContent-Disposition: form-data; name="operations"\r\n\r\n${operations}\r\n` +
      `--${boundary}\r\nContent-Disposition: form-data; name="map"\r\n\r\n${JSON.stringify({ 0: ['variables.file'] })}\r\n` +
      `--${boundary}\r\nContent-Disposition: form-data; name="0"; filename="${filename}"\r\nContent-Type: application/octet-stream\r\n\r\n`,
  );
  const tail = Buffer.from(`\r\n--${boundary}--\r\n`);
  return new Promise((resolvePost, rejectPost) => {
    let answered = false;
    const req = http.request(url, {
      method: 'POST',
      agent: false,
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
      res.on('end', () => {
        resolvePost({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') });
        req.destroy(); // (a refusal: the rest of the body is not wanted)
      });
      res.on('error', rejectPost);
    });
    req.on('error', (error) => {
      if (!answered) rejectPost(error);
    });
    if (headersOnly) {
      req.write(head);
      setTimeout(() => {
        if (!answered) req.destroy(new Error('no answer within 10 s'));
      }, 10_000).unref();
      return;
    }
    void (async () => {
      const source = createReadStream(file.path, { highWaterMark: MiB });
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
      if (!answered) rejectPost(error);
    });
  });
}

async function main(): Promise<number> {
  log(
    `lora-vault upload benchmark: ${FILE_BYTES / MiB} MiB × ${RUNS} runs per method (API, SDK ${SDK_MODE}), then ${LARGE_BYTES / MiB} MiB through the API; ` +
      `blocks of ${BLOCK_BYTES / MiB} MiB, ${CONCURRENCY} in flight`,
  );

  // Disk: the files, and every byte Azurite stores (it frees deleted blobs' space only in its
  // 10-minute garbage collection, so nothing is reclaimed during the run), plus a margin.
  const fileBytes = WARMUP_BYTES + FILE_BYTES + LARGE_BYTES;
  const storedBytes = 3 * WARMUP_BYTES + 2 * RUNS * FILE_BYTES + LARGE_BYTES;
  const needBytes = fileBytes + storedBytes + 512 * MiB;
  const fsStats = await statfs(tmpdir());
  const freeBytes = fsStats.bavail * fsStats.bsize;
  log(`disk: ${(freeBytes / 1e9).toFixed(1)} GB free in ${tmpdir()}, this run needs ${(needBytes / 1e9).toFixed(1)} GB`);
  if (freeBytes < needBytes) {
    console.error(
      `not enough free disk space in ${tmpdir()}: ${(freeBytes / 1e9).toFixed(1)} GB free, ${(needBytes / 1e9).toFixed(1)} GB needed ` +
        `(files ${(fileBytes / 1e9).toFixed(1)} GB + Azurite data ${(storedBytes / 1e9).toFixed(1)} GB + margin); set TMPDIR to a roomier disk`,
    );
    return 1;
  }

  const dir = await benchTempDir();
  log(`temp dir ${dir}`);
  const [files] = await timed(
    `wrote ${mb(fileBytes)} MB of safetensors (warm-up, ${FILE_BYTES / MiB} MiB, ${LARGE_BYTES / MiB} MiB)`,
    async () => ({
      warm: await writeSafetensorsFile(join(dir, 'warmup.safetensors'), WARMUP_BYTES),
      main: await writeSafetensorsFile(join(dir, 'main.safetensors'), FILE_BYTES),
      large: await writeSafetensorsFile(join(dir, 'large.safetensors'), LARGE_BYTES),
    }),
  );
  log(
    `${files.main.size.toLocaleString('en')} bytes sha256 ${files.main.sha256}; ${files.large.size.toLocaleString('en')} bytes sha256 ${files.large.sha256}`,
  );

  const [{ pgHandle, azurite }] = await timed('started embedded PostgreSQL + Azurite', () => startServices());
  const azuritePid = findAzuritePid();

  const env = serverChildEnv(dir, { pgHandle, azurite }, JWT_SECRET, { QUOTA_DEFAULT_MAX_BYTES: String(64 * GiB) });
  const config = runtimeConfig(env);
  if (config.maxUploadBytes !== MAX_UPLOAD_BYTES)
    throw new Error(`MAX_UPLOAD_BYTES is ${config.maxUploadBytes}, expected the default ${MAX_UPLOAD_BYTES}`);
  const store = new BlobStore({
    connectionString: azurite.connectionString,
    loraContainer: config.storage.loraContainer,
    sharedContainer: config.storage.sharedContainer,
    sharedPrefix: config.storage.sharedPrefix,
  });
  // Registered after Azurite and before the server: runs after the server stopped, before Azurite does.
  onCleanup('blob deletion', () => deleteAllBlobs(store));

  const nodeArgs = await serverNodeArgs();
  const [server] = await timed('upload server started (child process)', () => startServerChild(env, { nodeArgs }));
  log(`server ${server.url} pid ${server.pid}${CPU_PROF_DIR ? ` (CPU profile → ${CPU_PROF_DIR})` : ''}; Azurite pid ${azuritePid ?? '?'}`);
  const graphqlUrl = `${server.url}/graphql`;
  const userId = randomUUID();
  const token = await signToken(JWT_SECRET, { role: 'user', sub: userId });

  const db = new pg.Pool({ connectionString: config.databaseUrl, max: 2 });
  onCleanup('bench database pool', () => db.end());
  let uploads = 0;
  const viaApi = async (file: BenchFile): Promise<void> => {
    const name = `bench-${++uploads}`;
    const res = await postUpload(graphqlUrl, token, file, `${name}.safetensors`, { name, sizeBytes: file.size });
    let body: any;
    try {
      body = JSON.parse(res.text);
    } catch {
      body = undefined;
    }
    const result = body?.data?.uploadLora;
    if (res.status !== 200 || result?.__typename !== 'UploadLoraSuccess') {
      const hint = /REQUEST_ENTITY_TOO_LARGE/.test(res.text)
        ? "\n  (Yoga's maxRequestBodySize refused it from the content-length, before the upload pipeline: its default is 25 MB unless server/http/yoga.ts sets it)"
        : '';
      throw new Error(`upload of ${file.size} bytes failed (HTTP ${res.status}): ${res.text.slice(0, 500)}${hint}`);
    }
    const lora = result.lora as { id: string; sizeBytes: number; sha256: string; status: string };
    if (lora.sizeBytes !== file.size || lora.sha256 !== file.sha256 || lora.status !== 'READY')
      throw new Error(`upload stored the wrong thing: ${JSON.stringify(lora)}, expected ${file.size} bytes sha256 ${file.sha256}`);
    let blobBytes: number | undefined;
    const { rows } = await db.query<{ blob_path: string }>('SELECT blob_path FROM lora WHERE file_id = $1', [lora.id]);
    for await (const b of store.list(rows[0]?.blob_path ?? '-')) {
      blobBytes = b.sizeBytes;
      lastApiBlob = b.name;
    }
    if (blobBytes !== file.size) throw new Error(`blob of LoRA ${lora.id} holds ${blobBytes ?? 'nothing'}, expected ${file.size} bytes`);
  };
  let lastApiBlob: string | undefined;
  /** Downloads a blob and compares its sha256 with the file's: the bytes stored, not only those hashed. */
  const verifyStoredBytes = async (name: string | undefined, file: BenchFile): Promise<string> => {
    if (!name) throw new Error('no blob to verify');
    const download = await store.clientsForTests().loras.getBlobClient(name).download();
    const hash = createHash('sha256');
    for await (const chunk of download.readableStreamBody ?? []) hash.update(chunk as Buffer);
    const sha256 = hash.digest('hex');
    if (sha256 !== file.sha256) throw new Error(`blob ${name} holds other bytes than the file: sha256 ${sha256}, expected ${file.sha256}`);
    return `the stored blob's bytes (downloaded, ${mb(file.size)} MB) have the file's sha256`;
  };
  const viaSdk = async (file: BenchFile): Promise<void> => {
    const blob = store.clientsForTests().loras.getBlockBlobClient(`bench-sdk/${++uploads}.safetensors`);
    const options = { blobHTTPHeaders: { blobContentType: 'application/octet-stream' }, conditions: { ifNoneMatch: '*' } };
    if (SDK_MODE === 'file') {
      await blob.uploadFile(file.path, { ...options, blockSize: BLOCK_BYTES, concurrency: CONCURRENCY, maxSingleShotSize: 0 });
    } else {
      // uploadStream keeps ceil(3/4 × maxConcurrency) blocks in flight (and maxConcurrency buffers):
      // the smallest maxConcurrency giving the server's number in flight.
      const maxBuffers = Math.ceil((CONCURRENCY * 4) / 3);
      await blob.uploadStream(createReadStream(file.path, { highWaterMark: MiB }), BLOCK_BYTES, maxBuffers, options);
    }
    const props = await blob.getProperties();
    if (props.contentLength !== file.size) throw new Error(`SDK blob holds ${props.contentLength} bytes, expected ${file.size}`);
  };

  // Warm-up: JIT, connection pools, the first blob and DB writes.
  await timed('warm-up (2 small uploads through the API, 1 with the SDK)', async () => {
    await viaApi(files.warm);
    await viaApi(files.warm);
    await viaSdk(files.warm);
  });
  await sleep(1000);
  const baselineSamples: number[] = [];
  for (let i = 0; i < 10; i++) {
    baselineSamples.push(procStatus(server.pid, 'VmRSS'));
    await sleep(SAMPLE_MS);
  }
  const baseline = median(baselineSamples);
  log(`server RSS after warm-up: ${mb(baseline)} MB`);

  // Timed runs. A failed upload is recorded (and fails the benchmark) without stopping the others.
  const timeline: Measurement[] = [];
  const run = async (label: string, bytes: number, fn: () => Promise<void>): Promise<Measurement> => {
    if (isCleaningUp()) throw new Error(`${label} not started: stopping`);
    const m = await measure(label, bytes, server.pid, azuritePid, fn);
    timeline.push(m);
    return m;
  };
  let storedCheck = 'not checked (no successful API upload)';
  const loadBefore = loadavg()[0] ?? 0;
  for (let round = 0; round < RUNS; round++) {
    const order = round % 2 === 0 ? (['api', 'sdk'] as const) : (['sdk', 'api'] as const);
    const resumableOrder = round % 2 === 0 ? (['res', 'file'] as const) : (['file', 'res'] as const);
    for (const method of resumableOrder) {
      const label = `run ${round + 1} ${method === 'res' ? 'RES' : 'SDKFILE'} ${FILE_BYTES / MiB} MiB`;
      if (method === 'res') await run(label, FILE_BYTES, () => viaResumable(graphqlUrl, token, files.main));
      else await run(label, FILE_BYTES, () => viaSdkUploadFile(store, `bench-sdk/${++uploads}.safetensors`, files.main, BLOCK_BYTES));
    }
    for (const method of order) {
      const label = `run ${round + 1} ${method === 'api' ? 'API' : 'SDK'} ${FILE_BYTES / MiB} MiB`;
      if (method === 'sdk') {
        await run(label, FILE_BYTES, () => viaSdk(files.main));
        continue;
      }
      const m = await run(label, FILE_BYTES, () => viaApi(files.main));
      // once, outside the timings: the blob holds exactly the file (the server hashed the stream, not the blob)
      if (!m.error && !storedCheck.startsWith('ok')) {
        [storedCheck] = await timed('verified the stored blob', () =>
          verifyStoredBytes(lastApiBlob, files.main).then(
            (what) => `ok — ${what}`,
            (error: Error) => `FAILED — ${error.message}`,
          ),
        );
      }
    }
  }
  const large = await run(`API ${LARGE_BYTES / MiB} MiB`, LARGE_BYTES, () => viaApi(files.large));
  let resent = Number.NaN;
  const cutRun = await run(`RES cut+resume ${FILE_BYTES / MiB} MiB`, FILE_BYTES, async () => {
    resent = await cutAndResume(graphqlUrl, token, files.main);
  });
  const loadAfter = loadavg()[0] ?? 0;

  // -------------------------------------------------------------------------------------------
  // Summary
  const done = (method: 'API' | 'SDK') => timeline.filter((m) => m.label.includes(` ${method} ${FILE_BYTES / MiB} MiB`) && !m.error);
  const apiMbps = done('API').map((m) => m.mbps);
  const sdkMbps = done('SDK').map((m) => m.mbps);
  const complete = apiMbps.length === RUNS && sdkMbps.length === RUNS;
  const ratio = median(apiMbps) / median(sdkMbps);
  const bestRatio = Math.max(...apiMbps) / Math.max(...sdkMbps);
  const apiRuns = timeline.filter((m) => m.label.includes('API') && !m.error);
  const growth = Math.max(...apiRuns.map((m) => m.rssPeak)) - baseline; // -Infinity without one

  const resDone = (tag: 'RES' | 'SDKFILE') => timeline.filter((m) => m.label.includes(` ${tag} ${FILE_BYTES / MiB} MiB`) && !m.error);
  const resMbps = resDone('RES').map((m) => m.mbps);
  const fileMbps = resDone('SDKFILE').map((m) => m.mbps);
  const resComplete = resMbps.length === RUNS && fileMbps.length === RUNS;
  const resRatio = median(resMbps) / median(fileMbps);
  const resGrowth = Math.max(...resDone('RES').map((m) => m.rssPeak)) - baseline;
  const resOk =
    resComplete &&
    resRatio >= RESUMABLE_MIN_RATIO &&
    resGrowth < RESUMABLE_MAX_RSS_GROWTH &&
    !cutRun.error &&
    resent <= RESUMABLE_MAX_RESENT;
  const ratioOk = complete && ratio >= MIN_RATIO;
  const rssOk = apiRuns.length > 0 && growth < MAX_RSS_GROWTH;
  const largeOk = !large.error;
  const ok = ratioOk && rssOk && largeOk && storedCheck.startsWith('ok') && resOk;

  const line = '─'.repeat(118);
  const fmt = (v: number[]) =>
    v.length
      ? `best ${Math.max(...v).toFixed(1)}, median ${median(v).toFixed(1)} MB/s (${v.map((x) => x.toFixed(1)).join(', ')})`
      : 'no successful run';
  const failures = timeline.filter((m) => m.error);
  const out: string[] = [];
  out.push('', line, `SUMMARY — uploading a ${FILE_BYTES / MiB} MiB safetensors LoRA to Azurite (MB = 10^6 bytes)`, line);
  out.push(
    `API = multipart POST /graphql uploadLora (node:http, streamed from disk, content-length) → Yoga → graphql-upload-minimal → sniff/validate, ` +
      `sha256 ×2 → BlockStager (${BLOCK_BYTES / MiB} MiB blocks, ${CONCURRENCY} in flight) → commit + quota transaction; checked: UploadLoraSuccess, size, sha256, blob size.`,
  );
  out.push(
    `SDK = BlockBlobClient.${SDK_MODE === 'file' ? `uploadFile (blockSize ${BLOCK_BYTES / MiB} MiB, concurrency ${CONCURRENCY})` : `uploadStream (${BLOCK_BYTES / MiB} MiB buffers, ${CONCURRENCY} blocks in flight)`} from the same file to the same Azurite.`,
  );
  out.push(
    `${RUNS} runs each, alternating (API first in odd rounds, SDK first in even ones). Machine: ${cpus().length} CPUs shared by client, server, ` +
      `Azurite and PostgreSQL; 1-min load ${loadBefore.toFixed(2)} before the timed runs, ${loadAfter.toFixed(2)} after.`,
  );
  out.push(line);
  out.push(`API ${FILE_BYTES / MiB} MiB:  ${fmt(apiMbps)}`);
  out.push(`SDK ${FILE_BYTES / MiB} MiB:  ${fmt(sdkMbps)}`);
  out.push(
    `ratio API/SDK: ${complete ? `${ratio.toFixed(2)} (medians; best/best ${bestRatio.toFixed(2)})` : 'n/a (failed runs)'} — target ≥ ${MIN_RATIO}: ${ratioOk ? 'yes' : 'NO'}`,
  );
  out.push(
    apiRuns.length
      ? `server RSS: ${mb(baseline)} MB after warm-up; peak ${mb(baseline + growth)} MB during the successful API uploads ` +
          `(${apiRuns.reduce((n, m) => n + m.samples, 0)} samples + VmHWM) → growth ${mb(growth)} MB` +
          `${largeOk ? ` (${mb(large.rssPeak - baseline)} MB during the ${LARGE_BYTES / MiB} MiB one)` : ''} — target < ${MAX_RSS_GROWTH / MB} MB: ${rssOk ? 'yes' : 'NO'}`
      : `server RSS: ${mb(baseline)} MB after warm-up; no successful API upload to measure — target < ${MAX_RSS_GROWTH / MB} MB: NO`,
  );
  out.push(
    `${LARGE_BYTES / MiB} MiB (${LARGE_BYTES.toLocaleString('en')} bytes, MAX_UPLOAD_BYTES ${MAX_UPLOAD_BYTES.toLocaleString('en')}) through the API: ` +
      (largeOk
        ? `ok — UploadLoraSuccess, size and sha256 right, ${large.mbps.toFixed(1)} MB/s in ${(large.ms / 1000).toFixed(1)} s`
        : `FAILED — ${large.error}`),
  );
  out.push(`stored bytes of the first ${FILE_BYTES / MiB} MiB API upload: ${storedCheck}`);
  out.push(
    line,
    `RES = SDK uploadLoraResumable (blocks of ${BLOCK_BYTES / MiB} MiB straight to Azurite, 4 in flight, then completeLoraUpload: commit + the server's validation read); ` +
      `SDKFILE = BlockBlobClient.uploadFile (same block size, concurrency 4).`,
    `RES ${FILE_BYTES / MiB} MiB:      ${fmt(resMbps)}`,
    `SDKFILE ${FILE_BYTES / MiB} MiB:  ${fmt(fileMbps)}`,
    `ratio RES/SDKFILE: ${resComplete ? resRatio.toFixed(2) : 'n/a'} — target ≥ ${RESUMABLE_MIN_RATIO}; server RSS growth during RES ${Number.isFinite(resGrowth) ? mb(resGrowth) : 'n/a'} MB — target < ${RESUMABLE_MAX_RSS_GROWTH / MB} MB`,
    `cut at 50 % and resumed: ${cutRun.error ? `FAILED — ${cutRun.error}` : `${resent.toFixed(3)} × the file's bytes sent in total`} — target ≤ ${RESUMABLE_MAX_RESENT}: ${resOk ? 'all resumable targets met' : 'a resumable target MISSED'}`,
  );
  out.push(
    line,
    `per upload, in order (CPU s = CPU seconds used during it; others = PostgreSQL, kernel, other processes; RSS ± the warm-up baseline; ` +
      `sampled every ${SAMPLE_MS} ms + VmHWM):`,
  );
  for (const m of timeline)
    out.push(`  ${m.label.padEnd(20)} ${m.error ? `FAILED after ${(m.ms / 1000).toFixed(2)} s` : describe(m, baseline)}`);
  if (failures.length) out.push(line, 'failures:', ...failures.map((m) => `  ${m.label}: ${m.error}`));
  out.push(
    line,
    `RESULT: ${ok ? 'PASS' : 'FAIL'} — ratio ${complete ? ratio.toFixed(2) : 'n/a'}, RSS growth ${apiRuns.length ? `${mb(growth)} MB` : 'n/a'}, ` +
      `${LARGE_BYTES / MiB} MiB upload ${largeOk ? 'ok' : 'FAILED'}${failures.length ? `, ${failures.length} failed upload(s)` : ''}`,
    line,
  );
  console.log(out.join('\n'));
  return ok ? 0 : 1;
}

/** Deletes every blob (committed or not) in both containers. */

await runBench(main);
