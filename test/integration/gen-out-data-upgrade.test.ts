import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LoraQuotaDocument } from '../../sdk/index.ts';
import { GEN_OUT_DATA_UPGRADE, upgradeGenOutData } from '../../server/jobs/gen-out-data-upgrade.ts';
import { dataOf, member } from '../testkit/graphql-assertions.ts';
import { deleteLora, isolatedDatabase, listLoras, updateLora } from '../testkit/library-helpers.ts';
import { makeLora } from '../testkit/lora-files.ts';
import { postMultipart } from '../testkit/multipart.ts';
import { expectSeedShape, platformView } from '../testkit/platform-queries.ts';
import { benignTorchZipLora } from '../testkit/pt-files.ts';
import { eventually, newUserId } from '../testkit/seed.ts';
import { startTestServer, type TestServer } from '../testkit/server.ts';

/**
 * The upgrade of LoRA rows written before docs/flat-file.md (server/jobs/gen-out-data-upgrade.ts):
 * rows exactly as main's finalize wrote them become the seed's shape, in batches, resumably,
 * idempotently, by several runners at once and while the API edits the same rows; and a server
 * start runs it. On a database of its own, so its progress row and rows are this file's alone.
 */

let database: { url: string; drop(): Promise<void> };
let server: TestServer;
const users: { id: string; token: string }[] = [];
const ids: string[] = [];
let deletedId: string;
let inFlightId: bigint;

beforeAll(async () => {
  database = await isolatedDatabase();
  // no job workers: the start-up upgrade must not run before the rows are made old
  server = await startTestServer({ DATABASE_URL: database.url, JOBS_ENABLED: 'false' });
  for (let u = 0; u < 2; u++) {
    const id = newUserId();
    users.push({ id, token: await server.tokens.user(id) });
  }
  const files = [
    [makeLora('SDXL', 'kohya', { extra: { ss_resolution: '(1024, 1024)' } }), 'a.safetensors', { uploadSource: 'EMPROPS_STUDIO' }],
    [makeLora('SD1', 'modelspec'), 'b.safetensors', { metadata: { triggerWords: ['mine'], baseModel: 'SD2' } }],
    [benignTorchZipLora(), 'c.pt', {}],
    [makeLora('FLUX1-kohya'), 'd.safetensors', {}],
    [makeLora('SD2', 'silent'), 'e.safetensors', {}],
  ] as const;
  for (const [i, [file, filename, variables]] of files.entries()) {
    const user = users[i % 2] as { id: string; token: string };
    const res = await postMultipart({ url: server.graphqlUrl, token: user.token, file, filename, variables });
    const id = res.body?.data?.uploadLora?.lora?.id;
    if (!id) throw new Error(res.text);
    ids.push(id);
  }
  deletedId = ids[3] as string;
  member(await deleteLora(server, users[1]?.token ?? '', deletedId), 'DeleteLoraSuccess');
  // an upload in flight: its rows exist (hidden, no gen_out_data) while the upgrade runs
  inFlightId = (
    await server.app.services.registry.begin({
      userId: users[0]?.id as string,
      name: 'in flight',
      fileName: 'f.safetensors',
      format: 'SAFETENSORS',
      tags: [],
    })
  ).fileId;
}, 60_000);

afterAll(async () => {
  await server?.stop();
  await database?.drop();
});

/** gen_out_data as main (before docs/flat-file.md) wrote it in registry.finalize, from the lora row. */
async function makeRowsOld(): Promise<void> {
  const rows = await server.app.db.lora.findMany({ where: { status: { in: ['READY', 'DELETED'] } } });
  for (const row of rows) {
    const { detectedBaseModel: _d, detectedBaseModelSource: _s, ...extracted } = row.metadata as Record<string, unknown>;
    await server.app.db.flat_file.update({
      where: { id: row.file_id },
      data: {
        gen_out_data: {
          size_bytes: Number(row.size_bytes),
          file_hash: row.sha256,
          lora_metadata: { ...extracted, base_model: row.base_model, rank: row.rank, alpha: row.alpha },
          upload_source: 'graphql-upload',
          validation_status: 'valid',
          format: row.format,
          autov2: row.sha256.slice(0, 10),
          autov3: (extracted.autoV3 as string | undefined) ?? null,
        },
      },
    });
  }
  await server.app.db.data_upgrade.update({
    where: { name: GEN_OUT_DATA_UPGRADE },
    data: { cursor: 0n, finished_at: null, rows_rewritten: 0n },
  });
}

async function genOutData(): Promise<Map<string, Record<string, any> | null>> {
  const rows = await server.app.db.flat_file.findMany({ where: { user_id: { in: users.map((u) => u.id) } }, orderBy: { id: 'asc' } });
  return new Map(rows.map((r) => [String(r.id), r.gen_out_data as Record<string, any> | null]));
}

const isOld = (data: Record<string, any> | null | undefined) => data?.validation_status === 'valid';

let expected: Map<string, Record<string, any> | null>;

describe('the gen_out_data upgrade', () => {
  it('rewrites old rows in batches, resumably: a stopped run leaves the rest for the next', async () => {
    // what the new code writes, except upload_source: old rows cannot tell Studio from api
    const written = await genOutData();
    expected = new Map([...written].map(([id, d]) => [id, d && { ...d, upload_source: 'api' }]));
    expect(written.get(ids[0] as string)?.upload_source).toBe('emprops_studio');
    await makeRowsOld();
    const old = await genOutData();
    expect([...old.values()].filter(isOld)).toHaveLength(5);

    const first = await upgradeGenOutData(server.app.db, { batchSize: 2, maxBatches: 1, pauseMs: 0 });
    expect(first).toEqual({ batches: 1, rewritten: 2, finished: false });
    const halfway = await genOutData();
    expect([...halfway.values()].filter(isOld)).toHaveLength(3);
    expect(isOld(halfway.get(ids[0] as string))).toBe(false);
    expect(isOld(halfway.get(ids[1] as string))).toBe(false);
    const progress = await server.app.db.data_upgrade.findUniqueOrThrow({ where: { name: GEN_OUT_DATA_UPGRADE } });
    expect(String(progress.cursor)).toBe(ids[1]);

    const rest = await upgradeGenOutData(server.app.db, { batchSize: 2, pauseMs: 0 });
    expect(rest).toMatchObject({ rewritten: 3, finished: true });
    const after = await genOutData();
    expect(after).toEqual(expected);
    const rows = await server.app.db.lora.findMany({ where: { user_id: { in: users.map((u) => u.id) } } });
    for (const row of rows) {
      if (row.status === 'UPLOADING') expect(after.get(String(row.file_id))).toBeNull();
      else expectSeedShape(after.get(String(row.file_id)), { sizeBytes: Number(row.size_bytes), sha256: row.sha256 });
    }
    // the user's own trigger words and base model, as the API shows them
    expect(after.get(ids[1] as string)?.lora_metadata).toMatchObject({ trigger_words: ['mine'], base_model: 'SD2' });
    expect(after.get(ids[0] as string)?.lora_metadata.resolution).toBe('1024x1024');
    expect(after.get(String(inFlightId))).toBeNull();
    const done = await server.app.db.data_upgrade.findUniqueOrThrow({ where: { name: GEN_OUT_DATA_UPGRADE } });
    expect(done.finished_at).not.toBeNull();
    expect(Number(done.rows_rewritten)).toBe(5);
    // finished: a later start does nothing
    expect(await upgradeGenOutData(server.app.db, { pauseMs: 0 })).toEqual({ batches: 0, rewritten: 0, finished: true });
  });

  it('is idempotent: a second pass over upgraded rows writes nothing (no new row versions)', async () => {
    const xmins = () => server.app.db.$queryRaw<{ id: bigint; xmin: string }[]>`SELECT id, xmin::text AS xmin FROM flat_file ORDER BY id`;
    const before = await xmins();
    await server.app.db.data_upgrade.update({ where: { name: GEN_OUT_DATA_UPGRADE }, data: { cursor: 0n, finished_at: null } });
    expect(await upgradeGenOutData(server.app.db, { batchSize: 2, pauseMs: 0 })).toMatchObject({ rewritten: 0, finished: true });
    expect(await xmins()).toEqual(before);
    expect(await genOutData()).toEqual(expected);
  });

  it('three runners at once, while the API renames, edits and deletes the same rows: every row once, no edit lost', async () => {
    await makeRowsOld();
    const [alice] = users as [{ id: string; token: string }];
    const runners = [1, 2, 3].map(() => upgradeGenOutData(server.app.db, { batchSize: 1, pauseMs: 0 }));
    const [first, , third, , fifth] = ids as [string, string, string, string, string];
    const edits = [
      updateLora(server, alice.token, { id: first, name: 'renamed' }),
      updateLora(server, alice.token, { id: third, metadata: { triggerWords: ['edited'] } }),
      deleteLora(server, alice.token, fifth),
    ];
    const results = await Promise.all(runners);
    expect((await Promise.all(edits)).map((e) => e.__typename)).toEqual(['Lora', 'Lora', 'DeleteLoraSuccess']);
    // 6 LoRA rows (5 stored, 1 in flight), one per batch: a batch done twice would show here
    expect(results.reduce((sum, r) => sum + r.batches, 0)).toBe(6);
    expect(results.reduce((sum, r) => sum + r.rewritten, 0)).toBeLessThanOrEqual(5);
    expect(results.every((r) => r.finished)).toBe(true);
    const after = await genOutData();
    expect([...after.values()].filter(isOld)).toEqual([]);
    expect(after.get(ids[2] as string)?.lora_metadata.trigger_words).toEqual(['edited']);
    const done = await server.app.db.data_upgrade.findUniqueOrThrow({ where: { name: GEN_OUT_DATA_UPGRADE } });
    expect(Number(done.rows_rewritten)).toBeLessThanOrEqual(5);
    // and the platform's queries still agree with the API
    for (const user of users) {
      const view = await platformView(database.url, user.id);
      const quota = dataOf(await server.request(LoraQuotaDocument, {}, { token: user.token })).loraQuota;
      const listed = await listLoras(server, user.token);
      expect(Number(view.storage ?? 0)).toBe(quota.usedStorageBytes);
      expect(view.loras.map((l) => l.id).sort()).toEqual(listed.loras.map((l) => l.id).sort());
    }
    expect((await platformView(database.url, alice.id)).loras.find((l) => l.id === ids[0])?.name).toBe('renamed');
  });

  it('runs at server start (JOBS_ENABLED) and leaves in-flight rows alone', async () => {
    await makeRowsOld();
    const second = await startTestServer({ DATABASE_URL: database.url });
    try {
      await eventually(
        async () => (await second.app.db.data_upgrade.findUniqueOrThrow({ where: { name: GEN_OUT_DATA_UPGRADE } })).finished_at !== null,
        20_000,
        'the start-up upgrade to finish',
      );
      const after = await genOutData();
      expect([...after.values()].filter(isOld)).toEqual([]);
      expect(after.get(String(inFlightId))).toBeNull();
      const flight = await second.app.db.flat_file.findUniqueOrThrow({ where: { id: inFlightId } });
      expect(flight).toMatchObject({ hidden: true, gen_out_data: null });
    } finally {
      await second.stop();
    }
  });
});
