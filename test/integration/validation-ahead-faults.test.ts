import { createHash, randomUUID } from 'node:crypto';
import { mkdtemp, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buffer } from 'node:stream/consumers';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { CompleteLoraUploadDocument, type UploadSessionFieldsFragment } from '../../sdk/index.ts';
import { azuriteConnectionString } from '../../server/embedded/azurite.ts';
import { type CorruptingProxy, type ProxiedRequest, proxyToTestAzurite } from '../testkit/corrupting-proxy.ts';
import { dataOf } from '../testkit/graphql-assertions.ts';
import { torchZip } from '../testkit/pt-builders.ts';
import { beginSession, heldBlocks, putBlock, stageFile, stageUntilCommitted } from '../testkit/resumable.ts';
import { makeSafetensors } from '../testkit/safetensors.ts';
import { eventually, newUserId } from '../testkit/seed.ts';
import { startTestServer, type TestServer } from '../testkit/server.ts';

/**
 * Validation ahead of completion (server/uploads/validation-ahead.ts) under a hostile client and
 * storage faults (issue 17 review): what is stored is always what was validated, completion never
 * loses an upload to the server's own commits, and every error path ends the running pipeline.
 * Real Azurite behind logging proxies that hold the server's requests where a race needs a window.
 */

const BLOCK = 256 * 1024;
let proxy: CorruptingProxy;
let server: TestServer;
/** Another replica (same database and storage, behind its own proxy) that validates nothing ahead. */
let proxy2: CorruptingProxy;
let replica: TestServer;

beforeAll(async () => {
  proxy = await proxyToTestAzurite(inject('storageConnectionString'));
  server = await startTestServer({
    AZURE_STORAGE_CONNECTION_STRING: azuriteConnectionString(proxy.port),
    UPLOAD_BLOCK_BYTES: String(BLOCK),
    UPLOAD_VALIDATE_AHEAD_POLL_MS: '100',
    DATA_DIR: await mkdtemp(join(tmpdir(), 'ahead-faults-')), // its own spool directory
  });
  proxy2 = await proxyToTestAzurite(inject('storageConnectionString'));
  replica = await startTestServer({
    AZURE_STORAGE_CONNECTION_STRING: azuriteConnectionString(proxy2.port),
    UPLOAD_BLOCK_BYTES: String(BLOCK),
    UPLOAD_VALIDATE_AHEAD: '0',
  });
});
afterAll(async () => {
  await replica?.stop();
  await server?.stop();
  await proxy2?.close();
  await proxy?.close();
});

/** A valid safetensors LoRA of about `mib` MiB, unique content. */
function bigLora(mib: number): Buffer {
  return makeSafetensors([{ name: 'w', shape: [(mib * 1024 * 1024) / 2], dtype: 'F16' }], { id: randomUUID() });
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** A request the server made (shared key, no SAS) to the session's blob, of the given kind. */
function byServer(session: UploadSessionFieldsFragment, kind: 'commit' | 'list') {
  return (r: ProxiedRequest) =>
    r.url.includes(`content/${session.id}`) &&
    !r.url.includes('sig=') &&
    r.url.includes('comp=blocklist') &&
    r.method === (kind === 'commit' ? 'PUT' : 'GET') &&
    (kind === 'commit' || r.url.includes('blocklisttype=all'));
}

/** Indexes in `proxy.log` of the server's requests of that kind for the session, from `since`. */
function seen(p: CorruptingProxy, session: UploadSessionFieldsFragment, kind: 'commit' | 'list', since = 0): number[] {
  const match = byServer(session, kind);
  return p.log.flatMap((e, i) => (i >= since && match(e) ? [i] : []));
}

async function complete(on: TestServer, session: UploadSessionFieldsFragment, token: string) {
  return dataOf(await on.request(CompleteLoraUploadDocument, { id: session.id, blockIds: session.blockIds }, { token })).completeLoraUpload;
}

/** Stages what storage lacks and completes; again while completion names blocks storage lacks (as the SDK does). */
async function stageAndComplete(on: TestServer, session: UploadSessionFieldsFragment, file: Buffer, token: string) {
  for (let round = 0; ; round++) {
    const held = new Set((await heldBlocks(on.app, `content/${session.id}`)).map((b) => b.id));
    await stageFile(session, file, (i) => !held.has(session.blockIds[i] as string));
    const result = await complete(on, session, token);
    const lacking = result.__typename === 'ValidationError' && result.issues.some((i) => i.path === 'blockIds');
    if (!lacking || round >= 5) return result;
  }
}

/** The stored LoRA's bytes are the ones its sha256 and size describe. */
async function expectStoredAsRecorded(on: TestServer, result: Awaited<ReturnType<typeof complete>>, file: Buffer): Promise<void> {
  if (result.__typename !== 'UploadLoraSuccess') throw new Error(`completion: ${JSON.stringify(result)}`);
  const row = await on.app.db.lora.findFirstOrThrow({ where: { file_id: BigInt(result.lora.id) } });
  const stored = row.blob_snapshot
    ? await buffer(await on.app.blobs.readSnapshot(row.blob_path, row.blob_snapshot))
    : await on.app.blobs.read(row.blob_path);
  expect({ size: stored.length, sha256: sha256(stored) }).toEqual({ size: result.lora.sizeBytes, sha256: result.lora.sha256 });
  expect(result.lora.sha256).toBe(sha256(file));
}

describe('a client racing the server with its write SAS', () => {
  it('a block staged again with another size between the server looking and committing: what is stored is what was validated', async () => {
    const token = await server.tokens.user(newUserId());
    const file = bigLora(2); // 8 blocks
    const session = await beginSession(server, token, { sizeBytes: file.length });
    const url = session.uploadUrl as string;
    const ids = session.blockIds;
    const d = 1000;
    await stageUntilCommitted(server.app, session, file, (i) => i < 2);
    // From here the server's commits of this session wait at the proxy: the window between its look
    // at the block list and its commit, wide enough for the client to stage a block again inside it.
    let holding = true;
    const commits = byServer(session, 'commit');
    proxy.add({ fault: { kind: 'delay', ms: 1500 }, times: Number.POSITIVE_INFINITY, match: (r) => holding && commits(r) });
    const since = proxy.log.length;
    // block 2 alone: the server's next look sees it (right size) and commits it; meanwhile it becomes d bytes shorter
    await stageFile(session, file, (i) => i === 2);
    await eventually(async () => seen(proxy, session, 'commit', since).length >= 1, 15_000, "the server's first commit");
    expect(await putBlock(url, ids[2] as string, Buffer.alloc(BLOCK - d, 0x41))).toBe(201);
    const first = seen(proxy, session, 'commit', since)[0] as number;
    await eventually(async () => (proxy.log[first]?.status ?? 0) > 0, 15_000, 'the first commit done');
    // block 3 alone, made 2d longer inside the next commit's window (if the server still validates ahead)
    const next = proxy.log.length;
    await stageFile(session, file, (i) => i === 3);
    const second = await eventually(async () => seen(proxy, session, 'commit', next).length >= 1, 5_000, 'a second commit').catch(
      () => false,
    );
    if (second) {
      expect(await putBlock(url, ids[3] as string, Buffer.alloc(BLOCK + 2 * d, 0x42))).toBe(201);
      const at = seen(proxy, session, 'commit', next)[0] as number;
      await eventually(async () => (proxy.log[at]?.status ?? 0) > 0, 15_000, 'the second commit done');
    }
    // the rest of the file, committed ahead while the server still validates ahead (for at most 5 s)
    holding = false;
    await stageUntilCommitted(server.app, session, file, (i) => i >= 4, 5_000).catch(() => undefined);
    // the right blocks 2 and 3 staged again (completion checks the staged sizes), then complete
    await stageFile(session, file, (i) => i === 2 || i === 3);
    const result = await stageAndComplete(server, session, file, token);

    // never a LoRA whose stored bytes differ from what its sha256 and size describe
    await expectStoredAsRecorded(server, result, file);
  });
});

/** Holds the server's commits of one session at `p` (while `on()`): a commit of the server's stays in flight that long. */
function holdCommits(p: CorruptingProxy, session: UploadSessionFieldsFragment, ms = 1500): { release(): void } {
  let holding = true;
  const commits = byServer(session, 'commit');
  p.add({ fault: { kind: 'delay', ms }, times: Number.POSITIVE_INFINITY, match: (r) => holding && commits(r) });
  return {
    release: () => {
      holding = false;
    },
  };
}

async function sessionState(session: UploadSessionFieldsFragment): Promise<string> {
  return (await server.app.db.upload_session.findUniqueOrThrow({ where: { id: session.id } })).state;
}

describe('completion after validating ahead', () => {
  it('everything validated ahead: completion reads nothing more (Azure answers 416 to a range starting at the size)', async () => {
    const token = await server.tokens.user(newUserId());
    const file = bigLora(1);
    const session = await beginSession(server, token, { sizeBytes: file.length });
    await stageUntilCommitted(server.app, session, file, () => true);
    const since = proxy.log.length;
    const result = await stageAndComplete(server, session, file, token);
    await expectStoredAsRecorded(server, result, file);
    const reads = proxy.log
      .slice(since)
      .filter((e) => e.method === 'GET' && e.url.includes(`content/${session.id}`) && !e.url.includes('comp='));
    expect(reads.map((e) => e.msRange)).not.toContain(`bytes=${file.length}-`);
  });

  it("a commit of the server's in flight at completion drops the last block: completion names it, the session stays OPEN, and staging it again completes", async () => {
    const token = await server.tokens.user(newUserId());
    const file = bigLora(2);
    const session = await beginSession(server, token, { sizeBytes: file.length });
    const n = session.blockIds.length;
    await stageUntilCommitted(server.app, session, file, (i) => i < n - 2);
    const hold = holdCommits(proxy, session);
    const since = proxy.log.length;
    // the server's look sees block n-2 and its commit waits at the proxy; the last block is staged after that look
    await stageFile(session, file, (i) => i === n - 2);
    await eventually(async () => seen(proxy, session, 'commit', since).length >= 1, 15_000, "the server's commit");
    await stageFile(session, file, (i) => i === n - 1);
    const first = await complete(server, session, token);
    hold.release();
    expect(first).toMatchObject({
      __typename: 'ValidationError',
      issues: [{ path: 'blockIds', message: expect.stringMatching(/never staged/) }],
    });
    expect(await sessionState(session)).toBe('OPEN');
    await expectStoredAsRecorded(server, await stageAndComplete(server, session, file, token), file);
  });

  it('blocks dropped by a commit from elsewhere (another replica, the client) during the final commit: the session goes back to OPEN, and staging them again completes', async () => {
    const token = await server.tokens.user(newUserId());
    const file = bigLora(1);
    const session = await beginSession(replica, token, { sizeBytes: file.length });
    const n = session.blockIds.length;
    await stageFile(session, file);
    const hold = holdCommits(proxy2, session);
    const since = proxy2.log.length;
    const completing = complete(replica, session, token);
    // while the replica's commit waits at its proxy: a commit naming every block but the last
    await eventually(async () => seen(proxy2, session, 'commit', since).length >= 1, 15_000, "the replica's commit");
    const xml = `<?xml version="1.0" encoding="utf-8"?><BlockList>${session.blockIds
      .slice(0, n - 1)
      .map((id) => `<Latest>${id}</Latest>`)
      .join('')}</BlockList>`;
    const res = await fetch(`${session.uploadUrl}&comp=blocklist`, { method: 'PUT', body: xml });
    await res.arrayBuffer();
    expect(res.status).toBe(201);
    const first = await completing;
    hold.release();
    expect(first).toMatchObject({ __typename: 'ValidationError', issues: [{ path: 'blockIds' }] });
    expect(await sessionState(session)).toBe('OPEN');
    await expectStoredAsRecorded(replica, await stageAndComplete(replica, session, file, token), file);
  });

  it('a storage failure at completion ends the pipeline validating ahead: no spooled .pt is left', async () => {
    const token = await server.tokens.user(newUserId());
    // a torch zip LoRA of a few blocks
    const file = torchZip([
      { name: 'lora_unet_a.lora_down.weight', shape: [4, 64 * 1024] },
      { name: 'lora_unet_a.lora_up.weight', shape: [64 * 1024, 4] },
    ]);
    const session = await beginSession(server, token, { fileName: 'lora.pt', sizeBytes: file.length });
    const n = session.blockIds.length;
    expect(n).toBeGreaterThan(2);
    const spool = join(server.app.config.dataDir, 'spool');
    const spooled = async () => (await readdir(spool).catch(() => [] as string[])).filter((f) => f.startsWith('upload-'));
    await stageUntilCommitted(server.app, session, file, (i) => i < n - 1);
    expect((await spooled()).length).toBeGreaterThan(0); // the pipeline validating ahead spools the .pt
    proxy.add({
      fault: { kind: 'status', status: 403 },
      match: (r) => r.method === 'PUT' && r.url.includes(`content/${session.id}`) && r.url.includes('comp=snapshot'),
    });
    await stageFile(session, file, (i) => i === n - 1);
    const res = await server.request(CompleteLoraUploadDocument, { id: session.id, blockIds: session.blockIds }, { token });
    expect(res.body.errors ?? res.body.data?.completeLoraUpload.__typename).not.toBe('UploadLoraSuccess');
    await eventually(async () => (await spooled()).length === 0, 15_000, 'the spooled .pt removed');
  });
});

describe('finalize', () => {
  it('a link race, then no stored content to link to: the retry snapshots the upload’s own blob at the ETag its first try gave it', async () => {
    const token = await server.tokens.user(newUserId());
    const file = bigLora(1);
    const session = await beginSession(replica, token, { sizeBytes: file.length });
    await stageFile(session, file);
    const own = `content/${session.id}`;
    const other = `content/${randomUUID()}`;
    const ours = (r: ProxiedRequest) => r.url.includes(own) && !r.url.includes('sig=');
    // the first touch of the upload's own blob waits: meanwhile the same content is stored by
    // "another upload" (a linkable row), so this link loses the race (LinkRaceError) ...
    proxy2.add({ fault: { kind: 'delay', ms: 1500 }, match: (r) => ours(r) && r.method === 'PUT' && r.url.includes('comp=metadata') });
    // ... and while its snapshot is deleted, that content stops being linkable: the retry links the own blob
    proxy2.add({ fault: { kind: 'delay', ms: 1500 }, match: (r) => ours(r) && r.method === 'DELETE' && r.url.includes('snapshot=') });
    const since = proxy2.log.length;
    const completing = complete(replica, session, token);
    const logged = (method: string, part: string) =>
      proxy2.log.slice(since).some((e) => ours(e) && e.method === method && e.url.includes(part));
    try {
      await eventually(async () => logged('PUT', 'comp=metadata'), 15_000, 'the first touch');
      await replica.app.db.$executeRaw`
        INSERT INTO lora_blob (blob_path, container, sha256, size_bytes, etag, ref_count)
        VALUES (${other}, ${replica.app.blobs.container}, ${sha256(file)}, ${file.length}, '"0x0"', 1)`;
      await eventually(async () => logged('DELETE', 'snapshot='), 15_000, 'the lost link’s snapshot deleted');
      await replica.app.db.$executeRaw`UPDATE lora_blob SET linkable = false WHERE blob_path = ${other}`;
      await expectStoredAsRecorded(replica, await completing, file);
    } finally {
      await completing.catch(() => undefined);
      await replica.app.db.$executeRaw`DELETE FROM lora_blob WHERE blob_path = ${other}`;
    }
  });
});

describe('the reconciler', () => {
  it('leaves a session whose expiry passes during its completion to the completion; ends one COMPLETING past the stale time', async () => {
    const token = await replica.tokens.user(newUserId());
    const file = bigLora(1);
    const session = await beginSession(replica, token, { sizeBytes: file.length });
    await stageFile(session, file);
    const hold = holdCommits(proxy2, session, 6000);
    const since = proxy2.log.length;
    const completing = complete(replica, session, token);
    await eventually(async () => seen(proxy2, session, 'commit', since).length >= 1, 15_000, "the replica's commit");
    hold.release(); // (only that commit waits)
    expect(await sessionState(session)).toBe('COMPLETING');
    await replica.app.db.upload_session.update({ where: { id: session.id }, data: { expires_at: new Date(Date.now() - 1000) } });
    await replica.app.jobs.reconcileNow();
    await expectStoredAsRecorded(replica, await completing, file);
    expect(await sessionState(session)).toBe('COMPLETED');
    // a completion that never ended (its process crashed): EXPIRED once past expires_at + UPLOAD_STALE_SECONDS (3 h)
    const left = await beginSession(replica, token, { sizeBytes: file.length });
    const staleMs = replica.app.config.uploadStaleMs;
    await replica.app.db.upload_session.update({
      where: { id: left.id },
      data: { state: 'COMPLETING', expires_at: new Date(Date.now() - staleMs - 60_000) },
    });
    await replica.app.jobs.reconcileNow();
    expect(await sessionState(left)).toBe('EXPIRED');
  });
});

describe('limits', () => {
  it("at most UPLOAD_VALIDATE_AHEAD_PER_USER (2) of one user's sessions are validated ahead; the others at completion", async () => {
    const token = await server.tokens.user(newUserId());
    const file = bigLora(1);
    const sessions = [
      await beginSession(server, token, { sizeBytes: file.length }),
      await beginSession(server, token, { sizeBytes: file.length }),
      await beginSession(server, token, { sizeBytes: file.length }),
    ];
    const [first, second, third] = sessions as [UploadSessionFieldsFragment, UploadSessionFieldsFragment, UploadSessionFieldsFragment];
    const since = proxy.log.length;
    for (const s of sessions) await stageFile(s, file, (i) => i === 0);
    await stageUntilCommitted(server.app, first, file, (i) => i === 0);
    const after = proxy.log.length;
    await eventually(async () => seen(proxy, second, 'list', after).length >= 2, 15_000, 'two more looks at a watched session');
    expect(seen(proxy, third, 'list', since)).toEqual([]); // never looked at: no pipeline, no spool for it
    await expectStoredAsRecorded(server, await stageAndComplete(server, third, file, token), file);
    for (const s of [first, second]) await expectStoredAsRecorded(server, await stageAndComplete(server, s, file, token), file);
  });
});
