import { spawn } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import { mkdir, mkdtemp, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { BlockBlobClient, ContainerClient } from '@azure/storage-blob';
import type { TypedDocumentNode } from '@graphql-typed-document-node/core';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import {
  AbortLoraUploadDocument,
  CompleteLoraUploadDocument,
  createLoraClient,
  LoraUploadSessionDocument,
  RenewLoraUploadDocument,
  type ResumableRunStats,
  type ResumableState,
} from '../../sdk/index.ts';
import { azuriteConnectionString } from '../../server/embedded/azurite.ts';
import { type CorruptingProxy, proxyToTestAzurite } from '../testkit/corrupting-proxy.ts';
import { dataOf, member } from '../testkit/graphql-assertions.ts';
import { sha256 } from '../testkit/hashes.ts';
import { blobsOf } from '../testkit/invariants.ts';
import { setUserLoraQuota } from '../testkit/library-helpers.ts';
import { postMultipart } from '../testkit/multipart.ts';
import { BAD_PT_FILES } from '../testkit/pt-files.ts';
import { runCutKillRestart } from '../testkit/restart-sequence.ts';
import { beginSession, heldBlocks, putBlock, stageFile } from '../testkit/resumable.ts';
import { bigLora } from '../testkit/safetensors.ts';
import { newUser, newUserId } from '../testkit/seed.ts';
import { startTestServer, type TestServer } from '../testkit/server.ts';

/**
 * Resumable direct-to-Blob uploads (issue 17 §1; THREATS.md rows 45-50) against real Azurite
 * through a logging proxy (every Put Block is seen), and a real server. Blocks are 256 KiB here so
 * that small files have many.
 */

const BLOCK = 256 * 1024;
let proxy: CorruptingProxy;
let server: TestServer;
let dir: string;

beforeAll(async () => {
  proxy = await proxyToTestAzurite(inject('storageConnectionString'));
  server = await startTestServer({
    AZURE_STORAGE_CONNECTION_STRING: azuriteConnectionString(proxy.port),
    UPLOAD_BLOCK_BYTES: String(BLOCK),
  });
  dir = await mkdtemp(join(tmpdir(), 'resumable-'));
});
afterAll(async () => {
  await server?.stop();
  await proxy?.close();
  await rm(dir, { recursive: true, force: true });
});

const user = () => newUser(server);

async function reservations(userId: string): Promise<number> {
  return server.app.db.upload_session.count({ where: { user_id: userId, state: { in: ['OPEN', 'COMPLETING'] } } });
}

function runChild(env: Record<string, string>): Promise<{ code: number | null; signal: string | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'test/testkit/resumable-child.ts'], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => {
      stdout += d;
    });
    child.stderr.on('data', (d) => {
      stderr += d;
    });
    child.on('exit', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

const blockPuts = () => proxy.log.filter((e) => e.method === 'PUT' && e.url.includes('comp=block&'));
const blockIdOf = (url: string) => decodeURIComponent(/blockid=([^&]+)/.exec(url)?.[1] ?? '');

describe('uploadLoraResumable', () => {
  it('a cut at ~50 % resumed by a new process sends only the missing blocks and stores the exact bytes', async () => {
    const { id, token } = await user();
    const file = bigLora(6); // 24 blocks of 256 KiB
    const path = join(dir, `cut-${randomUUID()}.safetensors`);
    await writeFile(path, file);
    proxy.reset();

    const first = await runChild({ URL: server.graphqlUrl, TOKEN: token, FILE_PATH: path, CUT_AT: '0.5' });
    expect(first.signal, first.stderr).toBe('SIGKILL');
    const session = await server.app.db.upload_session.findFirstOrThrow({ where: { user_id: id } });
    const held = new Set((await heldBlocks(server.app, session.blob_path)).map((b) => b.id));
    const total = Math.ceil(file.length / BLOCK);
    expect(held.size).toBeGreaterThan(0);
    expect(held.size).toBeLessThan(total);
    const firstRun = blockPuts().length;

    const second = await runChild({ URL: server.graphqlUrl, TOKEN: token, FILE_PATH: path });
    expect(second.code, second.stderr).toBe(0);
    const out = JSON.parse(second.stdout.trim()) as { loraId: string; sha256: string; stats: ResumableRunStats };
    const resent = blockPuts()
      .slice(firstRun)
      .map((e) => blockIdOf(e.url));
    // only what storage did not hold (a Put Block in flight at the kill may still have landed)
    expect(resent.filter((b) => held.has(b))).toEqual([]);
    expect(out.stats.blocksResumed).toBeGreaterThanOrEqual(held.size);
    expect(new Set(resent).size).toBe(total - out.stats.blocksResumed);
    expect(out.stats.blocksSent).toBe(resent.length);
    // each once, but for a block storage dropped at the instant of a server commit (validation ahead; THREATS 81)
    expect(resent.length - new Set(resent).size).toBeLessThanOrEqual(2);
    expect(out.sha256).toBe(sha256(file));
    const row = await server.app.db.lora.findUniqueOrThrow({ where: { file_id: BigInt(out.loraId) } });
    expect(row.status).toBe('READY');
    expect((await server.app.blobs.read(row.blob_path)).equals(file)).toBe(true);
    const ff = await server.app.db.flat_file.findUniqueOrThrow({ where: { id: BigInt(out.loraId) } });
    expect((ff.gen_out_data as { upload_source: string }).upload_source).toBe('resumable');
    expect(await reservations(id)).toBe(0);
    expect(await server.app.db.user_lora_quota.findUniqueOrThrow({ where: { user_id: id } })).toMatchObject({
      used_bytes: BigInt(file.length),
      lora_count: 1,
    });
  }, 120_000);

  it('survives a network cut of 8 s at 30 % and a SIGKILL at 60 %: a new process sends only what storage lacks (bench:upload:restart, small)', async () => {
    const { id, token } = await user();
    const file = bigLora(24); // 96 blocks of 256 KiB
    const path = join(dir, `restart-${randomUUID()}.safetensors`);
    await writeFile(path, file);
    proxy.reset();
    let restartedFrom = 0;
    const run = await runCutKillRestart({
      graphqlUrl: server.graphqlUrl,
      token,
      path,
      storage: { host: '127.0.0.1', port: proxy.port }, // the SAS URLs point at the logging proxy
      outageMs: 8000, // longer than six tries' backoff (≤ 7.75 s): the client must wait for the network
      concurrency: 2,
      beforeRestart: () => {
        restartedFrom = blockPuts().length;
      },
    });
    // the first process retried while the network was away, then went on until killed
    expect(run.refusedDuringOutage).toBeGreaterThan(0);
    expect(run.acceptedAfterOutage).toBeGreaterThan(0);
    expect(run.first.signal).toBe('SIGKILL');
    const held = new Set(run.heldAtRestart);
    expect(held.size).toBeGreaterThan(0);
    expect(held.size).toBeLessThan(run.blockCount);
    // the new process resumed the same session and sent only what storage lacked
    expect(run.restarted.code, run.restarted.stderr).toBe(0);
    const out = run.restarted.result;
    if (!out) throw new Error('no result from the restarted client');
    const resent = blockPuts()
      .slice(restartedFrom)
      .map((e) => blockIdOf(e.url));
    expect(resent.filter((b) => held.has(b))).toEqual([]);
    // (a Put Block whose body had all arrived at the kill may land after the question: the new process skips it too)
    expect(out.stats.blocksResumed).toBeGreaterThanOrEqual(held.size);
    expect(new Set(resent).size).toBe(run.blockCount - out.stats.blocksResumed);
    expect(run.bytesToStorage / file.length).toBeLessThanOrEqual(1.1);
    expect(run.stateFileLeft).toBe(false);
    // one session, one READY LoRA with the exact bytes, counted once
    expect(await server.app.db.upload_session.count({ where: { user_id: id } })).toBe(1);
    expect((await server.app.db.upload_session.findUniqueOrThrow({ where: { id: run.sessionId } })).state).toBe('COMPLETED');
    expect(out.sha256).toBe(sha256(file));
    const row = await server.app.db.lora.findUniqueOrThrow({ where: { file_id: BigInt(out.loraId) } });
    expect(row.status).toBe('READY');
    expect((await server.app.blobs.read(row.blob_path)).equals(file)).toBe(true);
    expect(await reservations(id)).toBe(0);
    expect(await server.app.db.user_lora_quota.findUniqueOrThrow({ where: { user_id: id } })).toMatchObject({
      used_bytes: BigInt(file.length),
      lora_count: 1,
    });
  }, 180_000);

  it('a black-holed network (nothing arrives, nothing is closed) at 30 %: the stalled Put Blocks time out and the run goes on', async () => {
    const { id, token } = await user();
    const file = bigLora(24);
    const path = join(dir, `blackhole-${randomUUID()}.safetensors`);
    await writeFile(path, file);
    const run = await runCutKillRestart({
      graphqlUrl: server.graphqlUrl,
      token,
      path,
      storage: { host: '127.0.0.1', port: proxy.port },
      cut: 'blackhole', // the connections in flight never carry a byte again, even once the network is back
      outageMs: 3000,
      idleMs: 2000,
      concurrency: 2,
      firstRunDeadlineMs: 90_000, // without an inactivity limit the first process waits for the kernel (~15 min)
    });
    expect(run.first.signal).toBe('SIGKILL'); // it reached 60 % after the black hole
    expect(run.acceptedAfterOutage).toBeGreaterThan(0);
    expect(run.restarted.code, run.restarted.stderr).toBe(0);
    expect(run.restarted.result?.sha256).toBe(sha256(file));
    const row = await server.app.db.lora.findUniqueOrThrow({ where: { file_id: BigInt(run.restarted.result?.loraId ?? '0') } });
    expect(row.status).toBe('READY');
    expect(await reservations(id)).toBe(0);
  }, 180_000);

  it("uploadSource EMPROPS_STUDIO is recorded as upload_source 'emprops_studio', API as 'api'; without one, 'resumable' (docs/flat-file.md)", async () => {
    const { token } = await user();
    const sdk = createLoraClient({ url: server.graphqlUrl, token });
    const sourceOf = async (id: string) =>
      ((await server.app.db.flat_file.findUniqueOrThrow({ where: { id: BigInt(id) } })).gen_out_data as { upload_source: string })
        .upload_source;
    try {
      const uploaded: Record<string, string> = {};
      for (const source of ['EMPROPS_STUDIO', 'API', undefined] as const) {
        const path = join(dir, `source-${randomUUID()}.safetensors`);
        await writeFile(path, bigLora(1));
        const done = await sdk.uploadLoraResumable({ file: { path }, ...(source ? { uploadSource: source } : {}) });
        uploaded[source ?? 'none'] = await sourceOf(done.lora.id);
      }
      expect(uploaded).toEqual({ EMPROPS_STUDIO: 'emprops_studio', API: 'api', none: 'resumable' });
    } finally {
      await sdk.close();
    }
    // no client can claim the default: the enum has no such value
    const claimed = await server.gql(
      'mutation { beginLoraUpload(fileName: "a.safetensors", sizeBytes: 10, uploadSource: RESUMABLE) { __typename } }',
      {},
      { token },
    );
    expect(claimed.body.errors?.[0]?.message).toMatch(/LoraUploadSource/);
  });

  it("two files alike in name, size and modification time, or two users, never resume or overwrite each other's session", async () => {
    const first = await user();
    const second = await user();
    const a = bigLora(2);
    const b = Buffer.from(a);
    b[100_000] = (b[100_000] ?? 0) ^ 0x01; // another file: one weight in its first blocks differs
    const pathA = join(dir, randomUUID(), 'pytorch_lora_weights.safetensors');
    const pathB = join(dir, randomUUID(), 'pytorch_lora_weights.safetensors');
    for (const [path, bytes] of [
      [pathA, a],
      [pathB, b],
    ] as const) {
      await mkdir(dirname(path));
      await writeFile(path, bytes);
      await utimes(path, 1_700_000_000, 1_700_000_000);
    }
    const saved = new Map<string, ResumableState>();
    const store = {
      get: async (key: string) => saved.get(key),
      set: async (key: string, state: ResumableState) => void saved.set(key, state),
      delete: async (key: string) => void saved.delete(key),
    };
    const client = createLoraClient({ url: server.graphqlUrl, token: first.token });
    // the first file stopped half-way: its session is kept
    const stop = new AbortController();
    await client
      .uploadLoraResumable({
        file: { path: pathA },
        store,
        signal: stop.signal,
        concurrency: 1,
        onProgress: (sent, total) => {
          if (sent >= total / 2) stop.abort();
        },
      })
      .catch(() => undefined);
    expect(saved.size).toBe(1);
    // the other file, same name, size and time: its own session, its own bytes
    const other = await client.uploadLoraResumable({ file: { path: pathB }, store });
    expect(other.lora.sha256).toBe(sha256(b));
    // another user with the first file: their own session; the first user's entry stays
    const secondClient = createLoraClient({ url: server.graphqlUrl, token: second.token });
    const theirs = await secondClient.uploadLoraResumable({ file: { path: pathA }, store });
    expect(theirs.lora.sha256).toBe(sha256(a));
    const stats: ResumableRunStats = { bytesSent: 0, blocksSent: 0, blocksResumed: 0 };
    const resumed = await client.uploadLoraResumable({ file: { path: pathA }, store, stats });
    expect(resumed.lora.sha256).toBe(sha256(a));
    expect(stats.blocksResumed).toBeGreaterThan(0);
    expect(saved.size).toBe(0);
    await Promise.all([client.close(), secondClient.close()]);
  }, 60_000);

  it('publishes VALIDATING progress while the stored file is read, then DONE, on the session id', async () => {
    const { token } = await user();
    const file = bigLora(1);
    const session = await beginSession(server, token, { sizeBytes: file.length });
    await stageFile(session, file);
    const client = createLoraClient({ url: server.graphqlUrl, token, webSocketImpl: (await import('ws')).default });
    try {
      const events = client.uploadProgress({ uploadId: session.id });
      const phases: string[] = [];
      const collected = (async () => {
        for await (const e of events) phases.push(e.phase);
      })();
      await new Promise((r) => setTimeout(r, 300)); // subscribed
      const completeOnce = async () =>
        dataOf(await server.request(CompleteLoraUploadDocument, { id: session.id, blockIds: session.blockIds }, { token }))
          .completeLoraUpload;
      let result = await completeOnce();
      // a block staged at the instant of a commit of the validation ahead is dropped: named, staged again (as the SDK does)
      for (let round = 0; round < 3 && result.__typename === 'ValidationError'; round++) {
        const held = new Set((await heldBlocks(server.app, `content/${session.id}`)).map((b) => b.id));
        await stageFile(session, file, (i) => !held.has(session.blockIds[i] as string));
        result = await completeOnce();
      }
      member(result, 'UploadLoraSuccess');
      await collected;
      expect(phases[0]).toBe('VALIDATING');
      expect(phases.slice(-2)).toEqual(['STORING', 'DONE']);
    } finally {
      await client.close();
    }
  });
});

describe('completeLoraUpload refuses what storage does not hold as the session says', () => {
  it('a reordered, forged, short or never-staged block list: VALIDATION_FAILED, session still OPEN, then the right list works', async () => {
    const { token } = await user();
    const file = bigLora(1);
    const session = await beginSession(server, token, { sizeBytes: file.length });
    await stageFile(session, file, (i) => i !== 2); // block 2 never staged
    const ids = session.blockIds;
    const attempts: string[][] = [
      [ids[1] as string, ids[0] as string, ...ids.slice(2)], // reordered
      [...ids.slice(0, -1), Buffer.from('forged-000').toString('base64')], // forged
      ids.slice(0, -1), // short
      ids, // block 2 never staged
    ];
    for (const blockIds of attempts) {
      const result = dataOf(await server.request(CompleteLoraUploadDocument, { id: session.id, blockIds }, { token })).completeLoraUpload;
      expect(result).toMatchObject({ __typename: 'ValidationError', code: 'VALIDATION_FAILED', issues: [{ path: 'blockIds' }] });
    }
    const now = member(
      dataOf(await server.request(LoraUploadSessionDocument, { id: session.id }, { token })).loraUploadSession,
      'LoraUploadSession',
    );
    expect(now.state).toBe('OPEN');
    expect(now.stagedBlockIds).toHaveLength(ids.length - 1);
    await stageFile(session, file, (i) => i === 2);
    const done = dataOf(await server.request(CompleteLoraUploadDocument, { id: session.id, blockIds: ids }, { token })).completeLoraUpload;
    expect(member(done, 'UploadLoraSuccess').lora.sha256).toBe(sha256(file));
  });

  it('a file of another size than the session: VALIDATION_FAILED before anything is committed', async () => {
    const { token } = await user();
    const file = bigLora(1);
    const session = await beginSession(server, token, { sizeBytes: file.length + 1000 });
    await stageFile(session, file);
    const result = dataOf(
      await server.request(CompleteLoraUploadDocument, { id: session.id, blockIds: session.blockIds }, { token }),
    ).completeLoraUpload;
    expect(result).toMatchObject({
      __typename: 'ValidationError',
      issues: [{ path: 'blockIds', message: expect.stringMatching(/expected/) }],
    });
  });

  it.each([
    ['an unsafe pickle', BAD_PT_FILES.find((f) => f.expect === 'UNSAFE_FILE')],
    ['a broken torch file', BAD_PT_FILES.find((f) => f.expect === 'INVALID_FILE_FORMAT')],
  ])('%s: the same typed error as multipart, and nothing is left (blob deleted, reservation released)', async (_name, bad) => {
    if (!bad) throw new Error('fixture missing');
    const { id, token } = await user();
    const viaMultipart = await postMultipart({ url: server.graphqlUrl, token, file: bad.bytes, filename: 'x.pt' });
    const session = await beginSession(server, token, { fileName: 'x.pt', sizeBytes: bad.bytes.length });
    await stageFile(session, bad.bytes);
    const result = dataOf(
      await server.request(CompleteLoraUploadDocument, { id: session.id, blockIds: session.blockIds }, { token }),
    ).completeLoraUpload;
    expect(result.__typename).toBe(viaMultipart.body.data.uploadLora.__typename);
    expect((result as { code: string }).code).toBe(bad.expect);
    expect(await blobsOf(server.app, id)).toEqual([]);
    expect(await reservations(id)).toBe(0);
    expect(await server.app.db.lora.count({ where: { user_id: id } })).toBe(0);
    const after = member(
      dataOf(await server.request(LoraUploadSessionDocument, { id: session.id }, { token })).loraUploadSession,
      'LoraUploadSession',
    );
    expect(after.state).toBe('FAILED');
  });
});

describe('the upload SAS', () => {
  it('can stage blocks of its own blob only: no read, no list, no write or delete of another blob', async () => {
    const { token } = await user();
    const file = bigLora(1);
    const session = await beginSession(server, token, { sizeBytes: file.length });
    const url = session.uploadUrl as string;
    expect(await putBlock(url, session.blockIds[0] as string, file.subarray(0, BLOCK))).toBe(201);
    const [base, query] = url.split('?') as [string, string];
    const read = await fetch(url);
    expect(read.status).toBe(403);
    const container = base.slice(0, base.indexOf('/content/'));
    await expect(async () => {
      for await (const _ of new ContainerClient(`${container}?${query}`).listBlobsFlat()) break;
    }).rejects.toMatchObject({ statusCode: 403 });
    const other = `${container}/content/${randomUUID()}?${query}`;
    await expect(new BlockBlobClient(other).upload('x', 1)).rejects.toMatchObject({ statusCode: 403 });
    await expect(new BlockBlobClient(`${container}/users/x/loras/1.safetensors?${query}`).upload('x', 1)).rejects.toMatchObject({
      statusCode: 403,
    });
    await expect(new BlockBlobClient(url).delete()).rejects.toMatchObject({ statusCode: 403 });
    await expect(new BlockBlobClient(url).getBlockList('all')).rejects.toMatchObject({ statusCode: 403 });
  });

  it('once expired is refused, and renewLoraUpload gives one that works', async () => {
    const short = await startTestServer({
      AZURE_STORAGE_CONNECTION_STRING: inject('storageConnectionString'),
      UPLOAD_BLOCK_BYTES: String(BLOCK),
      UPLOAD_SAS_TTL_SECONDS: '1',
    });
    try {
      const token = await short.tokens.user(newUserId());
      const file = bigLora(1);
      const session = await beginSession(short, token, { sizeBytes: file.length });
      await new Promise((r) => setTimeout(r, 2500));
      expect(await putBlock(session.uploadUrl as string, session.blockIds[0] as string, file.subarray(0, BLOCK))).toBe(403);
      const renewed = member(
        dataOf(await short.request(RenewLoraUploadDocument, { id: session.id }, { token })).renewLoraUpload,
        'LoraUploadSession',
      );
      expect(await putBlock(renewed.uploadUrl as string, session.blockIds[0] as string, file.subarray(0, BLOCK))).toBe(201);
    } finally {
      await short.stop();
    }
  });
});

describe('sessions belong to their user', () => {
  it("another user's session id answers exactly as an id that does not exist", async () => {
    const owner = await user();
    const stranger = await user();
    const session = await beginSession(server, owner.token, { sizeBytes: 1000 });
    const missing = randomUUID();
    const shape = (r: unknown, id: string) => JSON.stringify(r).replaceAll(id, '<id>');
    for (const doc of [LoraUploadSessionDocument, RenewLoraUploadDocument, AbortLoraUploadDocument] as TypedDocumentNode<
      Record<string, unknown>,
      { id: string }
    >[]) {
      const theirs = dataOf(await server.request(doc, { id: session.id }, { token: stranger.token }));
      const none = dataOf(await server.request(doc, { id: missing }, { token: stranger.token }));
      expect(shape(theirs, session.id)).toBe(shape(none, missing));
      expect(JSON.stringify(theirs)).toContain('UPLOAD_SESSION_NOT_FOUND');
    }
    const theirs = dataOf(
      await server.request(CompleteLoraUploadDocument, { id: session.id, blockIds: session.blockIds }, { token: stranger.token }),
    );
    const none = dataOf(
      await server.request(CompleteLoraUploadDocument, { id: missing, blockIds: session.blockIds }, { token: stranger.token }),
    );
    expect(shape(theirs, session.id)).toBe(shape(none, missing));
    expect((await server.app.db.upload_session.findUniqueOrThrow({ where: { id: session.id } })).state).toBe('OPEN');
  });
});

describe('quota reservations', () => {
  it('sessions and multipart uploads racing for the last LoRA slots never exceed the quota; abort and expiry release', async () => {
    const { id, token } = await user();
    await setUserLoraQuota(server, { userId: id, maxLoraCount: 3 });
    const files = Array.from({ length: 6 }, () => bigLora(0.25));
    const a = await beginSession(server, token, { sizeBytes: files[0]?.length as number });
    const b = await beginSession(server, token, { sizeBytes: files[1]?.length as number });
    // two slots reserved: of 4 multipart uploads and 2 more sessions at once, exactly one gets the last slot
    const raced = await Promise.all([
      ...files
        .slice(2, 6)
        .map((f) => postMultipart({ url: server.graphqlUrl, token, file: f }).then((r) => r.body.data.uploadLora.__typename as string)),
      ...[0, 1].map((i) =>
        beginSession(server, token, { sizeBytes: files[i]?.length as number }).then(
          () => 'LoraUploadSession',
          (e: Error) => (/QuotaExceededError/.test(e.message) ? 'QuotaExceededError' : e.message),
        ),
      ),
    ]);
    const winners = raced.filter((k) => k === 'UploadLoraSuccess' || k === 'LoraUploadSession');
    expect(winners, JSON.stringify(raced)).toHaveLength(1);
    expect(raced.filter((k) => k === 'QuotaExceededError')).toHaveLength(5);
    const countNow = async () => {
      const q = await server.app.db.user_lora_quota.findUniqueOrThrow({ where: { user_id: id } });
      return q.lora_count + (await reservations(id));
    };
    expect(await countNow()).toBe(3);
    // the reserved ones complete (their slot was held for them)
    await stageFile(a, files[0] as Buffer);
    member(
      dataOf(await server.request(CompleteLoraUploadDocument, { id: a.id, blockIds: a.blockIds }, { token })).completeLoraUpload,
      'UploadLoraSuccess',
    );
    expect(await countNow()).toBe(3);
    // abort releases b's slot: a multipart upload fits again
    member(dataOf(await server.request(AbortLoraUploadDocument, { id: b.id }, { token })).abortLoraUpload, 'LoraUploadSession');
    expect(await countNow()).toBe(2);
    expect((await postMultipart({ url: server.graphqlUrl, token, file: bigLora(0.25) })).body.data.uploadLora.__typename).toBe(
      'UploadLoraSuccess',
    );
    // a live session holds its slot; once expired it stops counting, and the reconciler ends it and removes its blocks
    const q = await server.app.db.user_lora_quota.findUniqueOrThrow({ where: { user_id: id } });
    const held = q.lora_count + (await reservations(id)); // the race's winner may be a session, still open
    await setUserLoraQuota(server, { userId: id, maxLoraCount: held + 1 });
    const c = await beginSession(server, token, { sizeBytes: files[5]?.length as number });
    await stageFile(c, files[5] as Buffer, (i) => i === 0);
    expect((await postMultipart({ url: server.graphqlUrl, token, file: bigLora(0.25) })).body.data.uploadLora.__typename).toBe(
      'QuotaExceededError',
    );
    await server.app.db.upload_session.update({ where: { id: c.id }, data: { expires_at: new Date(Date.now() - 1000) } });
    expect((await postMultipart({ url: server.graphqlUrl, token, file: bigLora(0.25) })).body.data.uploadLora.__typename).toBe(
      'UploadLoraSuccess',
    );
    expect(await heldBlocks(server.app, `content/${c.id}`)).toHaveLength(1);
    await server.app.jobs.reconcileNow();
    expect((await server.app.db.upload_session.findUniqueOrThrow({ where: { id: c.id } })).state).toBe('EXPIRED');
    expect(await heldBlocks(server.app, `content/${c.id}`)).toEqual([]);
    expect((await server.app.db.user_lora_quota.findUniqueOrThrow({ where: { user_id: id } })).lora_count).toBe(q.lora_count + 1);
  }, 60_000);
});

describe('ended sessions (UPLOAD_SESSION_RETENTION_DAYS, default 7)', () => {
  it('the reconciler removes ended sessions past the retention, in batches; live and recent ones stay, a recent COMPLETED one still resumes', async () => {
    const { id, token } = await user();
    const daysAgo = (d: number) => new Date(Date.now() - d * 86_400_000);
    const setRow = (
      sessionId: string,
      data: { state?: 'OPEN' | 'COMPLETING' | 'COMPLETED' | 'FAILED' | 'ABORTED' | 'EXPIRED'; updated_at: Date },
    ) => server.app.db.upload_session.update({ where: { id: sessionId }, data });
    // a run that completes, then crashes before it forgets the session: the saved state stays
    const path = join(dir, `retained-${randomUUID()}.safetensors`);
    await writeFile(path, bigLora(0.5));
    const saved = new Map<string, ResumableState>();
    const store = {
      get: async (key: string) => saved.get(key),
      set: async (key: string, state: ResumableState) => void saved.set(key, state),
      delete: async () => {},
    };
    const client = createLoraClient({ url: server.graphqlUrl, token });
    const first = await client.uploadLoraResumable({ file: { path }, store });
    const completed = [...saved.values()][0]?.sessionId as string;
    await setRow(completed, { updated_at: daysAgo(6) });

    const size = bigLora(0.25).length;
    const begin = async () => (await beginSession(server, token, { sizeBytes: size })).id;
    const old: string[] = [];
    for (const state of ['COMPLETED', 'FAILED', 'ABORTED', 'EXPIRED'] as const) {
      const sessionId = await begin();
      await setRow(sessionId, { state, updated_at: daysAgo(8) });
      old.push(sessionId);
    }
    const recent = await begin();
    await setRow(recent, { state: 'ABORTED', updated_at: daysAgo(6) });
    const open = await begin(); // live, however old its last change
    await setRow(open, { updated_at: daysAgo(30) });
    const completing = await begin();
    await setRow(completing, { state: 'COMPLETING', updated_at: daysAgo(30) });
    // more old ended rows than one batch deletes (another user's, straight into the table)
    const other = newUserId();
    const bulk = Array.from({ length: 2_100 }, () => randomUUID());
    await server.app.db.upload_session.createMany({
      data: bulk.map((sessionId) => ({
        id: sessionId,
        user_id: other,
        state: 'EXPIRED' as const,
        file_name: 'old.safetensors',
        name: 'old',
        size_bytes: 1n,
        block_bytes: BLOCK,
        blob_path: `content/${sessionId}`,
        created_at: daysAgo(9),
        updated_at: daysAgo(8),
        expires_at: daysAgo(8),
      })),
    });

    await server.app.jobs.reconcileNow();
    expect(await server.app.db.upload_session.count({ where: { user_id: other } })).toBe(0);
    const left = await server.app.db.upload_session.findMany({ where: { user_id: id }, select: { id: true, state: true } });
    expect(new Map(left.map((r) => [r.id, r.state]))).toEqual(
      new Map([
        [completed, 'COMPLETED'],
        [recent, 'ABORTED'],
        [open, 'OPEN'],
        [completing, 'COMPLETING'],
      ]),
    );
    // the crashed run resumes: the COMPLETED session answers, the finished LoRA is returned, nothing is uploaded again
    const answer = dataOf(await server.request(LoraUploadSessionDocument, { id: completed }, { token })).loraUploadSession;
    expect(member(answer, 'LoraUploadSession')).toMatchObject({ state: 'COMPLETED', loraId: first.lora.id });
    const resumed = await client.uploadLoraResumable({ file: { path }, store });
    expect(resumed.lora.id).toBe(first.lora.id);
    expect(await server.app.db.upload_session.count({ where: { user_id: id } })).toBe(4);
    // past the retention it goes too, and answers as a session that never existed
    await setRow(completed, { updated_at: daysAgo(8) });
    await server.app.jobs.reconcileNow();
    expect(JSON.stringify(dataOf(await server.request(LoraUploadSessionDocument, { id: completed }, { token })))).toContain(
      'UPLOAD_SESSION_NOT_FOUND',
    );
    await client.close();
  }, 60_000);
});
