import { execFile, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cliEnv, LORA_CACHE_BIN, userWithLoras } from '../testkit/agent.ts';
import { signGrant } from '../testkit/jwt.ts';
import { startTestServer, type TestServer } from '../testkit/server.ts';

/** `lora-cache` as operators run it: the published bin in a process of its own. */

const run = promisify(execFile);

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer();
});
afterAll(async () => {
  await server?.stop();
});

async function cli(args: string[], env: Record<string, string>): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [LORA_CACHE_BIN, ...args], {
      env: { PATH: process.env.PATH ?? '', ...env },
      timeout: 60_000,
    });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

describe('lora-cache CLI', () => {
  it('ensure, prefetch, stats, evict --dry-run and verify on one ComfyUI folder', async () => {
    const comfy = await mkdtemp(join(tmpdir(), 'lora-cli-'));
    const env = await cliEnv(server, comfy);
    const { grant, loras } = await userWithLoras(server, [30_000, 20_000]);

    const ensured = await cli(['ensure', loras[0]!.id, '--grant', grant], env);
    expect(ensured.code).toBe(0);
    const result = JSON.parse(ensured.stdout) as { path: string; hit: boolean; sizeBytes: number };
    expect(result).toMatchObject({ hit: false, sizeBytes: 30_000 });
    expect(existsSync(result.path)).toBe(true);
    expect(JSON.parse((await cli(['ensure', loras[0]!.id], { ...env, LORA_GRANT: grant })).stdout).hit).toBe(true);

    const workflowFile = join(comfy, 'workflow.json');
    writeFileSync(
      workflowFile,
      JSON.stringify({
        '14': { class_type: 'EmProps_Lora_Loader', inputs: { lora_source: 'user', lora_identifier: loras[1]!.id, strength_model: 1 } },
      }),
    );
    const prefetched = await cli(['prefetch', workflowFile, '--grant', grant], env);
    expect(prefetched.code).toBe(0);
    expect(JSON.parse(prefetched.stdout).items[0].result.loraId).toBe(loras[1]!.id);

    const stats = JSON.parse((await cli(['stats'], env)).stdout);
    expect(stats).toMatchObject({ userLoraCount: 2, totalLoraCacheBytes: 50_000 });
    const tinyLimits = { ...env, LORA_CACHE_MAX_GB: String(25_000 / 1024 ** 3), LORA_MAX_AGE_DAYS: '0.000001' };
    const plan = JSON.parse((await cli(['evict', '--dry-run'], tinyLimits)).stdout);
    expect(plan.dryRun).toBe(true);
    expect(plan.age.victims).toHaveLength(2); // both older than ~0.1 s: planned, not executed
    expect(plan.overCap.victims).toEqual([result.path]); // 50,000 bytes over a 25,000-byte cap: the LRU 30,000 is enough
    expect(existsSync(result.path)).toBe(true); // nothing executed

    expect((await cli(['verify'], env)).code).toBe(0);
    writeFileSync(result.path, Buffer.alloc(30_000, 1)); // same size, different bytes
    const verify = await cli(['verify'], env);
    expect(verify.code).toBe(1);
    expect(JSON.parse(verify.stdout).corrupt).toEqual([result.path]);
    expect(existsSync(result.path)).toBe(false);
  }, 90_000); // eight CLI processes in turn, each compiling TypeScript with tsx: ~30 s on a busy 2-core machine

  it('start runs the daemon (local interface up, JSON logs) and stops cleanly on SIGTERM', async () => {
    const comfy = await mkdtemp(join(tmpdir(), 'lora-daemon-'));
    const daemon = spawn(process.execPath, [LORA_CACHE_BIN, 'start'], { env: await cliEnv(server, comfy, { AGENT_PORT: '0' }) });
    const exited = new Promise<number | null>((resolve) => daemon.on('exit', resolve));
    const address = await new Promise<string>((resolve, reject) => {
      let buffered = '';
      daemon.stdout.on('data', (d) => {
        buffered += d;
        for (const line of buffered.split('\n')) {
          const parsed = line.startsWith('{') ? (JSON.parse(line) as { msg?: string; address?: string }) : null;
          if (parsed?.msg === 'cache agent started' && parsed.address) resolve(parsed.address);
        }
      });
      setTimeout(() => reject(new Error(`no start line: ${buffered}`)), 20_000);
    });
    const health = (await (await fetch(`${address}/health`)).json()) as { ok: boolean };
    expect(health.ok).toBe(true);
    const { grant, loras } = await userWithLoras(server, [10_000]);
    const ensured = await fetch(`${address}/ensure`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ source: 'user', id: loras[0]!.id, grant }),
    });
    expect(ensured.status).toBe(200);
    daemon.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(existsSync(join(comfy, 'models/lora-vault-users/.tmp'))).toBe(true);
    expect(readdirSync(join(comfy, 'models/lora-vault-users/.tmp')).filter((d) => d !== 'locks')).toEqual([]); // its temp folder removed
  });

  it('on a terminal, ensure draws a progress bar (a real pseudo-terminal via script(1))', async () => {
    const comfy = await mkdtemp(join(tmpdir(), 'lora-tty-'));
    const { grant, loras } = await userWithLoras(server, [3 * 1024 * 1024]);
    const command = `'${process.execPath}' '${LORA_CACHE_BIN}' ensure ${loras[0]!.id} --grant ${grant}`;
    const { stdout } = await run('script', ['-qec', command, '/dev/null'], { env: await cliEnv(server, comfy), timeout: 60_000 });
    expect(stdout).toMatch(/[█░]+ 100% \| 3\.1\/3\.1 MB/); // stderr is the terminal: the bar reached the end
    expect(stdout).toContain('"hit": false');
  });

  it('bad configuration and bad input: every problem listed, typed codes, non-zero exit', async () => {
    const bad = await cli(['stats'], { LORA_CACHE_MAX_GB: 'lots', AGENT_PORT: '99999' });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('LORA_CACHE_MAX_GB');
    expect(bad.stderr).toContain('AGENT_PORT');

    const comfy = await mkdtemp(join(tmpdir(), 'lora-cli-'));
    const noIndex = await cli(['stats'], { COMFYUI_DIR: comfy });
    expect(noIndex.code).toBe(2);
    expect(noIndex.stderr).toContain('model_cache.db does not exist yet');
    expect(existsSync(join(comfy, 'custom_nodes'))).toBe(false); // another package's folder is never created
    // no API configured: a well-formed grant cannot be verified (no keys), a garbage one is refused as such
    const offline = await cli(['ensure', '123', '--grant', await signGrant({ userId: randomUUID() })], {
      COMFYUI_DIR: comfy,
      MODEL_CACHE_DB_CREATE: 'true',
    });
    expect(offline.code).toBe(2);
    expect(offline.stderr).toContain('API_UNAVAILABLE');
    const garbage = await cli(['ensure', '123', '--grant', 'x.eyJzdWIiOiJhIiwiZXhwIjo5OTk5OTk5OTk5fQ.y'], {
      COMFYUI_DIR: comfy,
      MODEL_CACHE_DB_CREATE: 'true',
    });
    expect(garbage.code).toBe(2);
    expect(garbage.stderr).toContain('INVALID_GRANT');
    const badWorkflow = await cli(['prefetch', join(comfy, 'missing.json')], { COMFYUI_DIR: comfy, MODEL_CACHE_DB_CREATE: 'true' });
    expect(badWorkflow.stderr).toContain('INVALID_WORKFLOW');
  });
});
