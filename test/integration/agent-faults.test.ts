import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type CacheEvent, createLoraClient } from '@lora-vault/sdk';
import { afterAll, beforeAll, beforeEach, describe, expect, inject, it } from 'vitest';
import WebSocket from 'ws';
import { azuriteConnectionString } from '../../server/embedded/azurite.ts';
import { CONTENT_PREFIX } from '../../server/storage/blob-store.ts';
import { agentPool, cliEnv, FAST_DOWNLOADS, LORA_CACHE_BIN, userWithLoras } from '../testkit/agent.ts';
import { type CorruptingProxy, startCorruptingProxy } from '../testkit/corrupting-proxy.ts';
import { sha256 } from '../testkit/hashes.ts';
import { eventually } from '../testkit/seed.ts';
import { startTestServer, type TestServer } from '../testkit/server.ts';

/**
 * The agent through a damaging proxy in front of the real Azurite (the server's SAS URLs point at
 * it): a SIGKILLed download (THREATS 17), a body that never verifies (18) reported to the API, and
 * a SAS that really expires mid-download (24). The downloader's own tests cover each fault in depth.
 */

const MiB = 1024 * 1024;

let proxy: CorruptingProxy;
let server: TestServer;
const agents = agentPool(() => server);
const children: ChildProcess[] = [];

beforeAll(async () => {
  const azuritePort = Number(/BlobEndpoint=http:\/\/127\.0\.0\.1:(\d+)/.exec(inject('storageConnectionString'))?.[1]);
  proxy = await startCorruptingProxy(azuritePort);
  server = await startTestServer({ AZURE_STORAGE_CONNECTION_STRING: azuriteConnectionString(proxy.port), SAS_TTL_SECONDS: '6' });
});
beforeEach(() => proxy.reset());
afterAll(async () => {
  for (const c of children) c.kill('SIGKILL');
  await agents.stopAll();
  await server?.stop();
  await proxy?.close();
});

/** A read of stored LoRA content (`content/{uuid}.{ext}`, signed for the LoRA's snapshot since issue 17). */
const isBlobGet = (r: { method: string; url: string }) => r.method === 'GET' && r.url.includes(`/${CONTENT_PREFIX}`);

describe('cache agent under faults', () => {
  it('SIGKILL mid-download leaves nothing visible; the next start cleans up and downloads again (THREATS 17)', async () => {
    const comfy = await mkdtemp(join(tmpdir(), 'lora-kill-'));
    const { grant, loras } = await userWithLoras(server, [6 * MiB]);
    // The first part arrives; every later range stalls, so the child is caught mid-download.
    proxy.add({
      fault: { kind: 'stall' },
      times: Number.POSITIVE_INFINITY,
      match: (r) => isBlobGet(r) && !/^bytes=0-/.test(r.range ?? ''),
    });
    const child = spawn(process.execPath, [LORA_CACHE_BIN, 'ensure', loras[0]!.id, '--grant', grant], {
      env: await cliEnv(server, comfy, { DOWNLOAD_PART_MB: '1', DOWNLOAD_CONCURRENCY: '3' }),
      stdio: 'ignore',
    });
    children.push(child);
    const tempRoot = join(comfy, 'models/lora-vault-users/.tmp');
    const partial = await eventually(
      async () => {
        for (const dir of existsSync(tempRoot) ? readdirSync(tempRoot).filter((d) => d !== 'locks') : []) {
          for (const f of readdirSync(join(tempRoot, dir))) if (statSync(join(tempRoot, dir, f)).size > 0) return join(tempRoot, dir, f);
        }
        return undefined;
      },
      20_000,
      'a partial download on disk',
    );
    await eventually(async () => proxy.count('stall') > 0, 20_000, 'a later range held by the proxy');
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    const userDir = join(comfy, 'models/lora-vault-users');
    const visible = existsSync(userDir)
      ? readdirSync(userDir, { recursive: true }).filter((f) => /\.(safetensors|pt)$/.test(String(f)) && !String(f).startsWith('.tmp'))
      : [];
    expect(visible).toEqual([]); // no finished LoRA file: only the temp folder holds the partial one
    expect(existsSync(partial)).toBe(true); // the leftover is in the temp folder only

    proxy.reset();
    const agent = await agents.start({ comfyDir: comfy });
    expect(existsSync(partial)).toBe(false);
    expect(agent.health().cleanup?.tempRemoved).toBeGreaterThanOrEqual(1);
    const result = await agent.ensure({ source: 'user', id: loras[0]!.id, grant }); // the dead process's lock does not block
    expect(result.hit).toBe(false);
    expect(sha256(readFileSync(result.path))).toBe(sha256(loras[0]!.bytes));
  });

  it('two processes asking for one LoRA at once → one download (lock file), both get the path (THREATS 20)', async () => {
    const comfy = await mkdtemp(join(tmpdir(), 'lora-two-'));
    const { grant, loras } = await userWithLoras(server, [2 * MiB]);
    proxy.add({ fault: { kind: 'delay', ms: 150 }, times: Number.POSITIVE_INFINITY, match: isBlobGet }); // long enough to overlap
    const agent = await agents.start({ comfyDir: comfy });
    const child = spawn(process.execPath, [LORA_CACHE_BIN, 'ensure', loras[0]!.id, '--grant', grant], {
      env: await cliEnv(server, comfy, { DOWNLOAD_PART_MB: '1' }),
    });
    children.push(child);
    let out = '';
    child.stdout?.on('data', (d) => (out += d));
    const childDone = new Promise<number | null>((resolve) => child.on('exit', resolve));
    await eventually(async () => proxy.log.some(isBlobGet), 20_000, 'the child started downloading');
    const mine = await agent.ensure({ source: 'user', id: loras[0]!.id, grant });
    expect(await childDone).toBe(0);
    expect(JSON.parse(out).path).toBe(mine.path);
    expect(agent.core.downloads.started).toBe(0); // this process waited for the other one
    const requested = proxy.log.filter(isBlobGet).reduce((sum, e) => {
      const m = /bytes=(\d+)-(\d+)/.exec(e.range ?? '');
      return sum + (m ? Number(m[2]) - Number(m[1]) + 1 : 0);
    }, 0);
    expect(requested).toBe(2 * MiB); // every byte fetched exactly once
    expect(sha256(readFileSync(mine.path))).toBe(sha256(loras[0]!.bytes));
  });

  it('a body that never verifies fails DOWNLOAD_FAILED after bounded retries, leaves nothing, and the API hears about it (THREATS 18)', async () => {
    const agent = await agents.start();
    const { grant, loras } = await userWithLoras(server, [512 * 1024]);
    const admin = createLoraClient({ url: server.graphqlUrl, token: await server.tokens.admin(), webSocketImpl: WebSocket });
    const events = admin.cacheEvents();
    const failed = (async () => {
      for await (const e of events) if (e.type === 'DOWNLOAD_FAILED' && e.loraId === loras[0]!.id) return e;
      return null;
    })() as Promise<CacheEvent | null>;
    await new Promise((r) => setTimeout(r, 300)); // subscribed

    proxy.add({ fault: { kind: 'flipBit', offset: 100_000 }, times: Number.POSITIVE_INFINITY, match: isBlobGet });
    const error = await agent.ensure({ source: 'user', id: loras[0]!.id, grant }).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'DOWNLOAD_FAILED' });
    expect(proxy.count('flipBit')).toBeGreaterThan(1); // retried, bounded
    expect(proxy.count('flipBit')).toBeLessThan(20);
    expect(readdirSync(agent.layout.processTempDir)).toEqual([]);
    expect(agent.store.findUser(loras[0]!.id)).toBeNull();
    const event = await Promise.race([failed, new Promise<null>((r) => setTimeout(() => r(null), 5000))]);
    expect(event?.reason).toContain('DOWNLOAD_FAILED');
    await events.return(undefined);
    await admin.close();

    proxy.reset(); // storage healthy again → the next ensure succeeds
    expect((await agent.ensure({ source: 'user', id: loras[0]!.id, grant })).hit).toBe(false);
  });

  it('a SAS URL that expires mid-download: a fresh URL comes from the API and the download completes (THREATS 24)', async () => {
    // A stall limit above the delay, so the held request really reaches storage late.
    const agent = await agents.start({ downloadTuning: { ...FAST_DOWNLOADS, stallMs: 20_000 } });
    const { grant, loras } = await userWithLoras(server, [MiB]);
    // Hold one range request past the 6 s SAS lifetime; real Azurite then refuses it (403).
    proxy.add({ fault: { kind: 'delay', ms: 7000 }, times: 1, match: isBlobGet });
    const result = await agent.ensure({ source: 'user', id: loras[0]!.id, grant });
    expect(sha256(readFileSync(result.path))).toBe(sha256(loras[0]!.bytes));
    // The held request was only delayed by the proxy; the 403 is Azurite's own answer to the expired SAS.
    expect(proxy.log.some((e) => isBlobGet(e) && e.fault === 'delay' && e.status === 403)).toBe(true);
    const signatures = new Set(proxy.log.filter(isBlobGet).map((e) => new URL(e.url, 'http://x').searchParams.get('sig')));
    expect(signatures.size).toBeGreaterThan(1); // a second SAS was minted by the API
  }, 30_000);
});
