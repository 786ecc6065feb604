/**
 * `npm run bench:node` — the ComfyUI node's resolve of a cached LoRA through the cache agent, as the
 * node does it in a job (comfyui/lora_vault_nodes, loaded into the ComfyUI test double): one
 * `POST /node/ensure` per call (a fresh connection, the job found by prompt id, a lease taken for the
 * job), over TCP and over the unix socket, beside a bare `os.stat` of the same file in the same
 * Python process. Real parts: embedded PostgreSQL + Azurite, the API server in a child process, two
 * `lora-cache start` daemons. Target: p99 < 5 ms on both transports. Exits 1 when missed.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { createLoraClient } from '../sdk/index.ts';
import { signToken } from '../server/auth/tokens.ts';
import { writeSafetensorsFile } from './files.ts';
import { benchTempDir, log, onCleanup, runBench, serverChildEnv, startServerChild, startServices, timed } from './harness.ts';

const CALLS = Number(process.env.BENCH_NODE_CALLS ?? 2000);
const WARMUP = 200;
const BLOCK = 250;
const TARGET_P99_MS = 5;
const JWT_SECRET = 'bench-node-secret-bench-node-secret-0123456789';
const ROOT = join(import.meta.dirname, '..');
const BIN = join(ROOT, 'cache-agent/bin/lora-cache.mjs');

const f3 = (n: number) => n.toFixed(3);
const f1 = (n: number) => n.toFixed(1);

/** Nearest-rank percentile (p in 0..100). */
function percentile(samples: number[], p: number): number {
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] ?? Number.NaN;
}

async function startAgent(env: Record<string, string>, name: string): Promise<string> {
  const child: ChildProcess = spawn(process.execPath, [BIN, 'start'], { env, stdio: ['ignore', 'pipe', 'inherit'] });
  onCleanup(`agent ${name}`, async () => {
    if (child.exitCode === null) {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
    }
  });
  return new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`agent ${name} did not start`)), 60_000);
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => {
      if (!line.startsWith('{')) return;
      const parsed = JSON.parse(line) as { msg?: string; address?: string; level?: number };
      if (parsed.msg === 'cache agent started' && parsed.address) {
        clearTimeout(timer);
        resolve(parsed.address);
      } else if ((parsed.level ?? 0) >= 40) console.error(`[agent ${name}] ${line}`);
    });
    child.once('exit', (code) => reject(new Error(`agent ${name} exited ${code}`)));
  });
}

async function agentCall(address: string, path: string, body: unknown): Promise<unknown> {
  const socket = address.startsWith('/') ? address : undefined;
  const url = socket ? `http://localhost${path}` : `${address}${path}`;
  const { request } = await import('node:http');
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'POST', socketPath: socket, headers: { 'content-type': 'application/json' } }, (res) => {
      let text = '';
      res.on('data', (d) => {
        text += d;
      });
      res.on('end', () =>
        (res.statusCode ?? 500) < 300 ? resolve(JSON.parse(text)) : reject(new Error(`${path}: ${res.statusCode} ${text}`)),
      );
    });
    req.on('error', reject);
    req.end(JSON.stringify(body));
  });
}

async function main(): Promise<number> {
  log(`lora-vault node benchmark: resolve of a cached LoRA through the agent (TCP, unix socket) vs os.stat, ${CALLS} calls each`);
  log(
    `machine: ${cpus().length} × ${cpus()[0]?.model ?? '?'}, load ${loadavg()
      .map((l) => l.toFixed(2))
      .join(' / ')}`,
  );
  const dir = await benchTempDir();
  const [{ pgHandle, azurite }] = await timed('started embedded PostgreSQL + Azurite', () => startServices());
  const env = serverChildEnv(dir, { pgHandle, azurite }, JWT_SECRET);
  const [server] = await timed('API server started (child process)', () => startServerChild(env));
  const graphqlUrl = `${server.url}/graphql`;
  const userId = randomUUID();
  const user = createLoraClient({ url: graphqlUrl, token: await signToken(JWT_SECRET, { role: 'user', sub: userId }), retry: false });
  const service = createLoraClient({ url: graphqlUrl, token: await signToken(JWT_SECRET, { role: 'service', sub: 'bench-runner' }) });
  onCleanup('SDK clients', async () => {
    await user.close();
    await service.close();
  });
  const file = await writeSafetensorsFile(join(dir, 'node.safetensors'), 4 * 1024 * 1024);
  const { lora } = await user.uploadLora({ file: { path: file.path, fileName: 'node.safetensors' }, name: 'node', tags: ['bench'] });
  const jobId = `bench-${randomUUID()}`;
  const { token: grant } = await service.createJobGrant({ userId, jobId, ttlSeconds: 3600 });

  const agentEnv = async (comfyDir: string, extra: Record<string, string>) => {
    await mkdir(comfyDir, { recursive: true });
    return {
      PATH: process.env.PATH ?? '',
      LORA_VAULT_URL: graphqlUrl,
      LORA_VAULT_TOKEN: await signToken(JWT_SECRET, { role: 'machine', sub: 'bench-node', machineId: 'bench-node' }),
      COMFYUI_DIR: comfyDir,
      MODEL_CACHE_DB: join(comfyDir, 'model_cache.db'),
      MODEL_CACHE_DB_CREATE: 'true', // no Python nodes here to create it
      MIN_FREE_SPACE_GB: '0',
      STATS_INTERVAL_SECONDS: '0',
      LOG_LEVEL: 'info',
      ...extra,
    };
  };
  const comfyDir = join(dir, 'comfy');
  const tcp = await startAgent(await agentEnv(comfyDir, { AGENT_PORT: '0' }), 'tcp');
  const socketDir = join(dir, 'comfy-socket');
  const socket = join(dir, 'agent.sock');
  const unix = await startAgent(await agentEnv(socketDir, { AGENT_SOCKET: socket }), 'unix');
  const transports = [];
  for (const [name, address] of [
    ['tcp', tcp],
    ['unix', unix],
  ] as const) {
    const promptId = randomUUID();
    const workflow = { '1': { class_type: 'LoraVault_Lora_Loader', inputs: { lora_source: 'user', lora_identifier: lora.id } } };
    await agentCall(address, '/jobs', { jobId: `${jobId}-${name}`, grant, promptId, instance: 'bench', workflow }); // downloads it: cached
    onCleanup(`job ${name}`, async () => void (await agentCall(address, `/jobs/${jobId}-${name}/end`, { grant })));
    transports.push(name === 'tcp' ? { name, url: address, promptId } : { name, socket: address, promptId });
  }
  const fixture = join(dir, 'bench-node.json');
  await writeFile(fixture, JSON.stringify({ comfyDir, transports, loraId: lora.id, calls: CALLS, warmup: WARMUP, block: BLOCK }));
  log(`timing ${CALLS} resolves per transport and ${CALLS} os.stat (after ${WARMUP} warm-up each), blocks of ${BLOCK}`);
  const out = await new Promise<string>((resolve, reject) =>
    execFile(
      'python3',
      [join(ROOT, 'bench/node_resolve.py')],
      { env: { ...process.env, BENCH_NODE_FIXTURE: fixture }, maxBuffer: 64 << 20 },
      (e, so, se) => (e ? reject(new Error(`${e.message}\n${se}`)) : resolve(so)),
    ),
  );
  const { samples } = JSON.parse(out.trim().split('\n').pop() ?? '{}') as { samples: Record<string, number[]> };
  const stat = samples.stat ?? [];
  const statP50 = percentile(stat, 50);
  const statP99 = percentile(stat, 99);
  log(`baseline os.stat: p50 ${f3(statP50)} ms, p99 ${f3(statP99)} ms`);
  let ok = true;
  for (const name of ['tcp', 'unix']) {
    const s = samples[name] ?? [];
    const p50 = percentile(s, 50);
    const p99 = percentile(s, 99);
    const h = samples[`${name}-health`] ?? [];
    const pass = s.length === CALLS && p99 < TARGET_P99_MS;
    ok &&= pass;
    log(
      `node resolve over ${name} (${s.length}): p50 ${f3(p50)} ms, p99 ${f3(p99)} ms, max ${f3(Math.max(...s))} ms │ ratio to os.stat p50 ${f1(p50 / statP50)}×, p99 ${f1(p99 / statP99)}× │ target p99 < ${TARGET_P99_MS} ms: ${pass ? 'PASS' : 'FAIL'}`,
    );
    log(`  floor: GET /health over ${name} with the same client: p50 ${f3(percentile(h, 50))} ms, p99 ${f3(percentile(h, 99))} ms`);
  }
  const load = loadavg()[0] ?? 0;
  if (load > cpus().length)
    log(`WARNING: load ${load.toFixed(2)} on ${cpus().length} CPUs during the run: tail latencies are the scheduler's`);
  log(`RESULT: ${ok ? 'PASS' : 'FAIL'}`);
  return ok ? 0 : 1;
}

void runBench(main);
