import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { startAzurite } from '../../server/embedded/azurite.ts';
import { type EmbeddedPostgresHandle, startEmbeddedPostgres } from '../../server/embedded/postgres.ts';
import { isRunning } from '../../server/embedded/processes.ts';

/**
 * The other side of the crash restart (issue 10, point 10; THREATS.md row 38; the crash itself is
 * in test/e2e/start.test.ts): a start never signals a process that is not an orphan of ours — a
 * service whose owner still runs is refused, and a pid file naming an unrelated process is ignored.
 */

const dirs: string[] = [];
const stops: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const stop of stops) await stop().catch(() => {});
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'lora-embedded-'));
  await chmod(dir, 0o755); // as root, postgres runs as "postgres" and must reach it
  dirs.push(dir);
  return dir;
}

async function answers(handle: EmbeddedPostgresHandle): Promise<boolean> {
  const client = new pg.Client({ connectionString: handle.url });
  await client.connect();
  try {
    return (await client.query('SELECT 1 AS one')).rows[0]?.one === 1;
  } finally {
    await client.end();
  }
}

describe('embedded services on a data dir that is in use', () => {
  it('a second PostgreSQL start on a cluster whose owner still runs is refused, and the running one is untouched', async () => {
    const dataDir = join(await tempDir(), 'postgres');
    const first = await startEmbeddedPostgres({ dataDir });
    stops.push(first.stop);
    await expect(startEmbeddedPostgres({ dataDir })).rejects.toThrow(/another server using the same data directory/);
    expect(await answers(first)).toBe(true);
    await first.stop();
  }, 120_000);

  it('a second Azurite start on a workspace whose owner still runs is refused, and the running one is untouched', async () => {
    const dataDir = join(await tempDir(), 'azurite');
    const first = await startAzurite({ dataDir });
    stops.push(first.stop);
    await expect(startAzurite({ dataDir })).rejects.toThrow(/another server using the same data directory/);
    expect((await fetch(`http://127.0.0.1:${first.port}/devstoreaccount1?comp=list`)).status).toBeLessThan(500);
    await first.stop();
  }, 60_000);

  it('a postmaster.pid naming an unrelated live process: that process is left alone and PostgreSQL starts', async () => {
    const dataDir = join(await tempDir(), 'postgres');
    const first = await startEmbeddedPostgres({ dataDir });
    await first.stop();
    const stranger = spawn('sleep', ['60'], { stdio: 'ignore' });
    stops.push(async () => {
      stranger.kill('SIGKILL');
    });
    const pid = stranger.pid ?? 0;
    await writeFile(join(dataDir, 'postmaster.pid'), `${pid}\n${dataDir}\n0\n5432\n\n127.0.0.1\n0 0\nready\n`);
    const second = await startEmbeddedPostgres({ dataDir });
    stops.push(second.stop);
    expect(await answers(second)).toBe(true);
    expect(await isRunning(pid)).toBe(true);
    await second.stop();
    stranger.kill('SIGKILL');
    await once(stranger, 'exit');
  }, 120_000);
});
