import { createHash, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { CompleteLoraUploadDocument, CreateLoraDownloadDocument, DeleteUserLoraAccountDocument } from '../../sdk/index.ts';
import { azuriteConnectionString } from '../../server/embedded/azurite.ts';
import { type CorruptingProxy, proxyToTestAzurite } from '../testkit/corrupting-proxy.ts';
import { loraDownload, mintGrant } from '../testkit/grants.ts';
import { dataOf, member } from '../testkit/graphql-assertions.ts';
import { invariantViolations } from '../testkit/invariants.ts';
import { deleteLora } from '../testkit/library-helpers.ts';
import { postMultipart } from '../testkit/multipart.ts';
import { OWNER_DOWNLOAD_HEADERS } from '../testkit/owner-downloads.ts';
import { beginSession, heldBlocks, stageFile } from '../testkit/resumable.ts';
import { makeSafetensors } from '../testkit/safetensors.ts';
import { eventually, newUser, seedLora } from '../testkit/seed.ts';
import { startTestServer, type TestServer } from '../testkit/server.ts';

/**
 * Identical content stored once (issue 17 §2; THREATS.md rows 51-53): one base blob per sha256
 * with a reference count, per-LoRA snapshots, the content-deletion job the only deleter of bases.
 * Real Azurite behind a fault-injecting proxy, a real server with job workers.
 */

let proxy: CorruptingProxy;
let server: TestServer;

beforeAll(async () => {
  proxy = await proxyToTestAzurite(inject('storageConnectionString'));
  server = await startTestServer({
    AZURE_STORAGE_CONNECTION_STRING: azuriteConnectionString(proxy.port),
    UPLOAD_BLOCK_BYTES: String(256 * 1024),
  });
});
afterAll(async () => {
  await server?.stop();
  await proxy?.close();
});

function content(): Buffer {
  return makeSafetensors([{ name: 'w', shape: [64 * 1024], dtype: 'F16' }], { id: randomUUID() });
}
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

const user = () => newUser(server);

async function uploadMultipart(token: string, file: Buffer): Promise<string> {
  const res = await postMultipart({ url: server.graphqlUrl, token, file });
  const result = res.body?.data?.uploadLora;
  if (result?.__typename !== 'UploadLoraSuccess') throw new Error(`upload: ${res.text}`);
  return result.lora.id as string;
}

async function uploadResumable(token: string, file: Buffer): Promise<string> {
  const session = await beginSession(server, token, { sizeBytes: file.length });
  await stageFile(session, file);
  const done = dataOf(await server.request(CompleteLoraUploadDocument, { id: session.id, blockIds: session.blockIds }, { token }));
  return member(done.completeLoraUpload, 'UploadLoraSuccess').lora.id;
}

async function downloadStatus(userId: string, loraId: string): Promise<{ status: number; url?: string; bytes?: Buffer }> {
  const got = await loraDownload(server, await server.tokens.machine(), loraId, await mintGrant(server, userId));
  if (got.__typename !== 'LoraDownload') return { status: 404 };
  const res = await fetch(got.url);
  return { status: res.status, url: got.url, bytes: Buffer.from(await res.arrayBuffer()) };
}

/** Every stored content: its reference count equals the READY LoRAs naming its base. */
async function refCountsHold(): Promise<string[]> {
  const rows = await server.app.db.$queryRaw<{ blob_path: string; ref_count: number; ready: bigint }[]>`
    SELECT b.blob_path, b.ref_count, (SELECT count(*) FROM lora l WHERE l.blob_path = b.blob_path AND l.status = 'READY') AS ready
    FROM lora_blob b WHERE b.container = ${server.app.blobs.container}`;
  return rows.filter((r) => r.ref_count !== Number(r.ready)).map((r) => `${r.blob_path}: ${r.ref_count} ≠ ${r.ready}`);
}

describe('identical content', () => {
  it('two users, one blob: each is charged in full, sees their own LoRA, and either can delete without harming the other', async () => {
    const a = await user();
    const b = await user();
    const file = content();
    const idA = await uploadMultipart(a.token, file);
    const idB = await uploadResumable(b.token, file);
    const [rowA, rowB] = await Promise.all(
      [idA, idB].map((id) => server.app.db.lora.findUniqueOrThrow({ where: { file_id: BigInt(id) } })),
    );
    expect(rowA?.blob_path).toBe(rowB?.blob_path);
    expect(rowA?.blob_snapshot).not.toBe(rowB?.blob_snapshot);
    expect(await server.app.db.lora_blob.findMany({ where: { sha256: sha(file), container: server.app.blobs.container } })).toMatchObject([
      { blob_path: rowA?.blob_path, ref_count: 2 },
    ]);
    for (const u of [a, b]) {
      expect(await server.app.db.user_lora_quota.findUniqueOrThrow({ where: { user_id: u.id } })).toMatchObject({
        used_bytes: BigInt(file.length),
        lora_count: 1,
      });
    }
    // B's own upload blob was a duplicate: the content job removes it
    await eventually(
      async () =>
        (await heldBlocks(server.app, `content/${(await server.app.db.upload_session.findFirstOrThrow({ where: { user_id: b.id } })).id}`))
          .length === 0 &&
        !(await server.app.blobs.exists(
          `content/${(await server.app.db.upload_session.findFirstOrThrow({ where: { user_id: b.id } })).id}`,
        )),
      20_000,
      "B's duplicate blob removed",
    );

    const urlA = await downloadStatus(a.id, idA);
    expect(urlA.status).toBe(200);
    member(await deleteLora(server, a.token, idA), 'DeleteLoraSuccess');
    // A's URL dies with A's delete (A's own snapshot), exactly as when nobody else holds the file
    expect((await fetch(urlA.url as string)).status).toBe(404);
    const stillB = await downloadStatus(b.id, idB);
    expect(stillB.status).toBe(200);
    expect(stillB.bytes?.equals(file)).toBe(true);
    expect((await server.app.db.lora_blob.findUniqueOrThrow({ where: { blob_path: rowB?.blob_path as string } })).ref_count).toBe(1);

    member(await deleteLora(server, b.token, idB), 'DeleteLoraSuccess');
    await eventually(
      async () => !(await server.app.blobs.exists(rowB?.blob_path as string)),
      20_000,
      'base deleted with its last reference',
    );
    expect(await server.app.db.lora_blob.findUnique({ where: { blob_path: rowB?.blob_path as string } })).toBeNull();
  }, 60_000);

  it("the purge of a deleted account whose resumable upload stored the content first leaves another user's LoRA of it whole", async () => {
    const a = await user();
    const b = await user();
    const file = content();
    await uploadResumable(a.token, file); // A's session blob becomes the stored content
    const idB = await uploadMultipart(b.token, file);
    const session = await server.app.db.upload_session.findFirstOrThrow({ where: { user_id: a.id } });
    const rowB = await server.app.db.lora.findUniqueOrThrow({ where: { file_id: BigInt(idB) } });
    expect(rowB.blob_path).toBe(session.blob_path);
    const deletion = await server.request(DeleteUserLoraAccountDocument, { userId: a.id }, { token: await server.tokens.service() });
    expect(dataOf(deletion).deleteUserLoraAccount).toMatchObject({ status: 'DELETED' });
    const mark = await server.app.db.lora_account_deletion.update({
      where: { user_id: a.id },
      data: { purge_after: new Date(Date.now() - 1000) },
    });
    expect(await server.app.jobs.purgeAccountNow({ userId: a.id, deletionId: mark.deletion_id })).toBe('purged');
    const got = await downloadStatus(b.id, idB);
    expect(got.status).toBe(200);
    expect(got.bytes?.equals(file)).toBe(true);
    expect(await server.app.db.lora_blob.findUniqueOrThrow({ where: { blob_path: rowB.blob_path } })).toMatchObject({ ref_count: 1 });
  }, 60_000);

  it("each user's download of shared content shows their own time (Last-Modified) and ETag, and the content stays linkable", async () => {
    const [a, b, c] = await Promise.all([user(), user(), user()]);
    const file = content();
    const timed = async (upload: () => Promise<string>) => {
      const from = Date.now();
      const id = await upload();
      return { id, from, to: Date.now() };
    };
    const upA = await timed(() => uploadMultipart(a.token, file));
    await new Promise((r) => setTimeout(r, 1_100)); // Last-Modified has whole seconds
    const upB = await timed(() => uploadResumable(b.token, file));
    const heads = async (userId: string, loraId: string) => {
      const got = await loraDownload(server, await server.tokens.machine(), loraId, await mintGrant(server, userId));
      if (got.__typename !== 'LoraDownload') throw new Error(JSON.stringify(got));
      const res = await fetch(got.url);
      expect(Buffer.from(await res.arrayBuffer()).equals(file)).toBe(true);
      return { lastModified: Date.parse(res.headers.get('last-modified') ?? ''), etag: res.headers.get('etag') };
    };
    const [seenA, seenB] = [await heads(a.id, upA.id), await heads(b.id, upB.id)];
    for (const [seen, up] of [
      [seenA, upA],
      [seenB, upB],
    ] as const) {
      expect(seen.lastModified).toBeGreaterThanOrEqual(Math.floor(up.from / 1000) * 1000 - 1000);
      expect(seen.lastModified).toBeLessThanOrEqual(up.to + 1000);
    }
    expect(seenB.lastModified).toBeGreaterThan(seenA.lastModified);
    expect(seenB.etag).not.toBe(seenA.etag);
    // one base still, and the next upload of it links too (the ETag stored for it follows the base)
    const idC = await uploadMultipart(c.token, file);
    const rows = await Promise.all(
      [upA.id, upB.id, idC].map((id) => server.app.db.lora.findUniqueOrThrow({ where: { file_id: BigInt(id) } })),
    );
    expect(new Set(rows.map((r) => r.blob_path)).size).toBe(1);
    expect(await server.app.db.lora_blob.findMany({ where: { sha256: sha(file), container: server.app.blobs.container } })).toMatchObject([
      { blob_path: rows[0]?.blob_path, ref_count: 3, linkable: true },
    ]);
    expect((await heads(a.id, upA.id)).lastModified).toBe(seenA.lastModified); // A's view unchanged by the later links
    // links of the same content at once: a touch that lost to another link's tries again (the ETag stored moved on)
    const many = await Promise.all(
      Array.from({ length: 5 }, async (_, i) => {
        const u = await user();
        return { u, id: await (i % 2 ? uploadResumable(u.token, file) : uploadMultipart(u.token, file)) };
      }),
    );
    for (const { u, id } of many) expect((await downloadStatus(u.id, id)).bytes?.equals(file)).toBe(true);
    expect(await refCountsHold()).toEqual([]);
  }, 60_000);

  it("an owner's download of shared content carries no storage header and nothing of the first uploader's (x-ms-creation-time)", async () => {
    const [a, b] = await Promise.all([user(), user()]);
    const file = content();
    const upA = await uploadMultipart(a.token, file);
    await new Promise((r) => setTimeout(r, 1_100)); // HTTP dates have whole seconds
    const fromB = Date.now();
    const upB = await uploadResumable(b.token, file);
    const rowOf = (id: string) => server.app.db.lora.findUniqueOrThrow({ where: { file_id: BigInt(id) } });
    const [rowA, rowB] = [await rowOf(upA), await rowOf(upB)];
    expect(rowB.blob_path).toBe(rowA.blob_path); // one stored content: A's upload created it
    const fetchOwn = async (token: string, id: string) => {
      const link = member(
        dataOf(await server.request(CreateLoraDownloadDocument, { id }, { token })).createLoraDownload,
        'LoraDownloadLink',
      );
      const res = await fetch(link.url);
      expect(res.status).toBe(200);
      expect(Buffer.from(await res.arrayBuffer()).equals(file)).toBe(true);
      return { url: link.url, headers: Object.fromEntries(res.headers) };
    };
    const seenA = await fetchOwn(a.token, upA);
    const seenB = await fetchOwn(b.token, upB);
    for (const seen of [seenA, seenB]) {
      expect(Object.keys(seen.headers).filter((h) => h.startsWith('x-ms-'))).toEqual([]);
      expect(Object.keys(seen.headers).filter((h) => !OWNER_DOWNLOAD_HEADERS.has(h))).toEqual([]);
    }
    expect(seenB.headers.etag).not.toBe(seenA.headers.etag);
    // every time B's response shows is B's own: none before B's upload began (A's was >1 s earlier)
    const notBeforeB = Math.floor(fromB / 1000) * 1000;
    const datesOfB = Object.entries(seenB.headers).filter(([, v]) => /^[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} /.test(v));
    expect(datesOfB.map(([name]) => name)).toContain('last-modified');
    expect(datesOfB.filter(([, v]) => Date.parse(v) < notBeforeB)).toEqual([]);
    expect(Object.values(seenB.headers).filter((v) => v.includes(seenA.headers.etag ?? '-'))).toEqual([]);
    // nor does B's link name the stored blob (a content/ name that is not B's upload session's would tell)
    const storedName = rowB.blob_path.replace(/^content\//, '').replace(/\..*$/, '');
    expect(seenB.url).not.toContain(storedName);
    expect(decodeURIComponent(seenB.url)).not.toContain('content/');
  }, 60_000);

  it('twenty links of the same content at once all succeed: each waits its turn to touch the base', async () => {
    const bytes = makeSafetensors([{ name: 'w', shape: [4096], dtype: 'F16' }], { id: randomUUID() });
    const users = await Promise.all(Array.from({ length: 20 }, () => newUser(server)));
    const views = await Promise.all(users.map((u) => seedLora(server.app, u.id, { bytes })));
    expect(new Set(views.map((v) => v.sha256)).size).toBe(1);
    const rows = await server.app.db.lora_blob.findMany({ where: { sha256: views[0]?.sha256 ?? '' } });
    expect(rows.filter((r) => r.linkable).map((r) => r.ref_count)).toEqual([20]);
  }, 120_000);

  it('a delete and an upload of the same content racing, 8 times: the uploaded LoRA always keeps its file', async () => {
    const a = await user();
    const b = await user();
    for (let round = 0; round < 8; round++) {
      const file = content();
      const held = await uploadMultipart(a.token, file);
      const [, uploaded] = await Promise.all([
        deleteLora(server, a.token, held),
        round % 2 ? uploadResumable(b.token, file) : uploadMultipart(b.token, file),
      ]);
      const got = await downloadStatus(b.id, uploaded);
      expect(got.status, `round ${round}`).toBe(200);
      expect(got.bytes?.equals(file)).toBe(true);
    }
    // and once every job has run, still
    await new Promise((r) => setTimeout(r, 3000));
    const rows = await server.app.db.lora.findMany({ where: { user_id: b.id, status: 'READY' } });
    for (const row of rows) expect(await server.app.blobs.exists(row.blob_path)).toBe(true);
    expect(await refCountsHold()).toEqual([]);
  }, 120_000);

  it('after a fault run (storage refusing snapshots and deletes at random) the reference counts equal the LoRAs naming each blob', async () => {
    const users = await Promise.all([user(), user(), user()]);
    const files = [content(), content()];
    let n = 0;
    proxy.add({
      fault: { kind: 'status', status: 503 },
      times: 1_000,
      match: (r) => (r.method === 'DELETE' || /comp=snapshot/.test(r.url)) && n++ % 3 === 0,
    });
    try {
      const ids = await Promise.all(
        users.flatMap((u, i) =>
          files.map((f, j) =>
            ((i + j) % 2 ? uploadResumable(u.token, f) : uploadMultipart(u.token, f)).then((id) => ({ u, id })).catch(() => undefined),
          ),
        ),
      );
      const made = ids.filter((x): x is { u: { id: string; token: string }; id: string } => x !== undefined);
      expect(made.length).toBeGreaterThan(0);
      await Promise.all(made.filter((_, i) => i % 2 === 0).map(({ u, id }) => deleteLora(server, u.token, id)));
    } finally {
      proxy.reset();
    }
    await new Promise((r) => setTimeout(r, 4000)); // the jobs' retries
    await server.app.jobs.reconcileNow();
    expect(await refCountsHold()).toEqual([]);
    for (const u of users) expect(await invariantViolations(server.app, u.id)).toEqual([]);
    // a drifted count (as a crash between steps could leave) is repaired by the reconciler
    const any = await server.app.db.lora_blob.findFirst({ where: { container: server.app.blobs.container, ref_count: { gt: 0 } } });
    if (any) {
      await server.app.db.lora_blob.update({ where: { blob_path: any.blob_path }, data: { ref_count: any.ref_count + 5 } });
      expect(await refCountsHold()).not.toEqual([]);
      await server.app.jobs.reconcileNow();
      expect(await refCountsHold()).toEqual([]);
    }
  }, 120_000);
});
