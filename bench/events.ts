/**
 * `npm run bench:events` — live cache events at fleet scale: 1,000 GPU machines subscribed to
 * `cacheEvents` over graphql-ws, 1,000 LoRAs deleted through the API, every LORA_DELETED timed
 * from the event's creation to its arrival at each of the 1,000 subscribers (1,000,000 deliveries);
 * first with the in-memory bus, then with the Redis bus (a real redis-server), in the same run.
 *
 * 1. Embedded PostgreSQL + Azurite in a temp dir (bench/harness.ts), migrated; 2 × 1,000 LoRAs
 *    (+ one per run to rename) seeded through the real registry (as test/testkit/seed.ts does).
 * 2. Per bus: the real app in a child process of its own (this file with --serve), so its memory
 *    is its own (VmRSS / VmHWM from /proc/<pid>/status); NODE_ENV=production, jobs off (blob
 *    deletion is not measured).
 * 3. 1,000 graphql-ws clients (one socket each, machine tokens, in this process) subscribe; a
 *    LoRA is renamed until every one of them saw the LORA_UPDATED (all live), then WARMUP renames.
 * 4. 1,000 `deleteLora` mutations over HTTP, open loop at RATE per second (not waiting for
 *    replies: a slow server cannot slow the publisher down and hide its own latency).
 * 5. Latency of each delivery: the event's `at` (set by the server just before publishing, ms
 *    precision) → arrival at the subscriber (this process's clock: same machine, same clock). Also
 *    shown: mutation sent → arrival (includes the delete's own transaction).
 *
 *
 * RATE is 10 deletes/s: a bulk delete, far above the usual trickle. Each event costs the server
 * about 50 µs per subscriber (it runs the subscription's selection set and writes one frame per
 * socket), so one event's fan-out to 1,000 sockets takes ~50–60 ms of one core — which is also
 * the p99 floor at any rate — and a replica with 1,000 subscribers saturates near 18 events/s
 * (then mutations queue behind the fan-out: send→arrival grows without bound; reported as
 * "saturated"). Measured on 2 vCPUs, with the clients (~20 µs per message) sharing the machine.
 *
 * Exit 0 when, for every bus that ran, p99 (at → arrival) < 100 ms, every subscriber got every
 * event exactly once, no delete failed and the server kept up with RATE; 1 otherwise; 2 on bad
 * knobs or too low an open-file limit. No redis-server: the Redis half is skipped (said so).
 * Knobs: BENCH_SUBSCRIBERS=1000 BENCH_EVENTS=1000 BENCH_RATE=10 (deletes/s) BENCH_WARMUP=50
 *        BENCH_BUSES=memory,redis BENCH_KEEP=1 (keep the temp dir; processes are stopped regardless)
 *        BENCH_SERVER_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof" (node flags for the server child)
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { cpus, loadavg } from 'node:os';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { type Client, createClient } from 'graphql-ws';
import WebSocket from 'ws';
import { buildApp } from '../server/app.ts';
import { signToken } from '../server/auth/tokens.ts';
import { migrate } from '../server/db/migrate.ts';
import { startRedis } from '../test/testkit/redis.ts';
import { seedLora } from '../test/testkit/seed.ts';
import { isCleaningUp, log, onCleanup, runBench, runtimeConfig, SERVER_READY_PREFIX, startServices, timed } from './harness.ts';

// ---------------------------------------------------------------------------------------------
// Parameters

const SUBSCRIBERS = Number(process.env.BENCH_SUBSCRIBERS ?? '1000');
const EVENTS = Number(process.env.BENCH_EVENTS ?? '1000');
const RATE = Number(process.env.BENCH_RATE ?? '10');
/** The publisher kept up when the last reply came within this of the schedule's end. */
const KEPT_UP_SLACK_MS = 1_000;
const WARMUP = Number(process.env.BENCH_WARMUP ?? '50');
const BUSES = (process.env.BENCH_BUSES ?? 'memory,redis').split(',').map((b) => b.trim()) as Bus[];
const TARGET_P99_MS = 100;
const JWT_SECRET = 'bench-secret-bench-secret-bench-secret-0123456789';
const LORAS_PER_USER = 50; // under the default quota of 100 LoRAs per user
const SELF = fileURLToPath(import.meta.url);
let loadAtStart = 0;

type Bus = 'memory' | 'redis';

// ---------------------------------------------------------------------------------------------
// The server child

interface ServerChild {
  url: string;
  pid: number;
  stop(): Promise<void>;
}

async function startServerChild(env: Record<string, string>): Promise<ServerChild> {
  // BENCH_SERVER_NODE_ARGS: extra node flags for the server (e.g. --cpu-prof --cpu-prof-dir=/tmp/prof)
  const extra = (process.env.BENCH_SERVER_NODE_ARGS ?? '').split(/\s+/).filter(Boolean);
  const child: ChildProcess = spawn(process.execPath, [...extra, ...process.execArgv, SELF, '--serve'], {
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
  return { ...ready, stop };
}

/** VmRSS and VmHWM (peak) of a process, in MiB. */
function memoryOf(pid: number): { rss: number; hwm: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? Number.NaN);
  return { rss: kib('VmRSS') / 1024, hwm: kib('VmHWM') / 1024 };
}

/** CPU seconds (user + system) a process has used. */
function cpuSecondsOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (USER_HZ = 100)
}

function openFileLimit(): number {
  const line = /^Max open files\s+(\S+)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
  return line?.[1] === 'unlimited' ? Number.POSITIVE_INFINITY : Number(line?.[1]);
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
const SUBSCRIPTION = 'subscription { cacheEvents { type loraId userId at } }';

// ---------------------------------------------------------------------------------------------
// Seeding

interface Seeded {
  /** LoRAs to delete, with their owners' tokens. */
  deletes: { id: string; token: string }[];
  /** One more LoRA, renamed to probe and warm up. */
  spare: { id: string; token: string };
}

async function seed(databaseUrl: string, storage: string, runs: number): Promise<Seeded[]> {
  const app = buildApp(
    runtimeConfig({
      NODE_ENV: 'test',
      DATABASE_URL: databaseUrl,
      AZURE_STORAGE_CONNECTION_STRING: storage,
      JWT_SECRET,
      LOG_LEVEL: 'silent',
      JOBS_ENABLED: 'false',
    }),
  );
  try {
    await app.blobs.ensureContainers();
    const out: Seeded[] = [];
    for (let run = 0; run < runs; run++) {
      const total = EVENTS + 1;
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
      out.push({ deletes: loras.slice(0, EVENTS), spare: loras[EVENTS] as { id: string; token: string } });
    }
    return out;
  } finally {
    await app.stop();
  }
}

// ---------------------------------------------------------------------------------------------
// Subscribers

interface Deliveries {
  /** at → arrival and sent → arrival, ms, one slot per (subscriber, event). */
  fromAt: Float64Array;
  fromSend: Float64Array;
  received: Uint8Array;
  count: number;
  duplicates: number;
  unexpected: number;
  errors: string[];
}

interface Fleet {
  clients: Client[];
  /** How many LORA_UPDATED events (probe and warm-up renames) each subscriber has seen. */
  updatesSeen: Uint32Array;
  deliveries: Deliveries;
  /** loraId → event index, and when its delete was sent (wall clock, ms). */
  eventIndex: Map<string, number>;
  sentAt: Float64Array;
  close(): Promise<void>;
}

const wallNow = () => performance.timeOrigin + performance.now();

async function openFleet(url: string, deletes: { id: string }[]): Promise<Fleet> {
  const eventIndex = new Map(deletes.map((d, i) => [d.id, i]));
  const sentAt = new Float64Array(EVENTS).fill(Number.NaN);
  const deliveries: Deliveries = {
    fromAt: new Float64Array(SUBSCRIBERS * EVENTS),
    fromSend: new Float64Array(SUBSCRIBERS * EVENTS),
    received: new Uint8Array(SUBSCRIBERS * EVENTS),
    count: 0,
    duplicates: 0,
    unexpected: 0,
    errors: [],
  };
  const updatesSeen = new Uint32Array(SUBSCRIBERS);
  const clients: Client[] = [];
  let closing = false;
  const fleet: Fleet = {
    clients,
    updatesSeen,
    deliveries,
    eventIndex,
    sentAt,
    async close() {
      closing = true;
      await Promise.allSettled(clients.map((c) => c.dispose()));
    },
  };
  onCleanup('subscribers', () => fleet.close());
  const wsUrl = `${url.replace(/^http/, 'ws')}/graphql`;
  const BATCH = 100;
  for (let start = 0; start < SUBSCRIBERS; start += BATCH) {
    await Promise.all(
      Array.from({ length: Math.min(BATCH, SUBSCRIBERS - start) }, async (_, k) => {
        const s = start + k;
        const token = await signToken(JWT_SECRET, { role: 'machine', sub: `gpu-${s}`, machineId: `gpu-${s}` });
        await new Promise<void>((resolve, reject) => {
          let connected = false;
          const client = createClient({
            url: wsUrl,
            webSocketImpl: WebSocket,
            connectionParams: { authorization: `Bearer ${token}` },
            lazy: false,
            retryAttempts: 0,
            keepAlive: 0,
            on: {
              connected: () => {
                connected = true;
                resolve();
              },
              closed: (e) => {
                const message = `subscriber ${s} closed: ${(e as { code: number }).code}`;
                if (!connected) reject(new Error(message));
                else if (!closing && deliveries.errors.length < 5) deliveries.errors.push(message); // dropped by the server
              },
            },
            onNonLazyError: (e) => reject(e),
          });
          clients.push(client);
          client.subscribe<{ cacheEvents: { type: string; loraId: string; at: string } }>(
            { query: SUBSCRIPTION },
            {
              next: (result) => {
                const arrived = wallNow();
                const event = result.data?.cacheEvents;
                if (!event) {
                  if (deliveries.errors.length < 5) deliveries.errors.push(JSON.stringify(result.errors));
                  return;
                }
                if (event.type === 'LORA_UPDATED') {
                  updatesSeen[s] = (updatesSeen[s] as number) + 1;
                  return;
                }
                const i = eventIndex.get(event.loraId);
                if (event.type !== 'LORA_DELETED' || i === undefined) {
                  deliveries.unexpected++;
                  return;
                }
                const slot = s * EVENTS + i;
                if (deliveries.received[slot]) {
                  deliveries.duplicates++;
                  return;
                }
                deliveries.received[slot] = 1;
                deliveries.fromAt[slot] = arrived - Date.parse(event.at);
                deliveries.fromSend[slot] = arrived - (sentAt[i] as number);
                deliveries.count++;
              },
              error: (error) => {
                if (!closing && deliveries.errors.length < 5)
                  deliveries.errors.push(String((error as Error)?.message ?? JSON.stringify(error)));
              },
              complete: () => {},
            },
          );
        });
      }),
    );
  }
  return fleet;
}

async function waitUntil(check: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!check()) {
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

// ---------------------------------------------------------------------------------------------
// One run (one bus)

interface Result {
  bus: Bus;
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
  serverCpu?: number;
  clientCpu?: number;
  ok?: boolean;
}

async function run(bus: Bus, services: { databaseUrl: string; storage: string }, seeded: Seeded): Promise<Result> {
  let redisUrl: string | undefined;
  if (bus === 'redis') {
    const redis = await startRedis();
    if ('unavailable' in redis) {
      log(`SKIPPING the Redis bus: ${redis.unavailable}`);
      return { bus, skipped: redis.unavailable };
    }
    onCleanup('redis-server', redis.stop);
    redisUrl = redis.url;
    log(`redis-server ${redis.url} (pid ${redis.pid})`);
  }
  const [server] = await timed(`${bus} bus: server started (child process)`, () =>
    startServerChild({
      NODE_ENV: 'production',
      PORT: '0',
      HOST: '127.0.0.1',
      DATABASE_URL: services.databaseUrl,
      AZURE_STORAGE_CONNECTION_STRING: services.storage,
      JWT_SECRET,
      LOG_LEVEL: 'warn',
      JOBS_ENABLED: 'false',
      ...(redisUrl ? { REDIS_URL: redisUrl } : {}),
    }),
  );
  const rssIdle = memoryOf(server.pid).rss;
  log(`${bus} bus: server pid ${server.pid} at ${server.url}, RSS ${rssIdle.toFixed(0)} MiB idle`);

  const [fleet] = await timed(`${bus} bus: ${SUBSCRIBERS} subscribers connected`, () => openFleet(server.url, seeded.deletes));

  // All live: rename the spare LoRA until every subscriber has seen a LORA_UPDATED.
  const spare = seeded.spare;
  let renames = 0;
  await timed(`${bus} bus: all ${SUBSCRIBERS} subscriptions live`, async () => {
    const deadline = performance.now() + 30_000;
    while (fleet.updatesSeen.some((n) => n === 0)) {
      if (performance.now() > deadline) throw new Error('subscriptions did not all become live within 30 s');
      await gql(server.url, spare.token, RENAME, { id: spare.id, name: `probe-${renames++}` });
      await new Promise((r) => setTimeout(r, 200));
    }
  });
  const rssSubscribed = memoryOf(server.pid).rss;
  log(`${bus} bus: server RSS ${rssSubscribed.toFixed(0)} MiB with ${SUBSCRIBERS} subscribers`);

  if (WARMUP > 0) {
    const before = Array.from(fleet.updatesSeen);
    await timed(`${bus} bus: warm-up (${WARMUP} renames at ${RATE}/s, each to all subscribers)`, async () => {
      const failed = await openLoop(WARMUP, (i) =>
        gql(server.url, spare.token, RENAME, { id: spare.id, name: `warm-${i}` }).then(() => {}),
      );
      if (failed.length) throw new Error(`${failed.length} warm-up renames failed: ${failed.slice(0, 3).join('; ')}`);
      await waitUntil(() => fleet.updatesSeen.every((n, s) => n - (before[s] as number) >= WARMUP), 60_000, 'warm-up deliveries');
    });
  }

  // The measurement.
  const cpu0 = cpuSecondsOf(server.pid);
  const client0 = process.cpuUsage();
  const t0 = performance.now();
  const failedDeletes = await openLoop(EVENTS, async (i) => {
    const target = seeded.deletes[i] as { id: string; token: string };
    fleet.sentAt[i] = wallNow();
    const data = await gql(server.url, target.token, DELETE, { id: target.id });
    if (data?.deleteLora?.__typename !== 'DeleteLoraSuccess') throw new Error(`delete ${target.id}: ${JSON.stringify(data)}`);
  });
  const publishMs = performance.now() - t0;
  const expected = SUBSCRIBERS * (EVENTS - failedDeletes.length);
  await waitUntil(() => fleet.deliveries.count >= expected, 60_000, 'all deliveries').catch((error: Error) =>
    log(`${bus} bus: ${error.message} (${fleet.deliveries.count} of ${expected})`),
  );
  await new Promise((r) => setTimeout(r, 250)); // late duplicates
  const wallSeconds = (performance.now() - t0) / 1000;
  const serverCpu = (cpuSecondsOf(server.pid) - cpu0) / wallSeconds;
  const clientUsage = process.cpuUsage(client0);
  const clientCpu = (clientUsage.user + clientUsage.system) / 1e6 / wallSeconds;
  const memory = memoryOf(server.pid); // hwm: the peak since the server started (the kernel's VmHWM)

  const d = fleet.deliveries;
  const fromAt: number[] = [];
  const fromSend: number[] = [];
  for (let slot = 0; slot < d.received.length; slot++) {
    if (!d.received[slot]) continue;
    fromAt.push(d.fromAt[slot] as number);
    fromSend.push(d.fromSend[slot] as number);
  }
  await fleet.close();
  await server.stop();

  const result: Result = {
    bus,
    deliveries: d.count,
    failedDeletes: failedDeletes.length,
    lost: SUBSCRIBERS * (EVENTS - failedDeletes.length) - d.count,
    duplicates: d.duplicates,
    unexpected: d.unexpected,
    errors: d.errors,
    fromAt: stats(fromAt),
    fromSend: stats(fromSend),
    publishSeconds: publishMs / 1000,
    rateAchieved: EVENTS / (publishMs / 1000),
    rssIdle,
    rssSubscribed,
    rssAfter: memory.rss,
    rssPeak: memory.hwm,
    serverCpu,
    clientCpu,
  };
  // `at` is stamped after the delete's transaction: a server too busy to keep up delays the
  // mutations themselves (send→recv grows), which at→recv alone would not show.
  result.keptUp = publishMs <= ((EVENTS - 1) / RATE) * 1000 + KEPT_UP_SLACK_MS;
  if (!result.keptUp)
    log(`${bus} bus: the server did not keep up with ${RATE} deletes/s (publishing took ${(publishMs / 1000).toFixed(1)} s)`);
  result.ok =
    result.keptUp &&
    failedDeletes.length === 0 &&
    result.lost === 0 &&
    result.duplicates === 0 &&
    d.errors.length === 0 &&
    (result.fromAt?.p99 ?? Infinity) < TARGET_P99_MS;
  log(`${bus} bus: ${d.count.toLocaleString('en')} deliveries, p50 ${ms(result.fromAt?.p50)} / p99 ${ms(result.fromAt?.p99)} ms`);
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
// Statistics and the report

interface Stats {
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

function stats(samples: number[]): Stats {
  const sorted = Float64Array.from(samples).sort();
  const at = (p: number) =>
    sorted.length ? (sorted[Math.min(sorted.length, Math.max(1, Math.ceil((p / 100) * sorted.length))) - 1] as number) : Number.NaN;
  return { p50: at(50), p90: at(90), p99: at(99), max: sorted.length ? (sorted[sorted.length - 1] as number) : Number.NaN };
}

const ms = (v: number | undefined) => (v === undefined || Number.isNaN(v) ? '—' : v.toFixed(1));
const mib = (v: number | undefined) => (v === undefined || Number.isNaN(v) ? '—' : `${v.toFixed(0)}`);

function report(results: Result[]): void {
  const header = [
    'bus',
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
    'after',
    'server CPU',
    'client CPU',
    'result',
  ];
  const rows = results.map((r) =>
    r.skipped
      ? [r.bus, `SKIPPED: ${r.skipped}`]
      : [
          r.bus,
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
          mib(r.rssAfter),
          `${((r.serverCpu ?? 0) * 100).toFixed(0)}%`,
          `${((r.clientCpu ?? 0) * 100).toFixed(0)}%`,
          r.ok ? 'PASS' : r.keptUp === false ? 'FAIL (saturated)' : 'FAIL',
        ],
  );
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r.length > 2 || i < 1 ? (r[i] ?? '').length : 0))));
  const line = (cells: string[]) =>
    cells.length === 2 && cells[1]?.startsWith('SKIPPED')
      ? `  ${(cells[0] ?? '').padEnd(widths[0] ?? 0)}  ${cells[1]}`
      : `  ${cells.map((c, i) => (i === 0 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0))).join('  ')}`;
  console.log('');
  console.log(
    `== live cache events: ${SUBSCRIBERS.toLocaleString('en')} graphql-ws subscribers × ${EVENTS.toLocaleString('en')} LORA_DELETED (deleteLora over HTTP at ${RATE}/s, open loop)`,
  );
  console.log(
    `   machine: ${cpus().length} × ${cpus()[0]?.model ?? '?'}, load ${loadAtStart.toFixed(2)} at start, ${(loadavg()[0] ?? 0).toFixed(2)} at end; ` +
      `node ${process.version}; server in a child process, jobs off; clients in the bench process`,
  );
  console.log(
    "   latencies in ms (at→recv: the event's `at`, ms precision, → arrival at the subscriber); memory: the server's VmRSS in MiB",
  );
  console.log(line(header));
  for (const row of rows) console.log(line(row));
  for (const r of results) {
    if (r.skipped) continue;
    if (r.unexpected) console.log(`   ${r.bus}: ${r.unexpected} unexpected events`);
    if (r.errors?.length) console.log(`   ${r.bus}: subscription errors: ${r.errors.join('; ')}`);
    if (r.rssSubscribed !== undefined && r.rssIdle !== undefined) {
      console.log(
        `   ${r.bus}: ~${(((r.rssSubscribed - r.rssIdle) * 1024) / SUBSCRIBERS).toFixed(0)} KiB of server RSS per subscriber; publishing took ${r.publishSeconds?.toFixed(1)} s`,
      );
    }
  }
  if (keepAliveRetries) console.log(`   ${keepAliveRetries} requests were sent again after the server closed their idle keep-alive socket`);
  console.log(
    `   target: p99 (at→recv) < ${TARGET_P99_MS} ms for every bus that ran, no event lost or duplicated, no delete failed, and the server kept up with ${RATE} deletes/s`,
  );
}

// ---------------------------------------------------------------------------------------------

async function main(): Promise<number> {
  const limit = openFileLimit();
  const needed = SUBSCRIBERS + 256;
  if (limit < needed) {
    console.error(
      `open-file limit ${limit} < ${needed} (${SUBSCRIBERS} sockets + headroom): raise it for this shell (ulimit -n ${needed}) or lower BENCH_SUBSCRIBERS`,
    );
    return 2;
  }
  log(
    `live-events benchmark: ${SUBSCRIBERS} subscribers × ${EVENTS} events at ${RATE}/s; buses: ${BUSES.join(', ')}; open files ≤ ${limit}`,
  );
  loadAtStart = loadavg()[0] ?? 0;
  if (loadAtStart > cpus().length / 2) {
    log(
      `WARNING: the machine is busy (load ${loadAtStart.toFixed(2)} on ${cpus().length} CPUs): latencies will be worse than on a quiet machine`,
    );
  }
  const [{ pgHandle, azurite }] = await timed('started embedded PostgreSQL + Azurite', () => startServices());
  await timed('migrated', () => migrate(pgHandle.url));
  const [seeded] = await timed(`seeded ${BUSES.length} × ${EVENTS + 1} LoRAs through the registry`, () =>
    seed(pgHandle.url, azurite.connectionString, BUSES.length),
  );
  const results: Result[] = [];
  for (const [i, bus] of BUSES.entries()) {
    results.push(await run(bus, { databaseUrl: pgHandle.url, storage: azurite.connectionString }, seeded[i] as Seeded));
  }
  report(results);
  const ran = results.filter((r) => !r.skipped);
  return ran.length > 0 && ran.every((r) => r.ok) ? 0 : 1;
}

// ---------------------------------------------------------------------------------------------
// Entry: the benchmark, or with --serve the app in a child process (started by the benchmark)

if (process.argv.includes('--serve')) {
  await serve();
} else {
  if (
    !Number.isInteger(SUBSCRIBERS) ||
    SUBSCRIBERS < 1 ||
    !Number.isInteger(EVENTS) ||
    EVENTS < 1 ||
    !(RATE > 0) ||
    !Number.isInteger(WARMUP) ||
    WARMUP < 0 ||
    !BUSES.every((b) => b === 'memory' || b === 'redis')
  ) {
    console.error('BENCH_SUBSCRIBERS and BENCH_EVENTS must be integers ≥ 1, BENCH_RATE > 0, BENCH_WARMUP ≥ 0, BENCH_BUSES ⊆ memory,redis');
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
  try {
    const url = await app.start();
    process.stdout.write(`${SERVER_READY_PREFIX}${JSON.stringify({ url, pid: process.pid })}\n`);
  } catch (error) {
    console.error('events server: start failed:', error);
    await stop(1);
  }
}
