import { randomUUID } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { createLoraClient, type LoraClient, LoraSdkError } from '../../sdk/index.ts';
import { sd1Lora, sdxlLora } from '../testkit/lora-files.ts';
import { newUserId, seedLora } from '../testkit/seed.ts';
import { startTestServer, type TestServer } from '../testkit/server.ts';

/** The SDK's client against the real server: every method, uploads from disk, subscriptions, errors. */

let server: TestServer;
let dir: string;
const clients: LoraClient[] = [];

beforeAll(async () => {
  server = await startTestServer();
  dir = await mkdtemp(join(tmpdir(), 'lora-vault-sdk-'));
});
afterAll(async () => {
  for (const c of clients) await c.close();
  await server?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

function client(token?: string | null, options: Partial<Parameters<typeof createLoraClient>[0]> = {}): LoraClient {
  const c = createLoraClient({
    url: server.graphqlUrl,
    ...(token ? { token } : {}),
    webSocketImpl: WebSocket,
    wsRetryAttempts: 0,
    ...options,
  });
  clients.push(c);
  return c;
}

async function fileOnDisk(bytes: Buffer, name = `${randomUUID()}.safetensors`): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, bytes);
  return path;
}

/** Resolves with the LoraSdkError a call rejects with. */
async function sdkError(call: Promise<unknown>): Promise<LoraSdkError> {
  try {
    await call;
  } catch (error) {
    expect(error).toBeInstanceOf(LoraSdkError);
    return error as LoraSdkError;
  }
  throw new Error('expected a LoraSdkError');
}

const subscribed = () => new Promise((r) => setTimeout(r, 300));

describe('a user: upload from disk, library, quota', () => {
  it('uploads a file from disk with progress callbacks and uploadProgress events, then lists, gets, updates and deletes it', async () => {
    const userId = newUserId();
    const sdk = client(await server.tokens.user(userId));
    const bytes = sdxlLora();
    const path = await fileOnDisk(bytes, 'my style.safetensors');
    const uploadId = randomUUID();
    const progressEvents = sdk.uploadProgress({ uploadId });
    const phases: string[] = [];
    const followed = (async () => {
      for await (const p of progressEvents) phases.push(p.phase);
    })();
    await subscribed();
    const calls: [number, number][] = [];
    const uploaded = await sdk.uploadLora({
      file: { path },
      name: 'My style',
      tags: ['style'],
      uploadId,
      onProgress: (sent, total) => calls.push([sent, total]),
    });
    await followed; // the subscription ends after DONE
    expect(uploaded.lora).toMatchObject({ name: 'My style', fileName: 'my style.safetensors', sizeBytes: bytes.length, tags: ['style'] });
    expect(uploaded.lora.metadata.baseModel).toBe('SDXL');
    expect(uploaded.quota.loraCount).toBe(1);
    expect(calls.length).toBeGreaterThan(0);
    expect(calls.at(-1)).toEqual([bytes.length, bytes.length]);
    expect(calls.every(([sent, total], i) => total === bytes.length && sent >= (calls[i - 1]?.[0] ?? 0))).toBe(true);
    expect(phases.at(-1)).toBe('DONE');
    expect(phases.filter((p, i) => phases[i - 1] !== p)).toEqual(['RECEIVING', 'VALIDATING', 'STORING', 'DONE']);

    const page = await sdk.listLoras({ limit: 10 });
    expect(page.total).toBe(1);
    expect(page.loras.map((l) => l.id)).toEqual([uploaded.lora.id]);
    expect((await sdk.listLoras({ search: 'nothing like it' })).total).toBe(0);

    const got = await sdk.getLora({ id: uploaded.lora.id });
    expect(got).toMatchObject({ __typename: 'Lora', id: uploaded.lora.id, sha256: uploaded.lora.sha256 });

    const updated = await sdk.updateLora({ id: got.id, name: 'Renamed', tags: ['a', 'b'] });
    expect(updated).toMatchObject({ name: 'Renamed', tags: ['a', 'b'] });

    const quota = await sdk.getQuota();
    expect(quota).toMatchObject({ userId, loraCount: 1, usedStorageBytes: bytes.length });

    const deleted = await sdk.deleteLora({ id: got.id });
    expect(deleted).toMatchObject({ loraId: got.id, quota: { loraCount: 0, usedStorageBytes: 0 } });
    expect((await sdk.listLoras()).total).toBe(0);
  });

  it('uploads a Blob (fetch + FormData where there is no XMLHttpRequest)', async () => {
    const sdk = client(await server.tokens.user(newUserId()));
    const bytes = sd1Lora();
    const calls: number[] = [];
    const uploaded = await sdk.uploadLora({
      file: new Blob([new Uint8Array(bytes)]),
      name: 'from a blob',
      onProgress: (sent) => calls.push(sent),
    });
    expect(uploaded.lora).toMatchObject({ name: 'from a blob', sizeBytes: bytes.length });
    expect(calls.at(-1)).toBe(bytes.length);
  });
});

describe('uploadSource: Studio says so through the SDK (docs/flat-file.md)', () => {
  it("EMPROPS_STUDIO is recorded as gen_out_data.upload_source 'emprops_studio'; without it, 'api'", async () => {
    const sdk = client(await server.tokens.user(newUserId()));
    const fromStudio = await sdk.uploadLora({ file: new Blob([new Uint8Array(sd1Lora())]), uploadSource: 'EMPROPS_STUDIO' });
    const plain = await sdk.uploadLora({ file: { path: await fileOnDisk(sdxlLora()) } });
    const sourceOf = async (id: string) =>
      ((await server.app.db.flat_file.findUniqueOrThrow({ where: { id: BigInt(id) } })).gen_out_data as { upload_source: string })
        .upload_source;
    expect(await sourceOf(fromStudio.lora.id)).toBe('emprops_studio');
    expect(await sourceOf(plain.lora.id)).toBe('api');
  });
});

describe('domain errors surface as LoraSdkError kind "domain" with the right code', () => {
  it('LORA_NOT_FOUND (get, update, delete) and VALIDATION_FAILED', async () => {
    const userId = newUserId();
    const sdk = client(await server.tokens.user(userId));
    for (const call of [
      () => sdk.getLora({ id: '999999999' }),
      () => sdk.updateLora({ id: '999999999', name: 'x' }),
      () => sdk.deleteLora({ id: '999999999' }),
    ]) {
      const error = await sdkError(call());
      expect(error).toMatchObject({ kind: 'domain', code: 'LORA_NOT_FOUND', retryable: false });
      expect(error.details).toMatchObject({ __typename: 'NotFoundError', loraId: '999999999' });
    }
    const lora = await seedLora(server.app, userId);
    const invalid = await sdkError(sdk.updateLora({ id: lora.id, name: '   ' }));
    expect(invalid).toMatchObject({ kind: 'domain', code: 'VALIDATION_FAILED', retryable: false });
    expect(invalid.details?.issues).toEqual([expect.objectContaining({ path: 'name' })]);
  });

  it('QUOTA_EXCEEDED (declared size over the quota set by an admin) and INVALID_FILE_FORMAT', async () => {
    const userId = newUserId();
    const sdk = client(await server.tokens.user(userId));
    const admin = client(await server.tokens.admin());
    const quota = await admin.setQuota({ userId, maxStorageBytes: 1000 });
    expect(quota).toMatchObject({ userId, maxStorageBytes: 1000 });
    const big = await sdkError(sdk.uploadLora({ file: { path: await fileOnDisk(sd1Lora()) } }));
    expect(big).toMatchObject({ kind: 'domain', code: 'QUOTA_EXCEEDED', retryable: false });
    expect(big.details).toMatchObject({ __typename: 'QuotaExceededError', maxQuotaBytes: 1000 });
    await admin.setQuota({ userId, maxStorageBytes: null });

    const png = Buffer.concat([Buffer.from('89504e470d0a1a0a', 'hex'), Buffer.alloc(200)]);
    const bad = await sdkError(sdk.uploadLora({ file: { path: await fileOnDisk(png, 'picture.safetensors') } }));
    expect(bad).toMatchObject({ kind: 'domain', code: 'INVALID_FILE_FORMAT' });
    expect(bad.details).toMatchObject({ __typename: 'InvalidFileError', detectedFormat: 'png' });
    expect((await sdk.getQuota()).loraCount).toBe(0);
  });

  it('INVALID_GRANT for a forged grant', async () => {
    const machine = client(await server.tokens.machine('gpu-sdk-grant'));
    const error = await sdkError(machine.getDownload({ id: '1', grant: 'forged.grant.token' }));
    expect(error).toMatchObject({ kind: 'domain', code: 'INVALID_GRANT', retryable: false });
    const usage = await sdkError(machine.recordUsage({ grant: 'forged', loraIds: ['1'] }));
    expect(usage.code).toBe('INVALID_GRANT');
  });
});

describe('thrown GraphQL errors are kind "graphql"', () => {
  it('UNAUTHENTICATED without a token; FORBIDDEN for a user setting quotas; a 4403 close on a subscription', async () => {
    const anonymous = await sdkError(client(null).listLoras());
    expect(anonymous).toMatchObject({ kind: 'graphql', code: 'UNAUTHENTICATED', retryable: false });
    const user = client(await server.tokens.user(newUserId()));
    const forbidden = await sdkError(user.setQuota({ userId: newUserId(), maxLoraCount: 5 }));
    expect(forbidden).toMatchObject({ kind: 'graphql', code: 'FORBIDDEN', retryable: false });
    const events = user.cacheEvents();
    const refused = await sdkError(events.next());
    expect(refused).toMatchObject({ kind: 'graphql', code: 'FORBIDDEN' });
    const noToken = await sdkError(client(null).cacheEvents().next());
    expect(noToken).toMatchObject({ kind: 'graphql', code: 'FORBIDDEN' });
  });

  it('getToken is asked for every request', async () => {
    const token = await server.tokens.user(newUserId());
    let asked = 0;
    const sdk = client(null, {
      getToken: async () => {
        asked++;
        return token;
      },
    });
    await sdk.getQuota();
    await sdk.listLoras();
    expect(asked).toBe(2);
  });
});

describe('machines, the dispatcher and admins', () => {
  it('grant → download URL → usage; cache stats; stillValid; cache events; a delete reaches cacheEvents', async () => {
    const userId = newUserId();
    const user = client(await server.tokens.user(userId));
    const lora = await seedLora(server.app, userId);
    const service = client(await server.tokens.service());
    const machineId = `gpu-sdk-${randomUUID().slice(0, 8)}`;
    const machine = client(await server.tokens.machine(machineId));
    const admin = client(await server.tokens.admin());

    const grant = await service.createJobGrant({ userId, jobId: 'job-1', ttlSeconds: 600 });
    expect(grant).toMatchObject({ userId, jobId: 'job-1' });
    const download = await machine.getDownload({ id: lora.id, grant: grant.token });
    expect(download).toMatchObject({ __typename: 'LoraDownload', loraId: lora.id, sha256: lora.sha256, sizeBytes: lora.sizeBytes });
    expect((await fetch(download.url)).status).toBe(200);
    expect(await machine.recordUsage({ grant: grant.token, loraIds: [lora.id], workflowId: 'wf-1', workflowName: 'Portrait' })).toEqual({
      __typename: 'RecordLoraUsageSuccess',
      recorded: 1,
    });

    const sharedName = `sdk/${randomUUID()}.safetensors`;
    await server.app.blobs.putShared(sharedName, sd1Lora());
    expect(await machine.getSharedDownload({ name: sharedName })).toMatchObject({ sharedName, loraId: null });
    expect((await sdkError(machine.getSharedDownload({ name: 'sdk/missing.safetensors' }))).code).toBe('LORA_NOT_FOUND');
    expect((await sdkError(machine.getSharedDownload({ name: '../etc/passwd' }))).code).toBe('VALIDATION_FAILED');

    const stats = {
      totalLoraCacheBytes: 5_000_000_000,
      maxLoraCacheBytes: 10_000_000_000,
      userLoraCount: 3,
      sharedLoraCount: 2,
      cacheHitRate24h: 0.9,
      evictions24h: 1,
      oldestLoraAgeDays: 2.5,
    };
    expect(await machine.reportCacheStats({ input: stats })).toBe(true);
    const reported = await admin.getCacheStats({ machineId });
    expect(reported).toEqual([expect.objectContaining({ machineId, totalLoraCacheBytes: 5_000_000_000, utilizationPercent: 50 })]);

    expect(
      await machine.lorasStillValid({
        loras: [
          { id: lora.id, sha256: lora.sha256 },
          { id: '999999999', sha256: '0'.repeat(64) },
        ],
      }),
    ).toEqual([lora.id]);

    const events = machine.cacheEvents();
    await subscribed();
    const evicted = await machine.reportCacheEvent({ input: { type: 'EVICTED', loraId: lora.id, reason: 'lru' } });
    expect(evicted).toMatchObject({ __typename: 'CacheEvent', type: 'EVICTED', machineId, reason: 'lru' });
    await user.deleteLora({ id: lora.id });
    const seen = [];
    for await (const event of events) {
      seen.push(event);
      if (event.type === 'LORA_DELETED' && event.loraId === lora.id) break;
    }
    expect(seen.map((e) => e.type)).toEqual(['EVICTED', 'LORA_DELETED']);
    expect(seen[1]).toMatchObject({ loraId: lora.id, userId: null, machineId: null }); // machines learn no user ids

    const invalidEvent = await sdkError(machine.reportCacheEvent({ input: { type: 'DOWNLOAD_FAILED', reason: 'x'.repeat(600) } }));
    expect(invalidEvent).toMatchObject({ kind: 'domain', code: 'VALIDATION_FAILED' });
  });
});

describe('subscriptions', () => {
  it('return() on a subscription waiting for its next event resolves at once and ends the iteration', async () => {
    const machine = client(await server.tokens.machine('quiet-machine'));
    const events = machine.cacheEvents({ machineId: 'quiet-machine' }); // nothing will ever arrive
    const waiting = events.next();
    await new Promise((r) => setTimeout(r, 300)); // subscribed and waiting
    const t0 = performance.now();
    await expect(events.return(undefined)).resolves.toMatchObject({ done: true });
    expect(performance.now() - t0).toBeLessThan(1000);
    await expect(waiting).resolves.toMatchObject({ done: true });
  });
});

describe('network failures and retries', () => {
  it('retries idempotent queries on retryable failures (with backoff), never mutations', async () => {
    const token = await server.tokens.user(newUserId());
    let calls = 0;
    const flaky = (input: string, init: RequestInit) => {
      calls++;
      return calls <= 2 ? Promise.resolve(new Response('bad gateway', { status: 502 })) : fetch(input, init);
    };
    const sdk = client(token, { fetch: flaky, retry: { retries: 3, baseDelayMs: 5, maxDelayMs: 20 } });
    expect((await sdk.getQuota()).loraCount).toBe(0);
    expect(calls).toBe(3);

    calls = 0;
    const error = await sdkError(sdk.updateLora({ id: '1', name: 'x' }));
    expect(error).toMatchObject({ kind: 'network', code: 'HTTP_502', retryable: true, status: 502 });
    expect(calls).toBe(1);
  });

  it('a refused connection is a retryable network error, after the retries are spent', async () => {
    let calls = 0;
    const sdk = client('t', {
      url: 'http://127.0.0.1:1/graphql',
      fetch: (input, init) => {
        calls++;
        return fetch(input, init);
      },
      retry: { retries: 2, baseDelayMs: 1, maxDelayMs: 5 },
    });
    const error = await sdkError(sdk.listLoras());
    expect(error).toMatchObject({ kind: 'network', code: 'NETWORK_ERROR', retryable: true });
    expect(calls).toBe(3);
  });

  it('a timeout is a retryable network error', async () => {
    const sdk = client('t', {
      fetch: (_input, init) =>
        new Promise((_resolve, reject) => init.signal?.addEventListener('abort', () => reject(new DOMException('aborted', 'AbortError')))),
      timeoutMs: 50,
      retry: false,
    });
    expect(await sdkError(sdk.listLoras())).toMatchObject({ kind: 'network', code: 'TIMEOUT', retryable: true });
  });
});
