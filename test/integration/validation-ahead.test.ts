import { randomUUID } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BlockBlobClient } from '@azure/storage-blob';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { CompleteLoraUploadDocument, createLoraClient, type ResumableRunStats, type UploadSessionFieldsFragment } from '../../sdk/index.ts';
import { azuriteConnectionString } from '../../server/embedded/azurite.ts';
import { type CorruptingProxy, proxyToTestAzurite } from '../testkit/corrupting-proxy.ts';
import { dataOf } from '../testkit/graphql-assertions.ts';
import { sha256 } from '../testkit/hashes.ts';
import { capturingLogger, type LogLine } from '../testkit/log-capture.ts';
import { postMultipart } from '../testkit/multipart.ts';
import { beginSession, heldBlocks, putBlock, stageFile, stageUntilCommitted } from '../testkit/resumable.ts';
import { bigLora } from '../testkit/safetensors.ts';
import { eventually, newUserId } from '../testkit/seed.ts';
import { startTestServer, type TestServer } from '../testkit/server.ts';
import { sample, scrape, startTestTelemetry } from '../testkit/telemetry.ts';

/**
 * Validation of resumable uploads while their blocks arrive (server/uploads/validation-ahead.ts):
 * the server commits what is staged and reads the contiguous prefix under its own ETag, so
 * completion reads only the tail; whatever the client does with its write SAS meanwhile, what is
 * stored is exactly what was validated. Real Azurite behind a logging proxy (the server's reads
 * are seen), 256 KiB blocks, the server looking every 100 ms. Its log and /metrics tell when a
 * validation ahead broke, and whether a completion went on from it or read the whole file.
 */

const BLOCK = 256 * 1024;
let proxy: CorruptingProxy;
let server: TestServer;
let dir: string;
let logs: LogLine[];

beforeAll(async () => {
  startTestTelemetry(); // /metrics
  proxy = await proxyToTestAzurite(inject('storageConnectionString'));
  const capture = capturingLogger();
  logs = capture.lines;
  server = await startTestServer(
    {
      AZURE_STORAGE_CONNECTION_STRING: azuriteConnectionString(proxy.port),
      UPLOAD_BLOCK_BYTES: String(BLOCK),
      UPLOAD_VALIDATE_AHEAD_POLL_MS: '100',
    },
    { logger: capture.logger },
  );
  dir = await mkdtemp(join(tmpdir(), 'ahead-'));
});
afterAll(async () => {
  await server?.stop();
  await proxy?.close();
  await rm(dir, { recursive: true, force: true });
});

async function userToken(): Promise<string> {
  return server.tokens.user(newUserId());
}

const blockOf = (file: Buffer, i: number) => file.subarray(i * BLOCK, (i + 1) * BLOCK);

/** The blocks the server has committed to the session's blob so far. */
async function committedBlocks(session: UploadSessionFieldsFragment): Promise<string[]> {
  return (await server.app.blobs.sessionBlob(`content/${session.id}`).blockList()).committed.map((b) => b.id);
}

/** Stages what storage lacks of `file` and completes; again while completion names blocks dropped meanwhile (as the SDK does). */
async function stageAndComplete(session: UploadSessionFieldsFragment, file: Buffer, token: string) {
  for (let round = 0; ; round++) {
    const held = new Set((await heldBlocks(server.app, `content/${session.id}`)).map((b) => b.id));
    await stageFile(session, file, (i) => !held.has(session.blockIds[i] as string));
    const result = dataOf(
      await server.request(CompleteLoraUploadDocument, { id: session.id, blockIds: session.blockIds }, { token }),
    ).completeLoraUpload;
    const dropped = result.__typename === 'ValidationError' && result.issues.some((i) => /never staged/.test(i.message));
    if (!dropped || round >= 5) return result;
  }
}

/** The completion made a READY LoRA described by `bytes`' sha256, and its blob holds exactly `bytes`. */
async function expectStored(result: unknown, bytes: Buffer): Promise<void> {
  expect(result).toMatchObject({ __typename: 'UploadLoraSuccess', lora: { sha256: sha256(bytes), sizeBytes: bytes.length } });
  const row = await server.app.db.lora.findFirstOrThrow({ where: { file_id: BigInt((result as { lora: { id: string } }).lora.id) } });
  expect((await server.app.blobs.read(row.blob_path)).equals(bytes)).toBe(true);
}

/** The server's reads of the session's snapshots from the proxy log: the first byte each asked for. */
function snapshotReadsFrom(session: UploadSessionFieldsFragment, since: number): number[] {
  return proxy.log
    .slice(since)
    .filter((e) => e.method === 'GET' && e.url.includes(`content/${session.id}`) && e.url.includes('snapshot=') && !e.url.includes('comp='))
    .map((e) => Number(/bytes=(\d+)-/.exec(e.msRange ?? e.range ?? '')?.[1] ?? 0));
}

/** Put Block List through the client's write SAS (what the SDK never does; a client may). */
async function clientCommit(session: UploadSessionFieldsFragment, ids: string[]): Promise<number> {
  const xml = `<?xml version="1.0" encoding="utf-8"?><BlockList>${ids.map((id) => `<Latest>${id}</Latest>`).join('')}</BlockList>`;
  const res = await fetch(`${session.uploadUrl}&comp=blocklist`, { method: 'PUT', body: xml });
  await res.arrayBuffer();
  return res.status;
}

/** The server's /metrics now; `movedSince(before)` tells how much a sample moved since. */
const metricsNow = () => scrape(`${server.url}/metrics`);
async function movedSince(before: Map<string, number>): Promise<(name: string, labels?: Record<string, string>) => number> {
  const after = await metricsNow();
  return (name, labels = {}) => sample(after, name, labels) - sample(before, name, labels);
}
const BREAKS = 'lora_vault_upload_validation_ahead_breaks_total';
const COMPLETIONS = 'lora_vault_upload_validation_ahead_completions_total';

describe('validation ahead of completion', () => {
  it('validates blocks as they arrive: completion reads only what was not validated, and nothing staged is lost', async () => {
    const metricsBefore = await metricsNow();
    const token = await userToken();
    const file = bigLora(6); // 24 blocks
    const session = await beginSession(server, token, { sizeBytes: file.length });
    // one block further on first, then the first half in order
    await stageFile(session, file, (i) => i === 15);
    await stageUntilCommitted(server.app, session, file, (i) => i < 12 || i === 15);
    // the out-of-order block was committed with the rest (not discarded), after the validated prefix
    expect(await committedBlocks(session)).toEqual([...session.blockIds.slice(0, 12), session.blockIds[15]]);
    const since = proxy.log.length;
    const result = await stageAndComplete(session, file, token);
    await expectStored(result, file);
    const reads = snapshotReadsFrom(session, since); // none when everything was validated before completion
    for (const from of reads) expect(from).toBeGreaterThanOrEqual(12 * BLOCK); // never the validated prefix again
    // counted as a completion that went on from the validation ahead; nothing broke
    const moved = await movedSince(metricsBefore);
    expect([moved(COMPLETIONS, { read: 'ahead' }), moved(COMPLETIONS, { read: 'full' }), moved(BREAKS)]).toEqual([1, 0, 0]);
  });

  it('a block staged again under a validated id is ignored: what is stored is what was validated', async () => {
    const token = await userToken();
    const file = bigLora(2); // 8 blocks
    const session = await beginSession(server, token, { sizeBytes: file.length });
    await stageUntilCommitted(server.app, session, file, (i) => i < 4);
    const other = Buffer.alloc(BLOCK, 0x41);
    expect(await putBlock(session.uploadUrl as string, session.blockIds[1] as string, other)).toBe(201);
    const result = await stageAndComplete(session, file, token);
    await expectStored(result, file);
  });

  it('a client committing through its SAS meanwhile: the server notices, reads the whole file, and stores what it validated', async () => {
    const metricsBefore = await metricsNow();
    const token = await userToken();
    const file = bigLora(2); // 8 blocks
    const session = await beginSession(server, token, { sizeBytes: file.length });
    await stageUntilCommitted(server.app, session, file, (i) => i < 4);
    // block 1 replaced by other bytes and committed by the client: the server's ETag no longer holds
    const tampered = Buffer.from(file);
    tampered.fill(0x42, BLOCK, 2 * BLOCK);
    expect(await putBlock(session.uploadUrl as string, session.blockIds[1] as string, blockOf(tampered, 1))).toBe(201);
    expect(await clientCommit(session, session.blockIds.slice(0, 4))).toBe(201);
    const since = proxy.log.length;
    const result = await stageAndComplete(session, tampered, token);
    // the whole snapshot is read again, from byte 0, and the LoRA describes the bytes stored
    expect(snapshotReadsFrom(session, since)).toContain(0);
    await expectStored(result, tampered);
    // the break is said: one warning naming the session and why, the break and the full read counted
    const said = logs.filter((l) => l.sessionId === session.id && l.msg?.startsWith('validation ahead'));
    expect(said).toEqual([expect.objectContaining({ level: 40, reason: 'blob_changed' })]);
    const moved = await movedSince(metricsBefore);
    expect([
      moved(BREAKS, { reason: 'blob_changed' }),
      moved(BREAKS),
      moved(COMPLETIONS, { read: 'full' }),
      moved(COMPLETIONS, { read: 'ahead' }),
    ]).toEqual([1, 1, 1, 0]);
  });

  it('blocks no block list of the session names (junk staged through the SAS) are discarded within a poll', async () => {
    const token = await userToken();
    const file = bigLora(1); // 4 blocks
    const session = await beginSession(server, token, { sizeBytes: file.length });
    const url = session.uploadUrl as string;
    const junkId = Buffer.from('junk-00000').toString('base64'); // as long as the session's ids (storage wants one length)
    expect(await putBlock(url, junkId, Buffer.alloc(2 * BLOCK, 1))).toBe(201); // an id of no block list
    expect(await putBlock(url, session.blockIds[2] as string, Buffer.alloc(BLOCK + 1, 2))).toBe(201); // a wrong size
    await eventually(async () => (await heldBlocks(server.app, `content/${session.id}`)).length === 0, 15_000, 'the junk blocks discarded');
    const result = await stageAndComplete(session, file, token);
    expect(result).toMatchObject({ __typename: 'UploadLoraSuccess', lora: { sha256: sha256(file) } });
  });

  it('a file refused while its blocks arrive gets the same typed error as multipart, and nothing is left', async () => {
    const token = await userToken();
    // a safetensors header that is not JSON, then 1 MiB of zeros (4 blocks)
    const bad = Buffer.alloc(1024 * 1024);
    bad.writeBigUInt64LE(64n, 0);
    bad.write('{"w": {"dtype": "F16", "shape": [1], "data_offsets": [0, 2]', 8, 'latin1');
    const viaMultipart = await postMultipart({ url: server.graphqlUrl, token, file: bad, filename: 'bad.safetensors' });
    const expected = viaMultipart.body.data.uploadLora as { __typename: string; code: string };
    expect(expected.__typename).not.toBe('UploadLoraSuccess');
    const session = await beginSession(server, token, { fileName: 'bad.safetensors', sizeBytes: bad.length });
    await stageUntilCommitted(server.app, session, bad, (i) => i < 1); // refused on reading block 0: nothing later is committed
    const result = (await stageAndComplete(session, bad, token)) as { __typename: string; code: string };
    expect({ __typename: result.__typename, code: result.code }).toEqual({ __typename: expected.__typename, code: expected.code });
    expect(await server.app.blobs.sessionBlob(`content/${session.id}`).blockList()).toEqual({ committed: [], uncommitted: [] });
    const row = await server.app.db.upload_session.findUniqueOrThrow({ where: { id: session.id } });
    expect(row.state).toBe('FAILED');
  });
});

describe('the SDK', () => {
  // A server that never commits early, so that the block this test drops stays dropped
  // (with validation ahead on, the server may have committed it before the drop).
  let plain: TestServer;
  beforeAll(async () => {
    plain = await startTestServer({ UPLOAD_BLOCK_BYTES: String(BLOCK), UPLOAD_VALIDATE_AHEAD: '0' });
  });
  afterAll(async () => {
    await plain?.stop();
  });

  it('stages again a block storage dropped before completion, and completes', async () => {
    const token = await plain.tokens.user(newUserId());
    const file = bigLora(2); // 8 blocks
    const path = join(dir, `drop-${randomUUID()}.safetensors`);
    await writeFile(path, file);
    let dropped = false;
    const puts: string[] = [];
    // Before the last block goes out, commit every staged block but block 3: storage discards it,
    // as it does for a block staged at the instant of one of the server's commits.
    const fetchWithDrop = async (input: string, init: RequestInit): Promise<Response> => {
      const last = /blockid=([^&]+)/.exec(input)?.[1];
      if (last) puts.push(Buffer.from(decodeURIComponent(last), 'base64').toString());
      const url = new URL(input);
      if (!dropped && last && decodeURIComponent(last) === Buffer.from('lvb-000007').toString('base64')) {
        dropped = true;
        const ids = [0, 1, 2, 4, 5, 6].map((i) => Buffer.from(`lvb-${String(i).padStart(6, '0')}`).toString('base64'));
        const sas = `${url.origin}${url.pathname}?${[...url.searchParams]
          .filter(([k]) => k !== 'comp' && k !== 'blockid')
          .map(([k, v]) => `${k}=${encodeURIComponent(v)}`)
          .join('&')}`;
        await new BlockBlobClient(sas).commitBlockList(ids);
      }
      return fetch(input, init);
    };
    const stats: ResumableRunStats = { bytesSent: 0, blocksSent: 0, blocksResumed: 0 };
    const client = createLoraClient({ url: plain.graphqlUrl, token, fetch: fetchWithDrop });
    try {
      const done = await client.uploadLoraResumable({ file: { path }, concurrency: 1, stats });
      expect(dropped).toBe(true);
      expect(done.lora.sha256).toBe(sha256(file));
      // block 3 twice (others may be sent again too: a block staged at the instant of a server commit is dropped)
      expect(puts.filter((id) => id === 'lvb-000003')).toHaveLength(2);
      expect(stats.blocksSent).toBe(puts.length);
    } finally {
      await client.close();
    }
  });
});
