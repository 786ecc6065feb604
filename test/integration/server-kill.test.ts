import { type ChildProcess, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLoraClient } from '@lora-vault/sdk';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { writeSafetensorsFile } from '../../bench/files.ts';
import { migrate } from '../../server/db/migrate.ts';
import { blobsOf } from '../testkit/invariants.ts';
import { isolatedDatabase } from '../testkit/library-helpers.ts';
import { newUserId } from '../testkit/seed.ts';
import { startTestServer, TEST_JWT_SECRET, type TestServer } from '../testkit/server.ts';

/**
 * THREATS rows 13–14 with a real crash: the API server process is SIGKILLed while a 48 MiB upload
 * streams through it (blocks already staged in Azurite). Nothing half-made is ever visible, and
 * the reconciler of the next server clears the leftovers and releases the quota reservation.
 * Own database and container, so the short staleness window touches no other suite.
 */

const ROOT = join(import.meta.dirname, '../..');
const MiB = 1024 * 1024;
let db: Awaited<ReturnType<typeof isolatedDatabase>>;
const container = `kill-${randomUUID().slice(0, 8)}`;
const children: ChildProcess[] = [];
let after: TestServer | undefined;

beforeAll(async () => {
  db = await isolatedDatabase();
  await migrate(db.url);
});
afterAll(async () => {
  for (const c of children) c.kill('SIGKILL');
  await after?.app.blobs.clientsForTests().loras.deleteIfExists();
  await after?.stop();
  await db?.drop();
});

async function startServerProcess(): Promise<{ child: ChildProcess; graphqlUrl: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'server/main.ts'], {
    cwd: ROOT,
    env: {
      PATH: process.env.PATH ?? '',
      HOME: process.env.HOME ?? '/root',
      NODE_ENV: 'test',
      PORT: '0',
      DATA_DIR: await mkdtemp(join(tmpdir(), 'lora-kill-data-')),
      DATABASE_URL: db.url,
      AZURE_STORAGE_CONNECTION_STRING: inject('storageConnectionString'),
      LORA_CONTAINER: container,
      JWT_SECRET: TEST_JWT_SECRET,
      LOG_LEVEL: 'info',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  let out = '';
  child.stderr?.on('data', (d) => (out += d));
  const graphqlUrl = await new Promise<string>((resolve, reject) => {
    child.stdout?.on('data', (d) => {
      out += d;
      const url = /"msg":"lora-vault listening"/.test(out) ? /"url":"([^"]+)"/.exec(out)?.[1] : undefined;
      if (url) resolve(url);
    });
    child.on('exit', () => reject(new Error(`server exited during start-up:\n${out}`)));
    setTimeout(() => reject(new Error(`no start within 30 s:\n${out}`)), 30_000);
  });
  return { child, graphqlUrl };
}

describe('the API server killed mid-upload', () => {
  it('leaves nothing visible; the next server reconciles the leftovers and the quota is whole again', async () => {
    const userId = newUserId();
    const file = await writeSafetensorsFile(join(await mkdtemp(join(tmpdir(), 'lora-kill-')), 'big.safetensors'), 48 * MiB);
    const { child, graphqlUrl } = await startServerProcess();
    const probe = await startTestServer({ DATABASE_URL: db.url, LORA_CONTAINER: container, JOBS_ENABLED: 'false' });
    const token = await probe.tokens.user(userId);
    const client = createLoraClient({ url: graphqlUrl, token, retry: false });

    let killedAt = 0;
    const upload = client.uploadLora({
      file: { path: file.path },
      name: 'interrupted',
      onProgress: (sent) => {
        if (!killedAt && sent > 24 * MiB) {
          killedAt = sent;
          child.kill('SIGKILL');
        }
      },
    });
    await expect(upload).rejects.toMatchObject({ kind: 'network' });
    expect(killedAt).toBeGreaterThan(0);
    await new Promise((r) => child.once('exit', r));

    // The crash left a reservation behind, but the user sees nothing half-made.
    const rows = await probe.app.db.lora.findMany({ where: { user_id: userId }, select: { status: true } });
    expect(rows.map((r) => r.status)).toEqual(['UPLOADING']);
    const user = createLoraClient({ url: probe.graphqlUrl, token });
    expect((await user.listLoras()).total).toBe(0);
    await probe.stop();

    // The next server's reconciler (here with a 1 s staleness window) clears it.
    await new Promise((r) => setTimeout(r, 1100));
    after = await startTestServer({ DATABASE_URL: db.url, LORA_CONTAINER: container, UPLOAD_STALE_SECONDS: '1' });
    const plan = await after.app.jobs.reconcileNow();
    expect(plan.staleUploads).toHaveLength(1);
    expect(await after.app.db.lora.count({ where: { user_id: userId } })).toBe(0);
    expect(await blobsOf(after.app, userId)).toEqual([]); // staged blocks were never committed

    // The quota holds nothing of it: the same upload now succeeds in full.
    const again = createLoraClient({ url: after.graphqlUrl, token });
    const done = await again.uploadLora({ file: { path: file.path }, name: 'complete' });
    expect(done.lora.sizeBytes).toBe(file.size);
    expect((await again.getQuota()).usedStorageBytes).toBe(file.size);
  }, 120_000);
});
