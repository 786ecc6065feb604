import { createHash, randomUUID } from 'node:crypto';
import { buffer } from 'node:stream/consumers';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { CompleteLoraUploadDocument, type UploadSessionFieldsFragment } from '../../sdk/index.ts';
import { azuriteConnectionString } from '../../server/embedded/azurite.ts';
import { type CorruptingProxy, type ProxiedRequest, proxyToTestAzurite } from '../testkit/corrupting-proxy.ts';
import { dataOf } from '../testkit/graphql-assertions.ts';
import { beginSession, heldBlocks, putBlock, stageFile } from '../testkit/resumable.ts';
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

beforeAll(async () => {
  proxy = await proxyToTestAzurite(inject('storageConnectionString'));
  server = await startTestServer({
    AZURE_STORAGE_CONNECTION_STRING: azuriteConnectionString(proxy.port),
    UPLOAD_BLOCK_BYTES: String(BLOCK),
    UPLOAD_VALIDATE_AHEAD_POLL_MS: '100',
  });
});
afterAll(async () => {
  await server?.stop();
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

/** Waits until the server has committed every block `which` picks (staging them first). */
async function stageUntilCommitted(
  session: UploadSessionFieldsFragment,
  file: Buffer,
  which: (i: number) => boolean,
  timeoutMs = 15_000,
): Promise<void> {
  const wanted = session.blockIds.filter((_, i) => which(i));
  await eventually(
    async () => {
      const list = await server.app.blobs.sessionBlob(`content/${session.id}`).blockList();
      const held = new Set([...list.committed, ...list.uncommitted].map((b) => b.id));
      await stageFile(session, file, (i) => which(i) && !held.has(session.blockIds[i] as string));
      const committed = new Set(list.committed.map((b) => b.id));
      return wanted.every((id) => committed.has(id));
    },
    timeoutMs,
    'the server committing the staged blocks',
  );
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
    await stageUntilCommitted(session, file, (i) => i < 2);
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
    await stageUntilCommitted(session, file, (i) => i >= 4, 5_000).catch(() => undefined);
    // the right blocks 2 and 3 staged again (completion checks the staged sizes), then complete
    await stageFile(session, file, (i) => i === 2 || i === 3);
    const result = await stageAndComplete(server, session, file, token);

    // never a LoRA whose stored bytes differ from what its sha256 and size describe
    await expectStoredAsRecorded(server, result, file);
  });
});
