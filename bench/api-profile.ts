/**
 * `npm run bench:api:profile` — where the server's CPU goes on the `loras` list request (issue 16 §2).
 *
 * The app runs in this process; the client (keep-alive node:http, one socket, the same document as
 * bench:api) runs in a child process, so this process's CPU time is the server's: HTTP, Yoga and its
 * plugins, execution, pg, JSON. After a warm-up, per case: PROFILE_REQUESTS requests timed by
 * `process.cpuUsage()` (CPU time, so a loaded machine inflates it far less than wall time), the
 * same figure for the raw SQL page query over a pg.Pool in this process (the pg share of the cost),
 * then PROFILE_REQUESTS more under the V8 profiler.
 *
 * Prints: µs of server CPU per request (GraphQL vs SQL), self time summed by package/module and the
 * top functions by self time (sampled wall time: under load it includes time preempted); writes the
 * .cpuprofile files (open them in Chrome DevTools).
 * Knobs: BENCH_SCALE (default 0.05: 50,000 flat_file rows; the server's CPU per page does not depend
 * on it), PROFILE_REQUESTS (default 2000 per case), PROFILE_OUT (directory of the .cpuprofile files,
 * default the OS temp dir), PROFILE_TELEMETRY=1 (after the cases, the default case again with the
 * OpenTelemetry SDK on as bench:api's telemetry section starts it — every span sampled and exported
 * over OTLP/HTTP to a sink in a child process — so the two profiles show what telemetry adds),
 * PROFILE_CASES (comma-separated case keys to profile, default all: `default,name,search`).
 */
import { spawn } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { Session } from 'node:inspector/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import pg from 'pg';
import { buildApp } from '../server/app.ts';
import { signToken } from '../server/auth/tokens.ts';
import { migrate } from '../server/db/migrate.ts';
import { startTelemetry } from '../server/telemetry/sdk.ts';
import { CASES, JWT_SECRET, LIST_QUERY, listBenchConfig, seed, sqlParams, userUuid } from './api-list-data.ts';
import { log, onCleanup, runBench, startServices, timed } from './harness.ts';
import { switchTelemetryOn } from './telemetry-overhead.ts';

const SCALE = Number(process.env.BENCH_SCALE ?? '0.05');
const REQUESTS = Number(process.env.PROFILE_REQUESTS ?? '2000');
const WARMUP = 1000; // per case
const BATCH = 200;
const TELEMETRY = process.env.PROFILE_TELEMETRY === '1';
const ONLY = process.env.PROFILE_CASES?.split(','); // e.g. `default` (keys of api-list-data.ts's CASES)

/** This process's CPU time (user + system) per request over REQUESTS requests sent in batches. */
async function cpuPerRequest(run: (n: number) => Promise<void>): Promise<{ least: number; median: number; wall: number; system: number }> {
  const perBatch: number[] = [];
  let system = 0;
  const t0 = performance.now();
  for (let done = 0; done < REQUESTS; done += BATCH) {
    const cpu = process.cpuUsage();
    await run(BATCH);
    const used = process.cpuUsage(cpu);
    perBatch.push((used.user + used.system) / BATCH);
    system += used.system;
  }
  const wall = ((performance.now() - t0) * 1000) / REQUESTS;
  perBatch.sort((a, b) => a - b);
  return {
    least: perBatch[0] ?? Number.NaN,
    median: perBatch[Math.floor(perBatch.length / 2)] ?? Number.NaN,
    wall,
    system: system / REQUESTS,
  };
}

/** The client process: `n` sequential POSTs of `body` over one keep-alive socket; checks every answer. */
const CLIENT = `
const http = require('node:http');
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
function post(url, headers, body) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: 'POST', agent, headers: { ...headers, 'content-length': Buffer.byteLength(body) } }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, text: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}
process.on('message', async ({ url, headers, body, n }) => {
  try {
    for (let i = 0; i < n; i++) {
      const res = await post(url, headers, body);
      if (res.status !== 200 || res.text.includes('"errors"')) throw new Error(res.status + ' ' + res.text.slice(0, 300));
    }
    process.send({ ok: true });
  } catch (error) {
    process.send({ ok: false, error: String(error && error.stack || error) });
  }
});
`;

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

/** Self time per function and per package, in µs per request. */
function summarise(profile: CpuProfile, requests: number): string[] {
  const self = new Map<number, number>();
  for (let i = 0; i < profile.samples.length; i++) {
    const id = profile.samples[i] as number;
    self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0));
  }
  const byFunction = new Map<string, number>();
  const byModule = new Map<string, number>();
  for (const node of profile.nodes) {
    const t = self.get(node.id) ?? 0;
    if (!t) continue;
    const { functionName, url, lineNumber } = node.callFrame;
    const file = url.replace(/^file:\/\//, '').replace(process.cwd(), '.');
    const fn = `${functionName || '(anonymous)'} ${file ? `${file.split('/node_modules/').pop()}:${lineNumber + 1}` : ''}`;
    byFunction.set(fn, (byFunction.get(fn) ?? 0) + t);
    byModule.set(moduleOf(file, functionName), (byModule.get(moduleOf(file, functionName)) ?? 0) + t);
  }
  const top = (m: Map<string, number>, n: number) =>
    [...m.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, n)
      .map(([k, v]) => `  ${(v / requests).toFixed(1).padStart(7)} µs  ${k}`);
  return ['self time by package / module (µs per request):', ...top(byModule, 25), 'top functions by self time:', ...top(byFunction, 40)];
}

function moduleOf(file: string, functionName: string): string {
  if (!file) return `(${functionName || 'native'})`;
  const nm = file.lastIndexOf('/node_modules/');
  if (nm >= 0) {
    const parts = file.slice(nm + '/node_modules/'.length).split('/');
    return parts[0]?.startsWith('@') ? `${parts[0]}/${parts[1]}` : (parts[0] ?? file);
  }
  if (file.startsWith('node:')) return file;
  return file;
}

async function main(): Promise<number> {
  const { pgHandle, azurite } = await startServices();
  await migrate(pgHandle.url);
  await seed(pgHandle.url, Math.round(1_000_000 * SCALE));
  const app = buildApp(listBenchConfig(pgHandle.url, azurite.connectionString));
  onCleanup('app', () => app.stop());
  const url = `${await app.start()}/graphql`;
  const bigUser = userUuid(0);
  const headers = {
    'content-type': 'application/json',
    authorization: `Bearer ${await signToken(JWT_SECRET, { role: 'user', sub: bigUser })}`,
  };

  const client = spawn(process.execPath, ['-e', CLIENT], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  onCleanup('client process', async () => void client.kill());
  const send = (body: string, n: number) =>
    new Promise<void>((resolve, reject) => {
      client.once('message', (m: { ok: boolean; error?: string }) => (m.ok ? resolve() : reject(new Error(m.error))));
      client.send({ url, headers, body, n });
    });

  const pool = new pg.Pool({ connectionString: pgHandle.url, max: 1 });
  onCleanup('pg pool', () => pool.end());
  const session = new Session();
  session.connect();
  await session.post('Profiler.enable');
  await session.post('Profiler.setSamplingInterval', { interval: 100 });

  const bodyOf = (c: (typeof CASES)[number]) =>
    JSON.stringify({ query: LIST_QUERY, variables: { limit: 50, sort: c.sort, order: c.order, search: c.search } });
  // every case warmed up before any is measured (the first one measured otherwise pays for the JIT)
  for (const c of CASES) {
    await send(bodyOf(c), WARMUP);
    for (let i = 0; i < WARMUP; i++) await pool.query(c.sql, sqlParams(c, bigUser));
  }
  const out: string[] = [];
  /** One case: CPU per request (GraphQL vs the raw SQL page), then a profile of REQUESTS more. */
  const profileCase = async (c: (typeof CASES)[number], label: string, key: string) => {
    const body = bodyOf(c);
    const params = sqlParams(c, bigUser);

    // CPU per request, in batches: the least and the median batch (a loaded machine inflates some batches)
    const sqlCpu = await cpuPerRequest(async (n) => {
      for (let i = 0; i < n; i++) await pool.query(c.sql, params);
    });
    const gqlCpu = await cpuPerRequest((n) => send(body, n));
    await session.post('Profiler.start');
    await send(body, REQUESTS);
    const { profile } = (await session.post('Profiler.stop')) as unknown as { profile: CpuProfile };
    const dir = process.env.PROFILE_OUT ?? tmpdir();
    await mkdir(dir, { recursive: true });
    const file = join(dir, `api-list-${key}.cpuprofile`);
    await writeFile(file, JSON.stringify(profile));
    out.push(
      '',
      `=== ${label}: ${REQUESTS} requests in batches of ${BATCH} — server CPU per request: least batch ${gqlCpu.least.toFixed(1)} µs, ` +
        `median ${gqlCpu.median.toFixed(1)} µs (kernel ${gqlCpu.system.toFixed(1)} µs of it on average; wall ${gqlCpu.wall.toFixed(1)} µs); raw SQL page over pg in this process: ` +
        `least ${sqlCpu.least.toFixed(1)} µs, median ${sqlCpu.median.toFixed(1)} µs (wall ${sqlCpu.wall.toFixed(1)} µs)`,
      `profile: ${file}`,
      ...summarise(profile, REQUESTS),
    );
    return gqlCpu;
  };
  const offCpu: Record<string, Awaited<ReturnType<typeof cpuPerRequest>>> = {};
  for (const c of CASES.filter((c) => !ONLY || ONLY.includes(c.key))) offCpu[c.key] = await profileCase(c, c.label, c.key);
  if (TELEMETRY) {
    const c = CASES[0] as (typeof CASES)[number];
    const sink = await switchTelemetryOn(() => startTelemetry({ serviceName: 'lora-vault-bench', otlp: { traces: true, metrics: true } }));
    await send(bodyOf(c), WARMUP);
    const on = await profileCase(c, `${c.label}, telemetry ON`, `${c.key}-telemetry`);
    const off = offCpu[c.key] as Awaited<ReturnType<typeof cpuPerRequest>>;
    await new Promise((r) => setTimeout(r, 6000)); // the batch span processor's delay
    const exported = await sink.stats();
    out.push(
      '',
      `=== telemetry (${c.label}): server CPU per request off least ${off.least.toFixed(1)} / median ${off.median.toFixed(1)} µs, ` +
        `on least ${on.least.toFixed(1)} / median ${on.median.toFixed(1)} µs: +${(on.median - off.median).toFixed(1)} µs (median), ` +
        `on ÷ off ${(on.median / off.median).toFixed(3)}; wall per request off ${off.wall.toFixed(1)} µs, on ${on.wall.toFixed(1)} µs; ` +
        `the sink got ${exported.requests} OTLP requests, ${(exported.bytes / 1e6).toFixed(1)} MB`,
    );
  }
  session.disconnect();
  console.log(out.join('\n'));
  return 0;
}

await runBench(async () => {
  const [code] = await timed('profile', main);
  log('done');
  return code;
});
