import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

/**
 * The README's promise: `npm start` with no configuration starts PostgreSQL and Azurite itself,
 * prints GraphiQL's URL and working tokens, stops everything on Ctrl-C, and finds its data again.
 */

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const dirs: string[] = [];
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

interface Started {
  child: ChildProcess;
  url: string;
  tokens: Record<string, string>;
  output: () => string;
}

async function startServer(dataDir: string): Promise<Started> {
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '',
    HOME: process.env.HOME ?? '/root',
    DATA_DIR: dataDir,
    PORT: '0',
    LOG_LEVEL: 'warn',
  };
  const child = spawn(process.execPath, ['--import', 'tsx', 'server/main.ts'], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout?.on('data', (d: Buffer) => {
    out += d.toString();
  });
  child.stderr?.on('data', (d: Buffer) => {
    out += d.toString();
  });
  const deadline = Date.now() + 90_000; // initdb and a cold tsx on a loaded 2-core machine
  while (!/service: \S+/.test(out)) {
    if (child.exitCode !== null) throw new Error(`server exited early:\n${out}`);
    if (Date.now() > deadline) throw new Error(`no banner within 90 s:\n${out}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  const url = /GraphiQL: (\S+)/.exec(out)?.[1] ?? '';
  const token = (label: string) => new RegExp(`${label}[^:]*:\\s+(\\S+)`).exec(out)?.[1] ?? '';
  return {
    child,
    url,
    tokens: { user: token('user '), admin: token('admin'), machine: token('machine'), service: token('service') },
    output: () => out,
  };
}

async function gql(url: string, token: string, query: string) {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify({ query }),
  });
  return (await res.json()) as { data?: any; errors?: unknown[] };
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = execFileSync('ps', ['-o', 'stat=', '-p', String(pid)], { encoding: 'utf8' }).trim();
    return stat !== '' && !stat.startsWith('Z'); // a zombie has exited
  } catch {
    return false; // ps exits 1 when the pid is gone
  }
}

function childrenOf(pid: number): string {
  try {
    return execFileSync('ps', ['-o', 'pid=,args=', '--ppid', String(pid)])
      .toString()
      .trim();
  } catch {
    return '';
  }
}

describe('npm start on embedded defaults', () => {
  it('serves GraphiQL and answers tokens it printed; Ctrl-C stops everything; data survives a restart', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'lora-vault-start-'));
    await chmod(dataDir, 0o755);
    dirs.push(dataDir);

    const first = await startServer(dataDir);
    expect(first.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/graphql$/);
    const page = await fetch(first.url, { headers: { accept: 'text/html' } });
    expect(page.status).toBe(200);
    const html = await page.text();
    expect(html).toMatch(/graphiql/i);
    expect(html).not.toMatch(/<(script|link)[^>]+(src|href)="https?:\/\//); // bundled: works offline

    const list = await gql(first.url, first.tokens.user ?? '', '{ loras { total loras { id } } }');
    expect(list).toEqual({ data: { loras: { total: 0, loras: [] } } });
    const userId = '00000000-0000-4000-8000-000000000001';
    const set = await gql(
      first.url,
      first.tokens.admin ?? '',
      `mutation { setUserLoraQuota(userId: "${userId}", maxLoraCount: 7) { maxLoraCount } }`,
    );
    expect(set).toEqual({ data: { setUserLoraQuota: { maxLoraCount: 7 } } });
    expect(childrenOf(first.child.pid ?? 0)).toMatch(/azurite/);

    first.child.kill('SIGINT');
    const [code] = await once(first.child, 'exit');
    expect(code).toBe(0);
    expect(execFileSync('ps', ['-eo', 'args']).toString()).not.toContain(dataDir);

    const second = await startServer(dataDir);
    try {
      const quota = await gql(second.url, second.tokens.user ?? '', '{ loraQuota { maxLoraCount } }');
      expect(quota).toEqual({ data: { loraQuota: { maxLoraCount: 7 } } });
    } finally {
      second.child.kill('SIGINT');
      await once(second.child, 'exit');
    }
  }, 120_000);

  it('after the server alone is SIGKILLed, the next start stops its orphaned PostgreSQL and Azurite and serves the same data', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'lora-vault-crash-'));
    await chmod(dataDir, 0o755);
    dirs.push(dataDir);
    const userId = '00000000-0000-4000-8000-000000000001';

    const first = await startServer(dataDir);
    const set = await gql(
      first.url,
      first.tokens.admin ?? '',
      `mutation { setUserLoraQuota(userId: "${userId}", maxLoraCount: 9) { maxLoraCount } }`,
    );
    expect(set).toEqual({ data: { setUserLoraQuota: { maxLoraCount: 9 } } });
    const postmaster = childrenOf(first.child.pid ?? 0)
      .split('\n')
      .find((line) => line.includes(join(dataDir, 'postgres')));
    expect(postmaster).toBeDefined();
    const postmasterPid = Number(postmaster?.trim().split(/\s+/)[0]);

    first.child.kill('SIGKILL'); // the server process alone: its children are orphaned, not signalled
    await once(first.child, 'exit');
    expect(isAlive(postmasterPid)).toBe(true); // the orphan the next start must deal with

    const second = await startServer(dataDir);
    try {
      const quota = await gql(second.url, second.tokens.user ?? '', '{ loraQuota { maxLoraCount } }');
      expect(quota).toEqual({ data: { loraQuota: { maxLoraCount: 9 } } });
      expect(isAlive(postmasterPid)).toBe(false);
    } finally {
      second.child.kill('SIGINT');
      await once(second.child, 'exit');
    }
    // nothing of either run is left: no orphan PostgreSQL or Azurite on this data dir
    expect(execFileSync('ps', ['-eo', 'args']).toString()).not.toContain(dataDir);
  }, 180_000);
});
