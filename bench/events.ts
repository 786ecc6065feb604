/**
 * `npm run bench:events` — live cache events at fleet scale: 10,000 GPU machines subscribed to
 * `cacheEvents` over graphql-ws, LoRAs deleted through the API at 10/s, every LORA_DELETED timed
 * from the event's creation to its arrival at each subscriber; with the in-memory bus and with the
 * Redis bus (a real redis-server), in the same run. Before those, a comparison at 1,000
 * subscribers: the per-subscription path (WS_SHARED_FANOUT=false, how every event was executed
 * and serialised once per socket before issue 16) against the shared fan-out, as server CPU per
 * 1,000 deliveries.
 *
 * 1. Embedded PostgreSQL + Azurite in a temp dir (bench/harness.ts), migrated; LoRAs for every
 *    run (+ one per run to rename) seeded through the real registry (as test/testkit/seed.ts does).
 * 2. Per run: the real app in a child process of its own (this file with --serve), so its memory
 *    and CPU are its own (VmRSS / VmHWM and utime+stime from /proc/<pid>); NODE_ENV=production,
 *    jobs off (blob deletion is not measured).
 * 3. The subscribers live in BENCH_CLIENT_PROCESSES child processes (bench/events-clients.ts:
 *    real sockets speaking graphql-transport-ws through bench/events-socket.ts, which reads frames
 *    in place, machine tokens), so the clients are not the
 *    bottleneck of one event loop; the open-file limit is raised for the child processes alone
 *    (prlimit, up to the hard limit). A LoRA is renamed until every subscriber saw the
 *    LORA_UPDATED (all live), then WARMUP renames.
 * 4. `deleteLora` mutations over HTTP, open loop at RATE per second (not waiting for replies: a
 *    slow server cannot slow the publisher down and hide its own latency).
 * 5. Latency of each delivery: the event's `at` (set by the server just before publishing, ms
 *    precision) → arrival at the subscriber (same machine, same clock), in 0.1 ms bins. Also
 *    shown: mutation sent → arrival (includes the delete's own transaction).
 *
 * With the shared fan-out an event costs one execution and one serialisation per group (here one:
 * every machine sends the same document) plus one frame write per socket; the p99 is then about
 * the time to write 10,000 frames, while the clients (same 2 cores) read them. Each run also
 * prints the server's CPU per 1,000 deliveries with its kernel part, the clients' CPU per frame
 * (both over the measurement only) and the machine's busy cores: a frame costs a system call on
 * each side of a loopback TCP connection, and on 2 cores that, not JavaScript, sets the ceiling.
 *
 * Exit 0 when, for every bus that ran at BENCH_SUBSCRIBERS: p99 (at → arrival) < 50 ms, every
 * subscriber got every event exactly once, no delete failed, the server kept up with RATE and its
 * RSS grew by < 32 KiB per subscriber; 1 otherwise; 2 on bad knobs or too low an open-file hard
 * limit. No redis-server: the Redis half is skipped (said so). The comparison runs are reported,
 * not judged.
 * Knobs: BENCH_SUBSCRIBERS=10000 BENCH_EVENTS=600 BENCH_RATE=10 (deletes/s) BENCH_WARMUP=50
 *        BENCH_BUSES=memory,redis BENCH_CLIENT_PROCESSES=4
 *        BENCH_COMPARE_SUBSCRIBERS=1000 BENCH_COMPARE_EVENTS=200 (0 = no comparison)
 *        BENCH_KEEP=1 (keep the temp dir; processes are stopped regardless)
 *        BENCH_SERVER_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof" (node flags for the server child)
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { cpus, loadavg } from 'node:os';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { buildApp } from '../server/app.ts';
import { generateGrantKeyPem } from '../server/auth/grant-keys.ts';
import { signToken } from '../server/auth/tokens.ts';
import { migrate } from '../server/db/migrate.ts';
import { startRedis } from '../test/testkit/redis.ts';
import { seedLora } from '../test/testkit/seed.ts';
import { type Fleet, openFileLimits, percentiles, startFleet, withFileLimit } from './events-fleet.ts';
import { isCleaningUp, log, onCleanup, runBench, runtimeConfig, SERVER_READY_PREFIX, startServices, timed } from './harness.ts';

// ---------------------------------------------------------------------------------------------
// Parameters

const SUBSCRIBERS = Number(process.env.BENCH_SUBSCRIBERS ?? '10000');
const EVENTS = Number(process.env.BENCH_EVENTS ?? '600');
const RATE = Number(process.env.BENCH_RATE ?? '10');
const CLIENT_PROCESSES = Number(process.env.BENCH_CLIENT_PROCESSES ?? '4');
const COMPARE_SUBSCRIBERS = Number(process.env.BENCH_COMPARE_SUBSCRIBERS ?? '1000');
const COMPARE_EVENTS = Number(process.env.BENCH_COMPARE_EVENTS ?? '200');
/** The publisher kept up when the last reply came within this of the schedule's end. */
const KEPT_UP_SLACK_MS = 1_000;
const WARMUP = Number(process.env.BENCH_WARMUP ?? '50');
const BUSES = (process.env.BENCH_BUSES ?? 'memory,redis').split(',').map((b) => b.trim()) as Bus[];
const TARGET_P99_MS = 50;
const TARGET_KIB_PER_SUBSCRIBER = 32;
const JWT_SECRET = 'bench-secret-bench-secret-bench-secret-0123456789';
const GRANT_KEY_PEM = generateGrantKeyPem();
const LORAS_PER_USER = 50; // under the default quota of 100 LoRAs per user
const SELF = fileURLToPath(import.meta.url);
let loadAtStart = 0;

type Bus = 'memory' | 'redis';

/** One measured run: a bus, a fleet size, and whether the shared fan-out is on. */
interface RunSpec {
  name: string;
  bus: Bus;
  subscribers: number;
  events: number;
  shared: boolean;
  /** Judged against the targets (the comparison runs are only reported). */
  judged: boolean;
}

// ---------------------------------------------------------------------------------------------
// The server child

interface ServerChild {
  url: string;
  pid: number;
  /** A full garbage collection in the server (before reading its RSS). */
  gc(): Promise<void>;
  stop(): Promise<void>;
}

async function startServerChild(env: Record<string, string>): Promise<ServerChild> {
  // BENCH_SERVER_NODE_ARGS: extra node flags for the server (e.g. --cpu-prof --cpu-prof-dir=/tmp/prof)
  const extra = (process.env.BENCH_SERVER_NODE_ARGS ?? '').split(/\s+/).filter(Boolean);
  const { command, args } = withFileLimit(['--expose-gc', ...extra, ...process.execArgv, SELF, '--serve'], SUBSCRIBERS + 256);
  const child: ChildProcess = spawn(command, args, {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'inherit', 'ipc'],
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let stopped: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopped ??= (async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const t = performance.now();
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
      await exited;
      clearTimeout(timer);
      log(`server stopped in ${((performance.now() - t) / 1000).toFixed(1)} s`);
    })();
    return stopped;
  };
  onCleanup('events server', stop);
  // runs before the server is stopped: its in-flight requests end at once rather than after the grace period
  onCleanup('HTTP client', async () => agent.destroy());
  const ready = await new Promise<{ url: string; pid: number }>((resolve, reject) => {
    let buffered = '';
    child.stdout?.on('data', (chunk: Buffer) => {
      buffered += chunk.toString();
      for (let nl = buffered.indexOf('\n'); nl >= 0; nl = buffered.indexOf('\n')) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        if (line.startsWith(SERVER_READY_PREFIX)) resolve(JSON.parse(line.slice(SERVER_READY_PREFIX.length)));
        else if (line.trim()) console.log(`[server] ${line}`);
      }
    });
    child.once('error', reject);
    void exited.then(() => reject(new Error(`the server exited before it was ready (code ${child.exitCode}, ${child.signalCode})`)));
  });
  const gc = () =>
    new Promise<void>((resolve) => {
      const done = (m: { type?: string }) => {
        if (m?.type !== 'gc-done') return;
        child.off('message', done);
        resolve();
      };
      child.on('message', done);
      child.send({ type: 'gc' });
    });
  return { ...ready, gc, stop };
}

/** VmRSS and VmHWM (peak) of a process, in MiB. */
function memoryOf(pid: number): { rss: number; hwm: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? Number.NaN);
  return { rss: kib('VmRSS') / 1024, hwm: kib('VmHWM') / 1024 };
}

/** CPU seconds a process has used: user, system (kernel) and both. */
function cpuOf(pid: number): { user: number; system: number; total: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const [user, system] = [Number(fields[11]) / 100, Number(fields[12]) / 100]; // utime, stime in clock ticks (USER_HZ = 100)
  return { user, system, total: user + system };
}

/** CPU seconds the whole machine has been busy (all CPUs, every process: not idle, not waiting for I/O). */
function machineBusySeconds(): number {
  const ticks = (readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '').split(/\s+/).slice(1).map(Number);
  const total = ticks.slice(0, 8).reduce((a, b) => a + b, 0); // user nice system idle iowait irq softirq steal
  return (total - (ticks[3] ?? 0) - (ticks[4] ?? 0)) / 100;
}

// ---------------------------------------------------------------------------------------------
// HTTP (mutations): a keep-alive agent, a few sockets (the open-loop publisher may overlap requests)

const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
/** Requests sent again because the server closed an idle keep-alive socket as they were written on it. */
let keepAliveRetries = 0;

/**
 * One GraphQL POST. Both mutations used here are idempotent (deleting a deleted LoRA succeeds
 * again and publishes nothing), so a request that fails on a reused keep-alive socket before any
 * response is sent once more (Node's documented pattern: `req.reusedSocket`); counted and shown.
 */
async function gql(url: string, token: string, query: string, variables: Record<string, unknown>): Promise<any> {
  try {
    return await post(url, token, query, variables);
  } catch (error) {
    if (!(error as { reusedSocket?: boolean }).reusedSocket) throw error;
    keepAliveRetries++;
    return post(url, token, query, variables);
  }
}

function post(url: string, token: string, query: string, variables: Record<string, unknown>): Promise<any> {
  const payload = JSON.stringify({ query, variables });
  return new Promise((resolve, reject) => {
    let responded = false;
    const req = http.request(
      `${url}/graphql`,
      {
        method: 'POST',
        agent,
        headers: { 'content-type': 'application/json', authorization: `Bearer ${token}`, 'content-length': Buffer.byteLength(payload) },
      },
      (res) => {
        responded = true;
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
          if (res.statusCode !== 200 || body.errors?.length)
            reject(new Error(`GraphQL ${res.statusCode}: ${JSON.stringify(body.errors ?? body)}`));
          else resolve(body.data);
        });
        res.on('error', reject);
      },
    );
    req.on('error', (error: NodeJS.ErrnoException) => {
      const retryable = req.reusedSocket && !responded && (error.code === 'ECONNRESET' || error.code === 'EPIPE');
      reject(Object.assign(error, { reusedSocket: retryable }));
    });
    req.end(payload);
  });
}

const DELETE = 'mutation($id: ID!) { deleteLora(id: $id) { __typename } }';
const RENAME = 'mutation($id: ID!, $name: String!) { updateLora(id: $id, name: $name) { __typename } }';
// ---------------------------------------------------------------------------------------------
// Seeding

interface Seeded {
  /** LoRAs to delete, with their owners' tokens. */
  deletes: { id: string; token: string }[];
  /** One more LoRA, renamed to probe and warm up. */
  spare: { id: string; token: string };
}

async function seed(databaseUrl: string, storage: string, runs: number[]): Promise<Seeded[]> {
  const app = buildApp(
    runtimeConfig({
      NODE_ENV: 'test',
      DATABASE_URL: databaseUrl,
      AZURE_STORAGE_CONNECTION_STRING: storage,
      JWT_SECRET,
      LOG_LEVEL: 'silent',
      JOBS_ENABLED: 'false',
      PORT: '0',
      HOST: '127.0.0.1',
    }),
  );
  try {
    await app.start(); // containers, and pg-boss's schema: finalize enqueues jobs when content is shared (issue 17)
    const out: Seeded[] = [];
    for (const [run, events] of runs.entries()) {
      const total = events + 1;
      const users = await Promise.all(
        Array.from({ length: Math.ceil(total / LORAS_PER_USER) }, async () => {
          const id = randomUUID();
          return { id, token: await signToken(JWT_SECRET, { role: 'user', sub: id }) };
        }),
      );
      const loras: { id: string; token: string }[] = new Array(total);
      let next = 0;
      await Promise.all(
        Array.from({ length: 16 }, async () => {
          for (let i = next++; i < total; i = next++) {
            const owner = users[Math.floor(i / LORAS_PER_USER)] as { id: string; token: string };
            const view = await seedLora(app, owner.id, { name: `bench-${run}-${i}` });
            loras[i] = { id: view.id, token: owner.token };
          }
        }),
      );
      out.push({ deletes: loras.slice(0, events), spare: loras[events] as { id: string; token: string } });
    }
    return out;
  } finally {
    await app.stop();
  }
}

const SUBSCRIPTION = 'subscription { cacheEvents { type loraId userId at } }';

async function waitUntil(check: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!(await check())) {
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const wallNow = () => performance.timeOrigin + performance.now();

// ---------------------------------------------------------------------------------------------
// One run

interface Stats {
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

interface Result {
  spec: RunSpec;
  skipped?: string;
  deliveries?: number;
  /** deleteLora calls that failed (their events are not expected) */
  failedDeletes?: number;
  lost?: number;
  duplicates?: number;
  unexpected?: number;
  errors?: string[];
  fromAt?: Stats;
  fromSend?: Stats;
  publishSeconds?: number;
  rateAchieved?: number;
  keptUp?: boolean;
  rssIdle?: number;
  rssSubscribed?: number;
  rssAfter?: number;
  rssPeak?: number;
  /** Server CPU, share of one core over the measurement, and CPU ms per 1,000 deliveries. */
  serverCpu?: number;
  serverCpuMsPer1000?: number;
  clientCpu?: number;
  /** Server CPU per 1,000 deliveries spent in the kernel (socket writes); the rest is user space. */
  serverKernelMsPer1000?: number;
  /** Client CPU (µs) per frame received, and its kernel part. */
  clientUsPerFrame?: number;
  clientKernelUsPerFrame?: number;
  /** The machine's busy CPU over the measurement, in cores (everything: postgres, the publisher, other work). */
  machineBusy?: number;
  load?: number;
  kibPerSubscriber?: number;
  ok?: boolean;
}

async function run(spec: RunSpec, services: { databaseUrl: string; storage: string }, seeded: Seeded): Promise<Result> {
  const { bus, name } = spec;
  let redisUrl: string | undefined;
  if (bus === 'redis') {
    const redis = await startRedis();
    if ('unavailable' in redis) {
      log(`SKIPPING the Redis bus: ${redis.unavailable}`);
      return { spec, skipped: redis.unavailable };
    }
    onCleanup('redis-server', redis.stop);
    redisUrl = redis.url;
    log(`redis-server ${redis.url} (pid ${redis.pid})`);
  }
  const [server] = await timed(`${name}: server started (child process)`, () =>
    startServerChild({
      NODE_ENV: 'production',
      GRANT_SIGNING_KEY: GRANT_KEY_PEM, // production refuses to start without one (issue 14)
      PORT: '0',
      HOST: '127.0.0.1',
      DATABASE_URL: services.databaseUrl,
      AZURE_STORAGE_CONNECTION_STRING: services.storage,
      JWT_SECRET,
      LOG_LEVEL: 'warn',
      JOBS_ENABLED: 'false',
      WS_SHARED_FANOUT: String(spec.shared),
      ...(redisUrl ? { REDIS_URL: redisUrl } : {}),
    }),
  );
  const rssIdle = memoryOf(server.pid).rss;
  log(`${name}: server pid ${server.pid} at ${server.url}, RSS ${rssIdle.toFixed(0)} MiB idle`);

  const fleet = startFleet({
    wsUrl: `${server.url.replace(/^http/, 'ws')}/graphql`,
    secret: JWT_SECRET,
    processes: Math.min(CLIENT_PROCESSES, spec.subscribers),
    perProcess: Math.ceil(spec.subscribers / Math.min(CLIENT_PROCESSES, spec.subscribers)),
    loraIds: seeded.deletes.map((d) => d.id),
    query: SUBSCRIPTION,
  });
  try {
    return await measure(spec, server, fleet, seeded, rssIdle);
  } finally {
    await fleet.close();
    await server.stop();
  }
}

/** Renames the spare LoRA until every subscriber so far has seen a LORA_UPDATED (all live). */
async function allLive(server: ServerChild, fleet: Fleet, spare: { id: string; token: string }, what: string): Promise<void> {
  await timed(what, async () => {
    const deadline = performance.now() + 60_000;
    while ((await fleet.status()).minUpdates === 0) {
      if (performance.now() > deadline) throw new Error('subscriptions did not all become live within 60 s');
      await gql(server.url, spare.token, RENAME, { id: spare.id, name: `probe-${randomUUID()}` });
      await new Promise((r) => setTimeout(r, 500));
    }
  });
}

async function measure(spec: RunSpec, server: ServerChild, fleet: Fleet, seeded: Seeded, rssIdle: number): Promise<Result> {
  const { name } = spec;
  // Memory per subscriber is the slope between a first tenth of the fleet (all live, after a full
  // GC) and the whole fleet: the server's fixed costs (code compiled on first use, pools, heap
  // headroom) are not spread over the subscribers.
  const spare = seeded.spare;
  const first = Math.max(1, Math.floor(spec.subscribers / 10));
  await timed(`${name}: ${first} subscribers connected (${CLIENT_PROCESSES} client processes)`, () => fleet.add(first));
  await allLive(server, fleet, spare, `${name}: all ${first} subscriptions live`);
  await server.gc();
  const rssFirst = memoryOf(server.pid).rss;
  await timed(`${name}: ${spec.subscribers - first} more subscribers connected`, () => fleet.add(spec.subscribers - first));
  await allLive(server, fleet, spare, `${name}: all ${spec.subscribers} subscriptions live`);
  await server.gc();
  const rssSubscribed = memoryOf(server.pid).rss;
  const kibPerSubscriber = spec.subscribers > first ? ((rssSubscribed - rssFirst) * 1024) / (spec.subscribers - first) : Number.NaN;
  log(
    `${name}: server RSS ${rssFirst.toFixed(0)} MiB with ${first} subscribers, ${rssSubscribed.toFixed(0)} MiB with ${spec.subscribers}: ${kibPerSubscriber.toFixed(1)} KiB each`,
  );

  if (WARMUP > 0) {
    const base = (await fleet.status()).minUpdates;
    await timed(`${name}: warm-up (${WARMUP} renames at ${RATE}/s, each to all subscribers)`, async () => {
      const failed = await openLoop(WARMUP, (i) =>
        gql(server.url, spare.token, RENAME, { id: spare.id, name: `warm-${i}` }).then(() => {}),
      );
      // renames of one row queue on its lock: on a saturated server some time out (not measured)
      if (failed.length) log(`${name}: ${failed.length} of ${WARMUP} warm-up renames failed (the warm-up goes on)`);
      const sent = WARMUP - failed.length;
      await waitUntil(async () => (await fleet.status()).minUpdates - base >= sent, 60_000, 'warm-up deliveries');
    });
  }

  // The measurement.
  const sentAt: number[] = new Array(spec.events).fill(Number.NaN);
  await fleet.mark();
  const cpu0 = cpuOf(server.pid);
  const busy0 = machineBusySeconds();
  const t0 = performance.now();
  const failedDeletes = await openLoop(spec.events, async (i) => {
    const target = seeded.deletes[i] as { id: string; token: string };
    sentAt[i] = wallNow();
    const data = await gql(server.url, target.token, DELETE, { id: target.id });
    if (data?.deleteLora?.__typename !== 'DeleteLoraSuccess') throw new Error(`delete ${target.id}: ${JSON.stringify(data)}`);
  });
  const publishMs = performance.now() - t0;
  const expected = spec.subscribers * (spec.events - failedDeletes.length);
  await waitUntil(async () => (await fleet.status()).deliveries >= expected, 60_000, 'all deliveries').catch((error: Error) =>
    log(`${name}: ${error.message}`),
  );
  const wallSeconds = (performance.now() - t0) / 1000;
  const cpu1 = cpuOf(server.pid);
  const serverCpuSeconds = cpu1.total - cpu0.total;
  const machineBusy = (machineBusySeconds() - busy0) / wallSeconds;
  await new Promise((r) => setTimeout(r, 250)); // late duplicates
  const memory = memoryOf(server.pid); // hwm: the peak since the server started (the kernel's VmHWM)
  const d = await fleet.report(sentAt);

  const result: Result = {
    spec,
    deliveries: d.deliveries,
    failedDeletes: failedDeletes.length,
    lost: expected - d.deliveries,
    duplicates: d.duplicates,
    unexpected: d.unexpected,
    errors: d.errors,
    fromAt: percentiles(d.fromAt),
    fromSend: percentiles(d.fromSend),
    publishSeconds: publishMs / 1000,
    rateAchieved: spec.events / (publishMs / 1000),
    rssIdle,
    rssSubscribed,
    rssAfter: memory.rss,
    rssPeak: memory.hwm,
    serverCpu: serverCpuSeconds / wallSeconds,
    serverCpuMsPer1000: d.deliveries ? (serverCpuSeconds * 1000) / (d.deliveries / 1000) : Number.NaN,
    clientCpu: d.cpuSeconds / wallSeconds, // from the measurement's start (connecting not included)
    serverKernelMsPer1000: d.deliveries ? ((cpu1.system - cpu0.system) * 1000) / (d.deliveries / 1000) : Number.NaN,
    clientUsPerFrame: d.deliveries ? (d.cpuSeconds * 1e6) / d.deliveries : Number.NaN,
    clientKernelUsPerFrame: d.deliveries ? ((d.cpuSeconds - d.userSeconds) * 1e6) / d.deliveries : Number.NaN,
    machineBusy,
    load: loadavg()[0] ?? 0,
    kibPerSubscriber,
  };
  // `at` is stamped after the delete's transaction: a server too busy to keep up delays the
  // mutations themselves (send→recv grows), which at→recv alone would not show.
  result.keptUp = publishMs <= ((spec.events - 1) / RATE) * 1000 + KEPT_UP_SLACK_MS;
  if (!result.keptUp)
    log(`${name}: the server did not keep up with ${RATE} deletes/s (publishing took ${(publishMs / 1000).toFixed(1)} s)`);
  result.ok =
    result.keptUp &&
    failedDeletes.length === 0 &&
    result.lost === 0 &&
    result.duplicates === 0 &&
    d.errors.length === 0 &&
    (result.fromAt?.p99 ?? Infinity) < TARGET_P99_MS &&
    (result.kibPerSubscriber ?? Infinity) < TARGET_KIB_PER_SUBSCRIBER;
  log(`${name}: ${d.deliveries.toLocaleString('en')} deliveries, p50 ${ms(result.fromAt?.p50)} / p99 ${ms(result.fromAt?.p99)} ms`);
  return result;
}

/**
 * Calls `fire(i)` for i < n at RATE per second, on schedule whether or not earlier calls returned;
 * resolves with the failures once all have settled (the first few are also logged as they happen).
 */
async function openLoop(n: number, fire: (i: number) => Promise<void>): Promise<string[]> {
  const interval = 1000 / RATE;
  const start = performance.now();
  const pending: Promise<void>[] = [];
  const failures: string[] = [];
  for (let i = 0; i < n; i++) {
    const wait = start + i * interval - performance.now();
    if (wait > 1) await new Promise((r) => setTimeout(r, wait));
    if (isCleaningUp()) {
      failures.push('interrupted');
      break;
    }
    pending.push(
      fire(i).catch((error: Error) => {
        const code = (error as { code?: string }).code;
        const message = `#${i}: ${error.message}${code ? ` (${code})` : ''}`;
        if (failures.push(message) <= 5) log(`request failed: ${message}`);
      }),
    );
  }
  await Promise.all(pending);
  return failures;
}

// ---------------------------------------------------------------------------------------------
// The report

const ms = (v: number | undefined) => (v === undefined || Number.isNaN(v) ? '—' : v.toFixed(1));
const mib = (v: number | undefined) => (v === undefined || Number.isNaN(v) ? '—' : `${v.toFixed(0)}`);

function report(results: Result[]): void {
  const header = [
    'run',
    'subscribers',
    'deliveries',
    'failed deletes',
    'lost',
    'dup',
    'at→recv p50',
    'p90',
    'p99',
    'max',
    'send→recv p50',
    'p99',
    'rate/s',
    'RSS idle',
    'subscribed',
    'peak',
    'KiB/sub',
    'server CPU',
    'CPU ms/1k',
    'clients CPU',
    'result',
  ];
  const rows = results.map((r) =>
    r.skipped
      ? [r.spec.name, `SKIPPED: ${r.skipped}`]
      : [
          r.spec.name,
          r.spec.subscribers.toLocaleString('en'),
          (r.deliveries ?? 0).toLocaleString('en'),
          String(r.failedDeletes),
          String(r.lost),
          String(r.duplicates),
          ms(r.fromAt?.p50),
          ms(r.fromAt?.p90),
          ms(r.fromAt?.p99),
          ms(r.fromAt?.max),
          ms(r.fromSend?.p50),
          ms(r.fromSend?.p99),
          (r.rateAchieved ?? 0).toFixed(1),
          mib(r.rssIdle),
          mib(r.rssSubscribed),
          mib(r.rssPeak),
          (r.kibPerSubscriber ?? Number.NaN).toFixed(1),
          `${((r.serverCpu ?? 0) * 100).toFixed(0)}%`,
          ms(r.serverCpuMsPer1000),
          `${((r.clientCpu ?? 0) * 100).toFixed(0)}%`,
          !r.spec.judged ? (r.ok ? '(pass)' : '(fail)') : r.ok ? 'PASS' : r.keptUp === false ? 'FAIL (saturated)' : 'FAIL',
        ],
  );
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r.length > 2 || i < 1 ? (r[i] ?? '').length : 0))));
  const line = (cells: string[]) =>
    cells.length === 2 && cells[1]?.startsWith('SKIPPED')
      ? `  ${(cells[0] ?? '').padEnd(widths[0] ?? 0)}  ${cells[1]}`
      : `  ${cells.map((c, i) => (i === 0 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0))).join('  ')}`;
  console.log('');
  console.log(
    `== live cache events: graphql-ws subscribers × LORA_DELETED (deleteLora over HTTP at ${RATE}/s, open loop); ${SUBSCRIBERS.toLocaleString('en')} × ${EVENTS} judged, ${COMPARE_SUBSCRIBERS.toLocaleString('en')} × ${COMPARE_EVENTS} compared`,
  );
  console.log(
    `   machine: ${cpus().length} × ${cpus()[0]?.model ?? '?'}, load ${loadAtStart.toFixed(2)} at start, ${(loadavg()[0] ?? 0).toFixed(2)} at end; ` +
      `node ${process.version}; server in a child process, jobs off; subscribers in ${CLIENT_PROCESSES} client processes`,
  );
  console.log(
    "   latencies in ms (at→recv: the event's `at`, ms precision, → arrival at the subscriber, 0.1 ms bins); memory: the server's VmRSS in MiB; KiB/sub: RSS growth from a tenth of the subscribers to all, after a full GC each, ÷ the subscribers added; CPU ms/1k: server CPU ms per 1,000 deliveries",
  );
  console.log(line(header));
  for (const row of rows) console.log(line(row));
  for (const r of results) {
    if (r.skipped) continue;
    console.log(
      `   ${r.spec.name}: server ${ms(r.serverCpuMsPer1000)} ms CPU per 1,000 deliveries, ${ms(r.serverKernelMsPer1000)} of it in the kernel; ` +
        `clients ${ms(r.clientUsPerFrame)} µs CPU per frame received, ${ms(r.clientKernelUsPerFrame)} in the kernel; ` +
        `machine busy ${((r.machineBusy ?? 0) * 100).toFixed(0)}% of ${cpus().length} cores (server ${((r.serverCpu ?? 0) * 100).toFixed(0)}%, clients ${((r.clientCpu ?? 0) * 100).toFixed(0)}%, ` +
        `the rest — postgres, redis, the publisher, other work — ${(((r.machineBusy ?? 0) - (r.serverCpu ?? 0) - (r.clientCpu ?? 0)) * 100).toFixed(0)}%), load ${(r.load ?? 0).toFixed(1)}`,
    );
    if (r.unexpected) console.log(`   ${r.spec.name}: ${r.unexpected} unexpected events`);
    if (r.errors?.length) console.log(`   ${r.spec.name}: subscription errors: ${r.errors.join('; ')}`);
  }
  const before = results.find((r) => !r.skipped && !r.spec.shared);
  const after = results.find((r) => !r.skipped && r.spec.shared && r.spec.subscribers === before?.spec.subscribers);
  if (before?.serverCpuMsPer1000 && after?.serverCpuMsPer1000) {
    console.log(
      `   server CPU per 1,000 deliveries (${before.spec.subscribers.toLocaleString('en')} subscribers, memory bus): before (per subscription, WS_SHARED_FANOUT=false) ${ms(before.serverCpuMsPer1000)} ms, after (shared fan-out) ${ms(after.serverCpuMsPer1000)} ms: ${(before.serverCpuMsPer1000 / after.serverCpuMsPer1000).toFixed(1)}× less`,
    );
  }
  if (keepAliveRetries) console.log(`   ${keepAliveRetries} requests were sent again after the server closed their idle keep-alive socket`);
  console.log(
    `   target (runs at ${SUBSCRIBERS.toLocaleString('en')}): p99 (at→recv) < ${TARGET_P99_MS} ms on every bus that ran, no event lost or duplicated, no delete failed, the server kept up with ${RATE} deletes/s, < ${TARGET_KIB_PER_SUBSCRIBER} KiB of server RSS per subscriber`,
  );
}

// ---------------------------------------------------------------------------------------------

async function main(): Promise<number> {
  const { hard } = openFileLimits();
  const needed = SUBSCRIBERS + 256;
  if (hard < needed) {
    console.error(`open-file hard limit ${hard} < ${needed} (${SUBSCRIBERS} sockets + headroom): lower BENCH_SUBSCRIBERS`);
    return 2;
  }
  const specs: RunSpec[] = [];
  if (COMPARE_EVENTS > 0 && COMPARE_SUBSCRIBERS > 0) {
    specs.push({
      name: 'memory, per subscription',
      bus: 'memory',
      subscribers: COMPARE_SUBSCRIBERS,
      events: COMPARE_EVENTS,
      shared: false,
      judged: false,
    });
    specs.push({
      name: 'memory, shared',
      bus: 'memory',
      subscribers: COMPARE_SUBSCRIBERS,
      events: COMPARE_EVENTS,
      shared: true,
      judged: false,
    });
  }
  for (const bus of BUSES)
    specs.push({ name: `${bus}, shared`, bus, subscribers: SUBSCRIBERS, events: EVENTS, shared: true, judged: true });
  log(
    `live-events benchmark: ${specs.map((s) => `${s.name} ${s.subscribers}×${s.events}`).join('; ')} at ${RATE}/s; open files ≤ ${hard} (hard)`,
  );
  loadAtStart = loadavg()[0] ?? 0;
  if (loadAtStart > cpus().length / 2) {
    log(
      `WARNING: the machine is busy (load ${loadAtStart.toFixed(2)} on ${cpus().length} CPUs): latencies will be worse than on a quiet machine`,
    );
  }
  const [{ pgHandle, azurite }] = await timed('started embedded PostgreSQL + Azurite', () => startServices());
  await timed('migrated', () => migrate(pgHandle.url));
  const [seeded] = await timed(`seeded ${specs.map((s) => s.events + 1).join(' + ')} LoRAs through the registry`, () =>
    seed(
      pgHandle.url,
      azurite.connectionString,
      specs.map((s) => s.events),
    ),
  );
  const results: Result[] = [];
  for (const [i, spec] of specs.entries()) {
    results.push(await run(spec, { databaseUrl: pgHandle.url, storage: azurite.connectionString }, seeded[i] as Seeded));
  }
  report(results);
  const judged = results.filter((r) => !r.skipped && r.spec.judged);
  return judged.length > 0 && judged.every((r) => r.ok) ? 0 : 1;
}

// ---------------------------------------------------------------------------------------------
// Entry: the benchmark, or with --serve the app in a child process (started by the benchmark)

if (process.argv.includes('--serve')) {
  await serve();
} else {
  const counts = [SUBSCRIBERS, EVENTS, CLIENT_PROCESSES];
  if (
    !counts.every((n) => Number.isInteger(n) && n >= 1) ||
    !(RATE > 0) ||
    ![WARMUP, COMPARE_SUBSCRIBERS, COMPARE_EVENTS].every((n) => Number.isInteger(n) && n >= 0) ||
    !BUSES.every((b) => b === 'memory' || b === 'redis')
  ) {
    console.error(
      'BENCH_SUBSCRIBERS, BENCH_EVENTS and BENCH_CLIENT_PROCESSES must be integers ≥ 1, BENCH_RATE > 0, BENCH_WARMUP / BENCH_COMPARE_* ≥ 0, BENCH_BUSES ⊆ memory,redis',
    );
    process.exit(2);
  }
  await runBench(main);
}

async function serve(): Promise<void> {
  const app = buildApp(runtimeConfig(process.env));
  let stopping: Promise<void> | undefined;
  const stop = (code = 0) => {
    stopping ??= app
      .stop()
      .catch((error: unknown) => {
        console.error('events server: stop failed:', error);
        code = 1;
      })
      .finally(() => process.exit(code));
    return stopping;
  };
  process.on('SIGTERM', () => void stop());
  // Ctrl-C reaches the whole process group: the parent stops us (before the database we use)
  process.on('SIGINT', () => {
    if (!process.connected) void stop();
  });
  process.on('disconnect', () => void stop()); // the parent is gone, however it died
  process.on('message', (m: { type?: string }) => {
    if (m?.type !== 'gc') return;
    (globalThis as { gc?: () => void }).gc?.();
    process.send?.({ type: 'gc-done' });
  });
  try {
    const url = await app.start();
    process.stdout.write(`${SERVER_READY_PREFIX}${JSON.stringify({ url, pid: process.pid })}\n`);
  } catch (error) {
    console.error('events server: start failed:', error);
    await stop(1);
  }
}
