/**
 * `npm run bench:agent` — the cache agent (cache-agent/app.ts's buildAgent, in this process, talking to
 * the real API in a child process through the SDK) against baselines measured in the same run.
 *
 * 1. Cache hit: `agent.ensure(ref)` of a cached user LoRA vs a bare `fs.promises.stat` of the same
 *    file, HIT_CALLS (2,000) calls each after a warm-up, in alternating blocks of 500 (usage reports
 *    drained before each block). Every hit queues its usage with the real reporter, which sends one
 *    batched recordLoraUsage per job (grant) from this event loop; the server's work runs in its
 *    own process. Target: ensure p99 < 1 ms. Informational: `recordUsage: false`, for the report's cost.
 * 2. Cold download of a BENCH_AGENT_FILE_MB (1024) MiB LoRA: `ensure` in a fresh ComfyUI folder (a
 *    new agent each time, download settings from the config's defaults) vs a plain `fetch` of the SAS
 *    URL the SDK's `getDownload` gives a machine, streamed to a file on the same disk. Both include
 *    the getDownload call and end with the file fsynced (the agent renames only an fsynced file).
 *    Informational second baseline: the same GET over node:http (Node streams; Node 20's fetch body
 *    is a web stream, which costs CPU). One warm-up each, then BENCH_AGENT_RUNS (3) rounds, each
 *    starting with a different one. Target: agent MB/s ÷ fetch MB/s (medians) ≥ 0.9.
 * 3. Three 300 MiB LoRAs referenced by one API-format workflow: `agent.prefetch(workflow, grant)`
 *    (PREFETCH_CONCURRENCY at once) vs three `ensure` one after another, fresh folders each, two
 *    rounds alternating. Informational: no target.
 * 4. Eviction planning over 100,000 `models` rows of a real model_cache.db (user LoRAs, seeded random
 *    sizes and Python-isoformat last_used): `planSpaceEviction` on the parsed rows (median of 20) vs
 *    a filter + full sort of the same rows (same victims checked), for a download into a full cache
 *    and for a cap at half the bytes — target < 50 ms; informational: `store.cacheRows()` + plan vs
 *    the bare SQLite read.
 * 5. Telemetry on (issue 15): after 1–4 (run with the SDK off), the SDK is started as with an OTLP
 *    collector configured (every span sampled and exported to a sink in a child process) and 1.'s
 *    cache hits run again. Target: ensure p99 < 1 ms with telemetry on.
 * LoRAs are uploaded through the API (SDK uploadLora, valid safetensors from bench/files.ts); the
 * grant comes from a service token (SDK createJobGrant); the agent uses a machine token.
 *
 * Exit 0 when every target holds; 1 otherwise. Temp dir, blobs and processes are removed or
 * stopped on every exit path (bench/harness.ts). MB = 10^6 bytes; file sizes in MiB.
 * 5. The cold download and the prefetch again over a throttling TCP proxy in front of Azurite (~40 MB/s per
 *    connection, 40 ms RTT): bench/agent-link.ts, targets agent ÷ fetch ≥ 2.5 and prefetch ÷ sequential ≤ 0.5.
 * Knobs: BENCH_AGENT_FILE_MB=1024  BENCH_AGENT_RUNS=3  BENCH_AGENT_HIT_CALLS=2000  BENCH_KEEP=1 (and BENCH_LINK_* there)
 */
import { randomUUID } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, open, rm, stat, statfs } from 'node:fs/promises';
import http, { type IncomingMessage } from 'node:http';
import { cpus, freemem, loadavg, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import { type Agent, buildAgent } from '../cache-agent/app.ts';
import { loadAgentConfig } from '../cache-agent/config.ts';
import { type CacheRow, planSpaceEviction, type SpacePlanInput } from '../cache-agent/eviction.ts';
import { openStore } from '../cache-agent/store.ts';
import { startAgentTelemetry } from '../cache-agent/telemetry-sdk.ts';
import { toPythonIso } from '../cache-agent/timefmt.ts';
import { createLoraClient, type LoraClient } from '../sdk/index.ts';
import { signToken } from '../server/auth/tokens.ts';
import { BlobStore } from '../server/storage/blob-store.ts';
import { type AgentEnv, benchRealisticLink, LINK_ENABLED } from './agent-link.ts';
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
import { switchTelemetryOn } from './telemetry-overhead.ts';

// ---------------------------------------------------------------------------------------------
// Parameters

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const MB = 1e6;
const FILE_BYTES = Number(process.env.BENCH_AGENT_FILE_MB ?? '1024') * MiB;
const RUNS = Number(process.env.BENCH_AGENT_RUNS ?? '3');
const HIT_CALLS = Number(process.env.BENCH_AGENT_HIT_CALLS ?? '2000');
const HIT_BLOCK = 500;
const HIT_WARMUP = 300;
const HIT_BYTES = 16 * MiB + 4096;
const TRIO_BYTES = 300 * MiB; // the three differ by 8 bytes, so their headers and sha256 differ
const EVICTION_ROWS = 100_000;
const PLAN_SAMPLES = 20;
const MAX_HIT_P99_MS = 1;
const MIN_DOWNLOAD_RATIO = 0.9;
const MAX_PLAN_MS = 50;
const JWT_SECRET = 'bench-secret-bench-secret-bench-secret-0123456789';
const MACHINE_ID = 'bench-agent';

if (!Number.isInteger(FILE_BYTES) || FILE_BYTES < 64 * MiB || FILE_BYTES > 2 * GiB) {
  console.error('BENCH_AGENT_FILE_MB must be an integer number of MiB between 64 and 2048');
  process.exit(2);
}
if (!Number.isInteger(RUNS) || RUNS < 1 || !Number.isInteger(HIT_CALLS) || HIT_CALLS < HIT_BLOCK) {
  console.error(`BENCH_AGENT_RUNS must be an integer ≥ 1 and BENCH_AGENT_HIT_CALLS one ≥ ${HIT_BLOCK}`);
  process.exit(2);
}

const mbps = (bytes: number, ms: number) => bytes / MB / (ms / 1000);
const f1 = (v: number) => v.toFixed(1);
const f2 = (v: number) => v.toFixed(2);
const f3 = (v: number) => v.toFixed(3);

/** Nearest-rank percentile (p in 0..100). */
function percentile(samples: number[], p: number): number {
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.max(0, Math.ceil((p / 100) * sorted.length) - 1)] ?? Number.NaN;
}

/** Times `n` calls made one after another; each sample in ms. */
async function timeCalls(n: number, call: () => Promise<unknown>): Promise<number[]> {
  const samples: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await call();
    samples.push(performance.now() - t0);
  }
  return samples;
}

// ---------------------------------------------------------------------------------------------
// The agent: a fresh ComfyUI folder each, logs kept for the report

interface LogLine {
  level: number;
  msg: string;
  [key: string]: unknown;
}
const agentLog: LogLine[] = [];
const logger = pino(
  { level: 'info', base: { machineId: MACHINE_ID } },
  {
    write: (line: string) => {
      agentLog.push(JSON.parse(line) as LogLine);
    },
  },
);

/** The usage reports (recordLoraUsage) the agent fires, counted on the way through to the real client. */
const reports = { sent: 0, failed: 0, inFlight: 0, maxInFlight: 0 };
function countingUsageReports(client: LoraClient): LoraClient {
  return {
    ...client,
    recordUsage: async (variables, options) => {
      reports.sent++;
      reports.maxInFlight = Math.max(reports.maxInFlight, ++reports.inFlight);
      try {
        return await client.recordUsage(variables, options);
      } catch (error) {
        reports.failed++;
        throw error;
      } finally {
        reports.inFlight--;
      }
    },
  };
}

/** Waits until no usage report is in flight; resolves with the time it took (ms). */
async function drainReports(limitMs = 120_000): Promise<number> {
  const t0 = performance.now();
  while (reports.inFlight > 0) {
    if (performance.now() - t0 > limitMs) throw new Error(`${reports.inFlight} usage reports still in flight after ${limitMs / 1000} s`);
    await sleep(5);
  }
  return performance.now() - t0;
}

interface Fixture {
  dir: string;
  graphqlUrl: string;
  machineToken: string;
  grant: string;
}

let agents = 0;
async function freshAgent(
  fx: Fixture,
  label: string,
  client?: LoraClient,
  env: AgentEnv = {},
): Promise<{ agent: Agent; stop: () => Promise<void> }> {
  const comfyDir = join(fx.dir, 'comfy', `${++agents}-${label.replace(/[^a-z0-9]+/gi, '-')}`);
  await mkdir(comfyDir, { recursive: true });
  const config = loadAgentConfig({
    LORA_VAULT_URL: fx.graphqlUrl,
    LORA_VAULT_TOKEN: fx.machineToken,
    MACHINE_ID,
    COMFYUI_DIR: comfyDir,
    AGENT_PORT: '0',
    STATS_INTERVAL_SECONDS: '0',
    LOG_LEVEL: 'info',
    MODEL_CACHE_DB_CREATE: 'true', // no Python nodes here to create model_cache.db
    OTEL_SDK_DISABLED: 'true', // on only for the telemetry section at the end (issue 15)
    ...env,
  });
  const agent = buildAgent(config, { logger, ...(client ? { client } : {}) });
  await agent.start({ listen: false, subscribe: false, schedule: false });
  let stopping: Promise<void> | undefined;
  const stop = () => {
    stopping ??= agent.stop().finally(() => rm(comfyDir, { recursive: true, force: true }));
    return stopping;
  };
  onCleanup(`agent ${label}`, stop);
  return { agent, stop };
}

interface Lora {
  id: string;
  file: BenchFile;
}

// ---------------------------------------------------------------------------------------------
// 1. Cache hit

interface HitResult {
  ensure: number[];
  stat: number[];
  noReport: number[];
  drainMs: number;
  reportsSent: number;
}

async function benchHit(fx: Fixture, lora: Lora): Promise<HitResult> {
  const client = countingUsageReports(createLoraClient({ url: fx.graphqlUrl, token: fx.machineToken, retry: false }));
  onCleanup('hit-path SDK client', () => client.close());
  const { agent, stop } = await freshAgent(fx, 'hit', client);
  const ref = { source: 'user' as const, id: lora.id, grant: fx.grant };
  const t0 = performance.now();
  const first = await agent.ensure(ref);
  log(`first ensure (a miss: ${f1(HIT_BYTES / MB)} MB downloaded): ${f1(performance.now() - t0)} ms`);
  if (first.hit || first.sha256 !== lora.file.sha256)
    throw new Error(`the first ensure should download the LoRA: ${JSON.stringify(first)}`);
  const path = first.path;
  const ensureHit = async () => {
    const r = await agent.ensure(ref);
    if (!r.hit) throw new Error('expected a cache hit');
  };
  await timeCalls(HIT_WARMUP, ensureHit);
  await timeCalls(HIT_WARMUP, () => stat(path));
  await drainReports();

  const result: HitResult = { ensure: [], stat: [], noReport: [], drainMs: 0, reportsSent: 0 };
  const sentBefore = reports.sent;
  for (let round = 0; round * HIT_BLOCK < HIT_CALLS; round++) {
    const n = Math.min(HIT_BLOCK, HIT_CALLS - round * HIT_BLOCK);
    for (const which of round % 2 === 0 ? (['ensure', 'stat'] as const) : (['stat', 'ensure'] as const)) {
      await drainReports(); // no answers from an earlier block land in this one
      if (which === 'ensure') {
        result.ensure.push(...(await timeCalls(n, ensureHit)));
        result.drainMs = Math.max(result.drainMs, await drainReports());
      } else {
        result.stat.push(...(await timeCalls(n, () => stat(path))));
      }
    }
  }
  result.reportsSent = reports.sent - sentBefore;
  result.noReport = await timeCalls(HIT_CALLS, async () => {
    const r = await agent.ensure(ref, { recordUsage: false });
    if (!r.hit) throw new Error('expected a cache hit');
  });
  await stop();
  return result;
}

// ---------------------------------------------------------------------------------------------
// 2. Cold download

interface DownloadRun {
  label: string;
  method: 'agent' | 'fetch' | 'http';
  ms: number;
  mbps: number;
  /** CPU time of this process during the run. */
  cpuMs: number;
  /** fetch, http: the final fsync's share of ms. */
  fsyncMs?: number;
}

async function measureRun(label: string, method: DownloadRun['method'], fn: () => Promise<number | undefined>): Promise<DownloadRun> {
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const fsyncMs = await fn();
  const ms = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  const run: DownloadRun = { label, method, ms, mbps: mbps(FILE_BYTES, ms), cpuMs: (cpu.user + cpu.system) / 1000 };
  if (fsyncMs !== undefined) run.fsyncMs = fsyncMs;
  log(
    `${label}: ${f2(ms / 1000)} s, ${f1(run.mbps)} MB/s, this process's CPU ${f2(run.cpuMs / 1000)} s` +
      (fsyncMs !== undefined ? ` (final fsync ${f2(fsyncMs / 1000)} s)` : ''),
  );
  return run;
}

async function agentDownload(fx: Fixture, lora: Lora, label: string, client?: LoraClient, env?: AgentEnv): Promise<DownloadRun> {
  const { agent, stop } = await freshAgent(fx, label, client, env);
  try {
    return await measureRun(label, 'agent', async () => {
      const r = await agent.ensure({ source: 'user', id: lora.id, grant: fx.grant });
      if (r.hit || r.sizeBytes !== lora.file.size || r.sha256 !== lora.file.sha256) throw new Error(`agent download: ${JSON.stringify(r)}`);
      return undefined;
    });
  } finally {
    await stop(); // not timed: flushes the usage report, removes the folder
  }
}

/** The body of a GET of the SAS URL as a Node stream: through `fetch` (web streams), or node:http. */
async function getBody(url: string, method: 'fetch' | 'http'): Promise<Readable> {
  if (method === 'fetch') {
    const res = await fetch(url);
    if (res.status !== 200 || !res.body) throw new Error(`fetch of the SAS URL: HTTP ${res.status}`);
    return Readable.fromWeb(res.body as WebReadableStream<Uint8Array>);
  }
  const res = await new Promise<IncomingMessage>((resolve, reject) => http.get(url, resolve).on('error', reject));
  if (res.statusCode !== 200) {
    res.resume();
    throw new Error(`GET of the SAS URL: HTTP ${res.statusCode}`);
  }
  return res;
}

/** A baseline: getDownload (machine token + grant), one GET of the SAS URL streamed to a file, fsync. */
async function plainDownload(
  fx: Fixture,
  machine: LoraClient,
  lora: Lora,
  label: string,
  method: 'fetch' | 'http',
  rewrite: (url: string) => string = (url) => url,
): Promise<DownloadRun> {
  const target = join(fx.dir, 'plain', `${randomUUID()}.safetensors`);
  await mkdir(join(fx.dir, 'plain'), { recursive: true });
  try {
    return await measureRun(label, method, async () => {
      const { url } = await machine.getDownload({ id: lora.id, grant: fx.grant });
      await pipeline(await getBody(rewrite(url), method), createWriteStream(target, { flags: 'wx' }));
      const t = performance.now();
      const handle = await open(target, 'r');
      try {
        await handle.sync();
      } finally {
        await handle.close();
      }
      const fsyncMs = performance.now() - t;
      const { size } = await stat(target);
      if (size !== lora.file.size) throw new Error(`${method} wrote ${size} bytes, expected ${lora.file.size}`);
      return fsyncMs;
    });
  } finally {
    await rm(target, { force: true });
  }
}

// ---------------------------------------------------------------------------------------------
// 3. Prefetch of a workflow's three LoRAs

function workflowOf(loras: Lora[]): Record<string, unknown> {
  return Object.fromEntries(
    loras.map((l, i) => [
      String(i + 1),
      { class_type: 'EmProps_Lora_Loader', inputs: { lora_source: 'user', lora_identifier: l.id, strength_model: 1, strength_clip: 1 } },
    ]),
  );
}

async function prefetchRun(fx: Fixture, loras: Lora[], label: string, client?: LoraClient, env?: AgentEnv): Promise<number> {
  const { agent, stop } = await freshAgent(fx, label, client, env);
  try {
    const t0 = performance.now();
    const result = await agent.prefetch(workflowOf(loras), fx.grant);
    const ms = performance.now() - t0;
    const bad = result.items.filter((i) => !i.result || i.result.hit);
    if (result.items.length !== loras.length || bad.length || result.problems.length)
      throw new Error(`prefetch: ${JSON.stringify({ items: result.items.length, bad, problems: result.problems })}`);
    log(`${label}: ${f2(ms / 1000)} s, ${f1(mbps(3 * TRIO_BYTES, ms))} MB/s`);
    return ms;
  } finally {
    await stop();
  }
}

async function sequentialRun(fx: Fixture, loras: Lora[], label: string, client?: LoraClient, env?: AgentEnv): Promise<number> {
  const { agent, stop } = await freshAgent(fx, label, client, env);
  try {
    const t0 = performance.now();
    for (const l of loras) {
      const r = await agent.ensure({ source: 'user', id: l.id, grant: fx.grant });
      if (r.hit || r.sha256 !== l.file.sha256) throw new Error(`ensure of ${l.id}: ${JSON.stringify(r)}`);
    }
    const ms = performance.now() - t0;
    log(`${label}: ${f2(ms / 1000)} s, ${f1(mbps(3 * TRIO_BYTES, ms))} MB/s`);
    return ms;
  } finally {
    await stop();
  }
}

// ---------------------------------------------------------------------------------------------
// 4. Eviction planning over 100,000 rows

interface PlanFigures {
  label: string;
  victims: number;
  planMs: number;
  naiveMs: number;
}

/** The obvious planner: filter the candidates, sort them all (LRU, then path), take the prefix. */
function naivePlan(input: SpacePlanInput): CacheRow[] {
  const key = (r: CacheRow) => r.lastUsedMs ?? r.downloadDateMs ?? Number.NEGATIVE_INFINITY;
  const evictable = input.rows.filter((r) => r.modelType === 'user_lora');
  const used = evictable.reduce((n, r) => n + Math.max(0, r.sizeBytes), 0);
  const need = Math.max(0, used + input.neededBytes - input.maxCacheBytes, input.minFreeBytes + input.neededBytes - input.diskFreeBytes);
  const candidates = evictable.filter((r) => !r.protected && !r.ignored && !input.leased.has(r.path));
  candidates.sort((a, b) => key(a) - key(b) || (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  const victims: CacheRow[] = [];
  for (let freed = 0, i = 0; freed < need && i < candidates.length; i++) {
    const r = candidates[i] as CacheRow;
    victims.push(r);
    freed += Math.max(0, r.sizeBytes);
  }
  return victims;
}

function timeSync(samples: number, fn: () => unknown): number {
  for (let i = 0; i < 3; i++) fn(); // warm-up (JIT)
  const times: number[] = [];
  for (let i = 0; i < samples; i++) {
    const t0 = performance.now();
    fn();
    times.push(performance.now() - t0);
  }
  return median(times);
}

async function benchEviction(dir: string) {
  await mkdir(join(dir, 'eviction'), { recursive: true });
  const store = openStore(join(dir, 'eviction', 'model_cache.db'), { create: true });
  onCleanup('eviction model_cache.db', async () => store.close());
  const now = Date.now();
  let x = 0x2545f491;
  const random = () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
  const insert = store.db.prepare(
    'INSERT INTO models (path, model_type, filename, size_bytes, last_used, use_count, download_date, protected, is_ignore) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
  );
  const entry = store.db.prepare(
    "INSERT INTO lora_cache_entries (path, source, lora_id, user_id, size_bytes, owned) VALUES (?, 'user', ?, ?, ?, 1)",
  );
  const leased = new Set<string>();
  let totalBytes = 0;
  const [, buildMs] = await timed(`built model_cache.db with ${EVICTION_ROWS.toLocaleString('en')} user_lora rows`, async () =>
    store.db.transaction(() => {
      for (let i = 0; i < EVICTION_ROWS; i++) {
        const user = `${(i % 1000).toString(16).padStart(8, '0')}-0000-4000-8000-000000000000`;
        const fileName = `${i + 1}_lora-${i}.safetensors`;
        const path = `/opt/ComfyUI/models/lora-vault-users/${user}/${fileName}`;
        const size = Math.floor(10 * MB + random() * 790 * MB);
        const downloaded = now - random() * 60 * 86_400_000;
        const lastUsed = random() < 0.01 ? null : toPythonIso(new Date(downloaded + random() * (now - downloaded)));
        if (i % 997 === 0) leased.add(path);
        totalBytes += size;
        entry.run(path, String(i + 1), user, size);
        insert.run(
          path,
          'user_lora',
          fileName,
          size,
          lastUsed,
          1 + Math.floor(random() * 50),
          toPythonIso(new Date(downloaded)),
          i % 100 === 0 ? 1 : 0,
          i % 200 === 1 ? 1 : 0,
        );
      }
    })(),
  );
  const rows = store.cacheRows();
  if (rows.length !== EVICTION_ROWS) throw new Error(`cacheRows() gave ${rows.length} rows`);
  const base = { rows, neededBytes: 1 * GiB, diskFreeBytes: 500 * GiB, minFreeBytes: 10 * GiB, leased };
  const scenarios: [string, SpacePlanInput][] = [
    ['a 1 GiB download into a full cache', { ...base, maxCacheBytes: totalBytes }],
    ['cap at half the bytes', { ...base, maxCacheBytes: Math.floor(totalBytes / 2) }],
  ];
  const plans: PlanFigures[] = [];
  for (const [label, input] of scenarios) {
    const plan = planSpaceEviction(input);
    const naive = naivePlan(input);
    if (!plan.fits || plan.victims.length !== naive.length || plan.victims.some((v, i) => v.path !== naive[i]?.path))
      throw new Error(`planSpaceEviction (${label}) disagrees with the sort: ${plan.victims.length} vs ${naive.length} victims`);
    plans.push({
      label,
      victims: plan.victims.length,
      planMs: timeSync(PLAN_SAMPLES, () => planSpaceEviction(input)),
      naiveMs: timeSync(PLAN_SAMPLES, () => naivePlan(input)),
    });
  }
  // (b) what a miss pays in the agent: read + parse every row, then plan
  const rawRows = store.db.prepare(
    'SELECT path, model_type, size_bytes, last_used, download_date, protected, is_ignore FROM models WHERE model_type IN (?, ?)',
  );
  const first = scenarios[0]?.[1] as SpacePlanInput;
  const readPlanMs = timeSync(10, () => planSpaceEviction({ ...first, rows: store.cacheRows() }));
  const rawReadMs = timeSync(10, () => rawRows.all('user_lora', 'shared_lora'));
  const parseMs = timeSync(10, () => store.cacheRows());
  store.close();
  return { buildMs, totalBytes, plans, readPlanMs, rawReadMs, parseMs };
}

// ---------------------------------------------------------------------------------------------

async function main(): Promise<number> {
  const load0 = loadavg();
  log(
    `lora-vault cache-agent benchmark: hits, a ${FILE_BYTES / MiB} MiB cold download, a 3 × ${TRIO_BYTES / MiB} MiB prefetch, eviction planning`,
  );
  log(
    `machine: ${cpus().length} × ${cpus()[0]?.model ?? '?'}, load ${load0.map(f2).join(' / ')} (1/5/15 min), ` +
      `${f1(totalmem() / GiB)} GiB RAM (${f1(freemem() / GiB)} free), Node ${process.version}`,
  );
  if ((load0[0] ?? 0) > cpus().length / 2)
    log(`WARNING: the machine is busy (load ${f2(load0[0] ?? 0)} on ${cpus().length} CPUs): timings will be worse than on a quiet machine`);

  // Disk: the files, Azurite's copy of them, one download at a time, and the agent's default
  // min_free_space_gb (10) that a download must leave free.
  const fileBytes = HIT_BYTES + FILE_BYTES + 3 * TRIO_BYTES + 24;
  const needBytes = 2 * fileBytes + FILE_BYTES + 10 * GiB + 512 * MiB;
  const fsStats = await statfs(tmpdir());
  const freeBytes = fsStats.bavail * fsStats.bsize;
  log(
    `disk: ${f1(freeBytes / 1e9)} GB free in ${tmpdir()}, this run needs ${f1(needBytes / 1e9)} GB (incl. the agent's 10 GiB min free space)`,
  );
  if (freeBytes < needBytes) {
    console.error(`not enough free disk space in ${tmpdir()}; set TMPDIR to a roomier disk`);
    return 1;
  }

  const dir = await benchTempDir();
  log(`temp dir ${dir}`);
  const [files] = await timed(`wrote ${f1(fileBytes / MB)} MB of safetensors`, async () => ({
    hit: await writeSafetensorsFile(join(dir, 'hit.safetensors'), HIT_BYTES),
    big: await writeSafetensorsFile(join(dir, 'big.safetensors'), FILE_BYTES),
    trio: [
      await writeSafetensorsFile(join(dir, 'trio-1.safetensors'), TRIO_BYTES),
      await writeSafetensorsFile(join(dir, 'trio-2.safetensors'), TRIO_BYTES + 8),
      await writeSafetensorsFile(join(dir, 'trio-3.safetensors'), TRIO_BYTES + 16),
    ],
  }));

  const [{ pgHandle, azurite }] = await timed('started embedded PostgreSQL + Azurite', () => startServices());
  const env = serverChildEnv(dir, { pgHandle, azurite }, JWT_SECRET, { QUOTA_DEFAULT_MAX_BYTES: String(16 * GiB) });
  const config = runtimeConfig(env);
  const blobs = new BlobStore({
    connectionString: azurite.connectionString,
    loraContainer: config.storage.loraContainer,
    sharedContainer: config.storage.sharedContainer,
    sharedPrefix: config.storage.sharedPrefix,
  });
  onCleanup('blob deletion', () => deleteAllBlobs(blobs)); // after the server stopped, before Azurite does
  const [server] = await timed('API server started (child process)', () => startServerChild(env));
  const graphqlUrl = `${server.url}/graphql`;
  log(`server ${server.url} pid ${server.pid}`);

  const userId = randomUUID();
  const user = createLoraClient({ url: graphqlUrl, token: await signToken(JWT_SECRET, { role: 'user', sub: userId }), retry: false });
  const service = createLoraClient({ url: graphqlUrl, token: await signToken(JWT_SECRET, { role: 'service', sub: 'bench-dispatcher' }) });
  const machineToken = await signToken(JWT_SECRET, { role: 'machine', sub: MACHINE_ID, machineId: MACHINE_ID });
  const machine = createLoraClient({ url: graphqlUrl, token: machineToken });
  for (const [what, c] of [
    ['user', user],
    ['service', service],
    ['machine', machine],
  ] as const)
    onCleanup(`${what} SDK client`, () => c.close());

  const upload = async (file: BenchFile, name: string): Promise<Lora> => {
    const { lora } = await user.uploadLora({ file: { path: file.path, fileName: `${name}.safetensors` }, name, tags: ['bench'] });
    if (lora.sizeBytes !== file.size || lora.sha256 !== file.sha256 || lora.status !== 'READY')
      throw new Error(`upload of ${name} stored the wrong thing: ${JSON.stringify(lora)}`);
    return { id: lora.id, file };
  };
  const [loras] = await timed('uploaded the LoRAs through the API (SDK uploadLora)', async () => ({
    hit: await upload(files.hit, 'hit'),
    big: await upload(files.big, 'big'),
    trio: [
      await upload(files.trio[0] as BenchFile, 'trio-1'),
      await upload(files.trio[1] as BenchFile, 'trio-2'),
      await upload(files.trio[2] as BenchFile, 'trio-3'),
    ],
  }));
  const { token: grant } = await service.createJobGrant({ userId, jobId: `bench-${randomUUID()}`, ttlSeconds: 3600 });
  const fx: Fixture = { dir, graphqlUrl, machineToken, grant };

  // 1. hits
  log(`1. cache hits: ${HIT_CALLS} ensure vs ${HIT_CALLS} stat (after ${HIT_WARMUP} of each), blocks of ${HIT_BLOCK}`);
  const hit = await benchHit(fx, loras.hit);

  // 2. cold downloads
  log(`2. cold download of ${FILE_BYTES / MiB} MiB: agent ensure vs fetch (and node:http), one warm-up each, ${RUNS} rounds`);
  const download = (method: DownloadRun['method'], label: string) =>
    method === 'agent' ? agentDownload(fx, loras.big, label) : plainDownload(fx, machine, loras.big, label, method);
  const methods = ['agent', 'fetch', 'http'] as const;
  for (const method of methods) await download(method, `warm-up ${method}`);
  const downloads: DownloadRun[] = [];
  for (let round = 0; round < RUNS; round++) {
    // a different one first each round: agent, fetch, http | fetch, http, agent | http, agent, fetch
    for (let i = 0; i < methods.length; i++) {
      const method = methods[(round + i) % methods.length] as DownloadRun['method'];
      downloads.push(await download(method, `run ${round + 1} ${method}`));
    }
  }

  // 3. prefetch
  log(`3. a workflow of 3 × ${TRIO_BYTES / MiB} MiB LoRAs: prefetch vs 3 sequential ensure, 2 rounds`);
  const prefetchMs: number[] = [];
  const sequentialMs: number[] = [];
  prefetchMs.push(await prefetchRun(fx, loras.trio, 'round 1 prefetch'));
  sequentialMs.push(await sequentialRun(fx, loras.trio, 'round 1 sequential'));
  sequentialMs.push(await sequentialRun(fx, loras.trio, 'round 2 sequential'));
  prefetchMs.push(await prefetchRun(fx, loras.trio, 'round 2 prefetch'));

  // 4. eviction planning
  log(`4. eviction planning over ${EVICTION_ROWS.toLocaleString('en')} rows`);
  const ev = await benchEviction(dir);

  // 5. the same downloads over a realistic link (bench/agent-link.ts)
  const link = LINK_ENABLED ? await benchLink(fx, machine, loras) : null;

  // ===== 6. Telemetry on (issue 15; bench/telemetry-overhead.ts): the cache hits again, SDK on =====
  log(`6. cache hits with telemetry on (every span exported over OTLP to a local sink): ${HIT_CALLS} ensure vs ${HIT_CALLS} stat again`);
  const sink = await switchTelemetryOn(() =>
    startAgentTelemetry({
      machineId: MACHINE_ID,
      telemetry: { serviceName: 'lora-cache-bench', disabled: false, metricsEnabled: true, otlp: { traces: true, metrics: true } },
    }),
  );
  const hitOn = await benchHit(fx, loras.hit);
  await new Promise((r) => setTimeout(r, 6000)); // the batch span processor's delay (5 s)
  const exported = await sink.stats();
  // ===== end of section 6 =====
  const load1 = loadavg();

  // -------------------------------------------------------------------------------------------
  // Summary
  const ensureP50 = percentile(hit.ensure, 50);
  const ensureP99 = percentile(hit.ensure, 99);
  const statP50 = percentile(hit.stat, 50);
  const statP99 = percentile(hit.stat, 99);
  const hitOk = ensureP99 < MAX_HIT_P99_MS;
  const agentMbps = downloads.filter((d) => d.method === 'agent').map((d) => d.mbps);
  const fetchRuns = downloads.filter((d) => d.method === 'fetch');
  const fetchMbps = fetchRuns.map((d) => d.mbps);
  const httpMbps = downloads.filter((d) => d.method === 'http').map((d) => d.mbps);
  const ratio = median(agentMbps) / median(fetchMbps);
  const downloadOk = ratio >= MIN_DOWNLOAD_RATIO;
  const planOk = ev.plans.every((p) => p.planMs < MAX_PLAN_MS);
  const onP99 = percentile(hitOn.ensure, 99);
  const telemetryOk = onP99 < MAX_HIT_P99_MS && exported.requests > 0;
  const ok = hitOk && downloadOk && planOk && (link?.ok ?? true) && telemetryOk;
  const pf = median(prefetchMs);
  const sq = median(sequentialMs);
  const verdict = (pass: boolean) => (pass ? 'PASS' : 'FAIL');
  const warnings = agentLog.filter((l) => l.level >= 40);

  const line = '─'.repeat(120);
  const out: string[] = ['', line, 'SUMMARY — the cache agent (in this process) against the real API and Azurite (MB = 10^6 bytes)', line];
  out.push(
    `machine: ${cpus().length} CPUs shared by this process (agent + baselines), the API server, Azurite and PostgreSQL; ` +
      `1-min load ${f2(load0[0] ?? 0)} at start, ${f2(load1[0] ?? 0)} at end`,
  );
  out.push(line);
  out.push(
    `1. cache-hit ensure (${hit.ensure.length} calls, usage queued on each — the reporter sends one per job, batched): p50 ${f3(ensureP50)} ms, p99 ${f3(ensureP99)} ms │ ` +
      `baseline fs.promises.stat (${hit.stat.length}): p50 ${f3(statP50)} ms, p99 ${f3(statP99)} ms │ ratio p50 ${f1(ensureP50 / statP50)}×, ` +
      `p99 ${f1(ensureP99 / statP99)}× │ target ensure p99 < ${MAX_HIT_P99_MS} ms: ${verdict(hitOk)}`,
  );
  out.push(
    `   informational: ensure with recordUsage: false (${hit.noReport.length}): p50 ${f3(percentile(hit.noReport, 50))} ms, ` +
      `p99 ${f3(percentile(hit.noReport, 99))} ms; usage reports: ${hit.reportsSent} in the timed blocks, up to ${reports.maxInFlight} in flight at once, ` +
      `the slowest block's backlog answered ${f2(hit.drainMs / 1000)} s after its last call, ${reports.failed} failed`,
  );
  out.push(
    `2. cold download ${FILE_BYTES / MiB} MiB: agent ensure median ${f1(median(agentMbps))} MB/s (${agentMbps.map(f1).join(', ')}) │ ` +
      `baseline fetch → file → fsync median ${f1(median(fetchMbps))} MB/s (${fetchMbps.map(f1).join(', ')}) │ ratio ${f2(ratio)} │ ` +
      `target ≥ ${MIN_DOWNLOAD_RATIO}: ${verdict(downloadOk)}`,
  );
  out.push(
    `   (all include getDownload and end fsynced; the fetch's final fsync took median ${f2(median(fetchRuns.map((d) => d.fsyncMs ?? 0)) / 1000)} s). ` +
      `Informational, a second baseline: node:http GET → file → fsync median ${f1(median(httpMbps))} MB/s (${httpMbps.map(f1).join(', ')}), ` +
      `agent ÷ http ${f2(median(agentMbps) / median(httpMbps))}`,
  );
  for (const d of downloads)
    out.push(
      `     ${d.label.padEnd(14)} ${f2(d.ms / 1000).padStart(6)} s ${f1(d.mbps).padStart(6)} MB/s, this process's CPU ${f2(d.cpuMs / 1000)} s`,
    );
  out.push(
    `3. workflow of 3 × ${TRIO_BYTES / MiB} MiB: prefetch median ${f2(pf / 1000)} s (${prefetchMs.map((v) => f2(v / 1000)).join(', ')}) │ ` +
      `baseline 3 sequential ensure median ${f2(sq / 1000)} s (${sequentialMs.map((v) => f2(v / 1000)).join(', ')}) │ speed-up ${f2(sq / pf)}× │ ` +
      'informational, no target',
  );
  for (const p of ev.plans)
    out.push(
      `4a. planSpaceEviction over ${EVICTION_ROWS.toLocaleString('en')} rows, ${p.label} (${p.victims.toLocaleString('en')} victims): median ${f2(p.planMs)} ms of ${PLAN_SAMPLES} │ ` +
        `baseline filter + sort, same victims: ${f2(p.naiveMs)} ms │ ratio ${f2(p.planMs / p.naiveMs)} │ target < ${MAX_PLAN_MS} ms: ${verdict(p.planMs < MAX_PLAN_MS)}`,
    );
  out.push(
    `4b. store.cacheRows() + plan (paid by a download that needs eviction; one that fits costs a SUM query): median ${f1(ev.readPlanMs)} ms │ baseline bare SQLite read of the ` +
      `same rows: ${f1(ev.rawReadMs)} ms (cacheRows() alone ${f1(ev.parseMs)} ms) │ ratio ${f2(ev.readPlanMs / ev.rawReadMs)} │ informational, no target`,
  );
  if (link) out.push(...link.lines);
  out.push(
    `6. telemetry on — cache-hit ensure (${hitOn.ensure.length}): p50 ${f3(percentile(hitOn.ensure, 50))} ms, p99 ${f3(onP99)} ms │ ` +
      `off (1.): p50 ${f3(ensureP50)} ms, p99 ${f3(ensureP99)} ms │ on ÷ off p50 ${f2(percentile(hitOn.ensure, 50) / ensureP50)}× │ ` +
      `stat in the same blocks p99 ${f3(percentile(hitOn.stat, 99))} ms │ exported ${exported.requests} OTLP requests, ${f1(exported.bytes / MB)} MB │ ` +
      `target ensure p99 < ${MAX_HIT_P99_MS} ms with telemetry on: ${verdict(telemetryOk)}`,
  );
  if (warnings.length) {
    const kinds = new Map<string, number>();
    for (const w of warnings) {
      const text = `${w.msg}${w.err ? `: ${(w.err as { message?: string }).message ?? ''}` : ''}`;
      kinds.set(text, (kinds.get(text) ?? 0) + 1);
    }
    out.push(line, `agent warnings/errors (${warnings.length}):`);
    for (const [text, n] of kinds) out.push(`  ${n} × ${text.slice(0, 300)}`);
  }
  out.push(
    line,
    `RESULT: ${verdict(ok)} — hit p99 ${f3(ensureP99)} ms (telemetry on ${f3(onP99)} ms), download ratio ${f2(ratio)}, plan ${ev.plans.map((p) => `${f2(p.planMs)} ms`).join(' / ')}` +
      (link ? `, ${link.summary}` : ''),
    line,
  );
  console.log(out.join('\n'));
  return ok ? 0 : 1;
}

/** Section 5: the runs above, through a throttling proxy (bench/agent-link.ts). */
function benchLink(fx: Fixture, machine: LoraClient, loras: { big: Lora; trio: Lora[] }) {
  return benchRealisticLink({
    machine,
    newMachineClient: () => createLoraClient({ url: fx.graphqlUrl, token: fx.machineToken }),
    bigLoraId: loras.big.id,
    grant: fx.grant,
    fileBytes: FILE_BYTES,
    trioBytes: TRIO_BYTES,
    agentDownload: (label, client, env) => agentDownload(fx, loras.big, label, client, env),
    plainDownload: (label, rewrite) => plainDownload(fx, machine, loras.big, label, 'fetch', rewrite),
    prefetchRun: (label, client, env) => prefetchRun(fx, loras.trio, label, client, env),
    sequentialRun: (label, client, env) => sequentialRun(fx, loras.trio, label, client, env),
  });
}

await runBench(main);
