import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cliEnv, LORA_CACHE_BIN } from '../testkit/agent.ts';
import { mintGrant } from '../testkit/grants.ts';
import { sha256 } from '../testkit/hashes.ts';
import { smallSd15Lora } from '../testkit/safetensors.ts';
import { newUserId, seedLora } from '../testkit/seed.ts';
import { startTestServer, type TestServer } from '../testkit/server.ts';

/**
 * The ComfyUI node package (comfyui/lora_vault_nodes) in a test double of ComfyUI, driven by Python's
 * unittest (test/python) against a real API server and two real `lora-cache start` daemons (TCP and
 * unix socket). The Python suite's output is printed when it fails.
 */

const ROOT = join(import.meta.dirname, '../..');

interface Daemon {
  process: ChildProcess;
  address: string;
  comfyDir: string;
  dbPath: string;
}

async function startDaemon(server: TestServer, extra: Record<string, string>): Promise<Daemon> {
  const comfyDir = await mkdtemp(join(tmpdir(), 'lora-comfy-'));
  const dbPath = join(comfyDir, 'model_cache.db');
  const env = await cliEnv(server, comfyDir, { MODEL_CACHE_DB: dbPath, ...extra });
  const child = spawn(process.execPath, [LORA_CACHE_BIN, 'start'], { env });
  const address = await new Promise<string>((resolve, reject) => {
    let buffered = '';
    const timer = setTimeout(() => reject(new Error(`no start line: ${buffered}`)), 30_000);
    child.stdout.on('data', (d) => {
      buffered += d;
      for (const line of buffered.split('\n')) {
        const parsed = line.startsWith('{') ? (JSON.parse(line) as { msg?: string; address?: string }) : null;
        if (parsed?.msg === 'cache agent started' && parsed.address) {
          clearTimeout(timer);
          resolve(parsed.address);
        }
      }
    });
    child.on('exit', (code) => reject(new Error(`lora-cache exited ${code}: ${buffered}`)));
  });
  return { process: child, address, comfyDir, dbPath };
}

/** A TCP port nothing listens on: "the agent is down". */
async function closedPort(): Promise<number> {
  const probe = createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const { port } = probe.address() as { port: number };
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  return port;
}

async function user(server: TestServer, tags: string[]) {
  const userId = newUserId();
  const loras = [];
  for (const tag of tags) {
    const lora = await seedLora(server.app, userId, { bytes: smallSd15Lora({ ss_output_name: `${tag}-${randomUUID()}` }) });
    loras.push({ id: lora.id, sha256: lora.sha256 });
  }
  return { userId, id: userId, grant: await mintGrant(server, userId), loras };
}

describe('ComfyUI node package against a real agent and API (python3 -m unittest)', () => {
  let server: TestServer;
  let tcp: Daemon;
  let unix: Daemon;

  beforeAll(async () => {
    server = await startTestServer();
    tcp = await startDaemon(server, { AGENT_PORT: '0' });
    const socketDir = await mkdtemp(join(tmpdir(), 'lora-sock-'));
    unix = await startDaemon(server, { AGENT_SOCKET: join(socketDir, 'agent.sock') });
  });

  afterAll(async () => {
    for (const d of [tcp, unix]) d?.process.kill('SIGTERM');
    await server?.stop();
  });

  it('the Python suite passes (user and shared LoRAs, both formats, old shapes, isolation, agent down, leases)', async () => {
    const sharedBytes = smallSd15Lora({ ss_output_name: `shared-${randomUUID()}` });
    const sharedName = `node-test/${randomUUID()}.safetensors`;
    await server.app.blobs.putShared(sharedName, sharedBytes);
    const fixtureDir = await mkdtemp(join(tmpdir(), 'lora-node-fixture-'));
    await mkdir(join(tcp.comfyDir, 'models/loras'), { recursive: true });
    await writeFile(join(fixtureDir, 'shared.safetensors'), sharedBytes);
    const fixture = {
      agentUrl: tcp.address,
      agentSocket: unix.address,
      comfyDir: tcp.comfyDir,
      dbPath: tcp.dbPath,
      socketDbPath: unix.dbPath,
      socketUserLoraDir: join(unix.comfyDir, 'models/lora-vault-users'),
      deadUrl: `http://127.0.0.1:${await closedPort()}`,
      user: await user(server, ['u1', 'u2']),
      other: await user(server, ['v1']),
      shared: { name: sharedName, sha256: sha256(sharedBytes) },
      sharedFile: join(fixtureDir, 'shared.safetensors'),
      apiUrl: server.graphqlUrl,
      serviceToken: await server.tokens.service(),
    };
    await writeFile(join(fixtureDir, 'fixture.json'), JSON.stringify(fixture));
    const result = await new Promise<{ code: number; output: string }>((resolve) => {
      execFile(
        'python3',
        ['-m', 'unittest', 'discover', '-s', 'test/python', '-p', 'test_*.py', '-v'],
        {
          cwd: ROOT,
          env: { PATH: process.env.PATH ?? '', PYTHONDONTWRITEBYTECODE: '1', LORA_VAULT_TEST_FIXTURE: join(fixtureDir, 'fixture.json') },
          timeout: 180_000,
        },
        (error, stdout, stderr) => resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, output: `${stdout}${stderr}` }),
      );
    });
    if (result.code !== 0 || process.env.SHOW_PYTHON_OUTPUT) console.error(result.output);
    expect(result.code, result.output.slice(-4000)).toBe(0);
    expect(result.output).toMatch(/Ran \d+ tests/);
  }, 240_000);

  it('the job endpoints refuse browsers and foreign Host names like the rest of the local interface', async () => {
    const port = Number(new URL(tcp.address).port);
    const post = (path: string, headers: Record<string, string>, body: unknown) =>
      new Promise<{ status: number; code: string }>((resolve, reject) => {
        const req = request(
          { host: '127.0.0.1', port, path, method: 'POST', headers: { 'content-type': 'application/json', ...headers } },
          (res) => {
            let text = '';
            res.on('data', (d) => {
              text += d;
            });
            res.on('end', () =>
              resolve({ status: res.statusCode ?? 0, code: (JSON.parse(text) as { error?: { code: string } }).error?.code ?? '' }),
            );
          },
        );
        req.on('error', reject);
        req.end(JSON.stringify(body));
      });
    const grant = await mintGrant(server, newUserId());
    expect(await post('/jobs', { origin: 'http://127.0.0.1:8188' }, { jobId: 'job-x', grant })).toEqual({
      status: 403,
      code: 'FORBIDDEN_ORIGIN',
    });
    expect(await post('/jobs/job-x/end', { 'sec-fetch-site': 'same-site' }, { grant })).toEqual({ status: 403, code: 'FORBIDDEN_ORIGIN' });
    expect(await post('/node/ensure', { host: 'evil.example' }, { source: 'shared', name: 'x.safetensors' })).toEqual({
      status: 403,
      code: 'FORBIDDEN_HOST',
    });
    expect(await post('/jobs', {}, { jobId: '../x', grant })).toMatchObject({ status: 400, code: 'INVALID_REQUEST' });
    expect(await post('/jobs/%E0/end', {}, { grant })).toMatchObject({ status: 400, code: 'INVALID_REQUEST' }); // not a 500
    // a caller cannot grow /stats with codes of its own through `unreported`: only AGENT_UNAVAILABLE is taken
    const bogus = { source: 'shared', name: 'absent.safetensors', promptId: 'p', instance: 'i', unreported: { MADE_UP_CODE: 5 } };
    await post('/node/ensure', {}, bogus);
    const stats = (await (await fetch(`${tcp.address}/stats`)).json()) as { nodeFailures: Record<string, number> };
    expect(stats.nodeFailures.MADE_UP_CODE).toBeUndefined();
  });
});
