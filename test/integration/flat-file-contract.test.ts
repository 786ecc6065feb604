import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LoraQuotaDocument, type UpdateLoraMutationVariables } from '../../sdk/index.ts';
import { dataOf, member } from '../testkit/graphql-assertions.ts';
import { sha256 } from '../testkit/hashes.ts';
import { deleteLora, getLora, listLoras, setUserLoraQuota, updateLora } from '../testkit/library-helpers.ts';
import { makeLora, sdxlLora } from '../testkit/lora-files.ts';
import { postMultipart } from '../testkit/multipart.ts';
import { expectSeedShape, platformView } from '../testkit/platform-queries.ts';
import { BAD_PT_FILES, benignTorchZipLora } from '../testkit/pt-files.ts';
import { makeSafetensors } from '../testkit/safetensors.ts';
import { eventually, newUser } from '../testkit/seed.ts';
import { startTestServer, type TestServer } from '../testkit/server.ts';

/**
 * The platform's `flat_file` contract (docs/flat-file.md): the seed's own queries, run as written
 * against the real database, agree with what the API reports for every user after uploads,
 * renames, retags, metadata edits, deletes, failed and in-flight uploads; and every LoRA row's
 * gen_out_data has the seed's shape.
 */

const MAX_UPLOAD = 4 * 1024 * 1024;
let server: TestServer;
beforeAll(async () => {
  server = await startTestServer({ MAX_UPLOAD_BYTES: String(MAX_UPLOAD) });
});
afterAll(() => server?.stop());

interface User {
  id: string;
  token: string;
}

async function upload(u: User, file: Buffer, variables: Record<string, unknown> = {}, filename = 'lora.safetensors') {
  const res = await postMultipart({ url: server.graphqlUrl, token: u.token, file, filename, variables });
  return { res, result: res.body?.data?.uploadLora as { __typename: string; code?: string; lora?: { id: string } } | undefined };
}

async function uploaded(u: User, file: Buffer, variables: Record<string, unknown> = {}, filename?: string): Promise<string> {
  const { res, result } = await upload(u, file, variables, filename);
  expect(result?.__typename, res.text).toBe('UploadLoraSuccess');
  return result?.lora?.id as string;
}

async function edit(u: User, variables: UpdateLoraMutationVariables): Promise<void> {
  member(await updateLora(server, u.token, variables), 'Lora');
}

async function remove(u: User, id: string): Promise<void> {
  member(await deleteLora(server, u.token, id), 'DeleteLoraSuccess');
}

async function shownMetadata(u: User, id: string) {
  return member(await getLora(server, u.token, id), 'Lora').metadata;
}

/** What the API reports: the user's READY LoRAs (every page) and the quota's used bytes. */
async function apiView(u: User) {
  const list = await listLoras(server, u.token, { limit: 200 });
  const quota = dataOf(await server.request(LoraQuotaDocument, {}, { token: u.token })).loraQuota;
  const loras = list.loras.map(({ id, name, sizeBytes }) => ({ id, name, sizeBytes })).sort((a, b) => Number(BigInt(a.id) - BigInt(b.id)));
  return { loras, total: list.total, used: quota.usedStorageBytes, count: quota.loraCount };
}

/** The seed's queries and the API agree on this user's LoRAs and bytes. */
async function expectAgreement(u: User): Promise<void> {
  const platform = await platformView(server.app.config.databaseUrl, u.id);
  const mine = await apiView(u);
  expect(platform.loras).toEqual(mine.loras.map(({ id, name }) => ({ id, name })));
  expect(mine.total).toBe(mine.loras.length);
  expect(mine.count).toBe(mine.loras.length);
  // the seed's SUM is NULL for a user without a visible LoRA; the API says 0
  expect(Number(platform.storage ?? 0)).toBe(mine.used);
  expect(mine.used).toBe(mine.loras.reduce((sum, l) => sum + l.sizeBytes, 0));
  if (mine.loras.length === 0) expect(platform.storage).toBeNull();
}

/** Every LoRA row of the user (visible, deleted, in flight) in the documented shape and states. */
async function expectRowsInContract(u: User): Promise<void> {
  const rows = await server.app.db.lora.findMany({ where: { user_id: u.id }, include: { file: true } });
  for (const row of rows) {
    expect(row.file.tags, `LoRA ${row.file_id}`).toContain('lora');
    expect(row.file.hidden, `LoRA ${row.file_id} is ${row.status}`).toBe(row.status !== 'READY');
    if (row.status === 'UPLOADING' || row.status === 'FAILED') {
      expect(row.file.gen_out_data, `in-flight ${row.file_id} counts no bytes`).toBeNull();
    } else {
      expectSeedShape(row.file.gen_out_data, { sizeBytes: Number(row.size_bytes), sha256: row.sha256 });
    }
    if (row.status === 'READY') {
      const { baseModel, triggerWords, rank } = await shownMetadata(u, String(row.file_id));
      const m = (row.file.gen_out_data as { lora_metadata: Record<string, unknown> }).lora_metadata;
      expect({ baseModel: m.base_model, triggerWords: m.trigger_words, rank: m.rank }).toEqual({ baseModel, triggerWords, rank });
    }
  }
}

describe("the seed's flat_file queries agree with the API", () => {
  it('after uploads, renames, retags, metadata edits, deletes, failed and in-flight uploads, for every user', async () => {
    const users = await Promise.all([newUser(server), newUser(server), newUser(server), newUser(server)]);
    const [alice, bob, carol, dave] = users as [User, User, User, User];

    // alice: three LoRAs (Studio, default, .pt), one renamed, one retagged, one edited, one deleted
    const a1 = await uploaded(alice, makeLora('SDXL', 'kohya', { extra: { ss_resolution: '(1024, 1024)' } }), {
      uploadSource: 'EMPROPS_STUDIO',
      tags: ['style'],
    });
    const a2 = await uploaded(alice, makeLora('SD1', 'modelspec'), { name: 'second' });
    const a3 = await uploaded(alice, benignTorchZipLora(), {}, 'model.pt');
    await edit(alice, { id: a1, name: 'Ink wash' });
    await edit(alice, { id: a2, tags: ['lineart', 'ink'] });
    await edit(alice, { id: a1, metadata: { triggerWords: ['ink wash', 'sumi-e'], baseModel: 'SDXL' } });
    await remove(alice, a3);

    // bob: two LoRAs, a refused file, an unsafe pickle, an interrupted upload, one over quota at the final check
    await uploaded(bob, sdxlLora('modelspec'));
    await uploaded(bob, makeLora('FLUX1-kohya'));
    expect((await upload(bob, Buffer.from('not a lora at all, just text'))).result).toMatchObject({ code: 'INVALID_FILE_FORMAT' });
    const unsafe = BAD_PT_FILES.find((f) => f.expect === 'UNSAFE_FILE');
    expect((await upload(bob, Buffer.from(unsafe?.bytes ?? []), {}, 'evil.pt')).result).toMatchObject({ code: 'UNSAFE_FILE' });
    const big = makeSafetensors([{ name: 'w', shape: [512 * 1024], dtype: 'F16' }]);
    const cut = await postMultipart({ url: server.graphqlUrl, token: bob.token, file: big, abortAfterBytes: 256 * 1024 });
    expect(cut.aborted).toBe(true);
    await setUserLoraQuota(server, { userId: bob.id, maxLoraCount: 2 });
    expect((await upload(bob, makeLora('SD2'))).result).toMatchObject({ code: 'QUOTA_EXCEEDED' });
    await setUserLoraQuota(server, { userId: bob.id, maxLoraCount: 10 });

    // carol: nothing but failures; dave: one LoRA, deleted
    expect((await upload(carol, Buffer.from(unsafe?.bytes ?? []), {}, 'evil.pt')).result).toMatchObject({ code: 'UNSAFE_FILE' });
    const d1 = await uploaded(dave, makeLora('SD1'));
    await remove(dave, d1);

    // bob's third upload is held mid-stream: its rows exist (UPLOADING) while we compare
    let release = () => {};
    const hold = new Promise<void>((resolve) => {
      release = resolve;
    });
    const heldFile = makeSafetensors([{ name: 'w', shape: [256 * 1024], dtype: 'F16' }]);
    const held = postMultipart({
      url: server.graphqlUrl,
      token: bob.token,
      file: heldFile,
      holdAfterBytes: 128 * 1024,
      hold,
    });
    await eventually(
      async () => (await server.app.db.lora.count({ where: { user_id: bob.id, status: 'UPLOADING' } })) === 1,
      15_000,
      'the held upload to reserve its row',
    );
    for (const u of users) {
      await expectAgreement(u);
      await expectRowsInContract(u);
    }
    expect((await platformView(server.app.config.databaseUrl, bob.id)).loras).toHaveLength(2);

    release();
    const finished = await held;
    expect(finished.body?.data?.uploadLora?.__typename, finished.text).toBe('UploadLoraSuccess');
    await eventually(
      async () => (await server.app.db.lora.count({ where: { user_id: { in: users.map((u) => u.id) }, status: { not: 'READY' } } })) === 2,
      10_000,
      'failed uploads removed',
    );
    for (const u of users) {
      await expectAgreement(u);
      await expectRowsInContract(u);
    }
    expect((await apiView(bob)).loras).toHaveLength(3);
    expect((await apiView(alice)).loras.map((l) => l.name).sort()).toEqual(['Ink wash', 'second']);
    expect((await platformView(server.app.config.databaseUrl, carol.id)).storage).toBeNull();
    expect(await server.app.db.flat_file.count({ where: { user_id: carol.id } })).toBe(0);
    const deleted = await server.app.db.flat_file.findUniqueOrThrow({ where: { id: BigInt(d1) } });
    expect(deleted.hidden).toBe(true);
  }, 120_000);
});

describe('gen_out_data of a LoRA row', () => {
  it("has the seed's shape: sha256: hash, snake_case metadata, upload_source, validation_status safe", async () => {
    const u = await newUser(server);
    const file = makeLora('SDXL', 'kohya', { rank: 8, extra: { ss_resolution: '(1024, 1024)' } });
    const id = await uploaded(u, file, { uploadSource: 'EMPROPS_STUDIO' });
    const ff = await server.app.db.flat_file.findUniqueOrThrow({ where: { id: BigInt(id) } });
    const headerLength = Number(file.readBigUInt64LE(0));
    expect(ff.gen_out_data).toEqual({
      size_bytes: file.length,
      file_hash: `sha256:${sha256(file)}`,
      file_format: 'safetensors',
      civitai_autov2_hash: sha256(file).slice(0, 10),
      civitai_autov3_hash: sha256(file.subarray(8 + headerLength)),
      lora_metadata: {
        base_model: 'SDXL',
        rank: 8,
        trigger_words: ['mychar', '1girl', 'solo', 'red hair', 'smile', 'outdoors', 'blue sky', 'cloud', 'tree', 'grass'],
        training_epochs: 10,
        training_images: 420,
        alpha: 4,
        network_module: 'networks.lora',
        resolution: '1024x1024',
      },
      upload_source: 'emprops_studio',
      validation_status: 'safe',
    });
    const shown = await shownMetadata(u, id);
    expect((ff.gen_out_data as { lora_metadata: { trigger_words: string[] } }).lora_metadata.trigger_words).toEqual(shown.triggerWords);
  });

  it('upload_source is api when the client does not say, and follows metadata edits (what the API shows)', async () => {
    const u = await newUser(server);
    const id = await uploaded(u, makeLora('SD1', 'modelspec'));
    const before = (await server.app.db.flat_file.findUniqueOrThrow({ where: { id: BigInt(id) } })).gen_out_data as Record<string, any>;
    expect(before.upload_source).toBe('api');
    expect(before.lora_metadata.trigger_words).toEqual(['mychar', 'red hair', 'blue eyes']);
    await edit(u, { id, metadata: { triggerWords: ['ink'], baseModel: 'SD2' } });
    const after = (await server.app.db.flat_file.findUniqueOrThrow({ where: { id: BigInt(id) } })).gen_out_data as Record<string, any>;
    expect(after).toEqual({ ...before, lora_metadata: { ...before.lora_metadata, trigger_words: ['ink'], base_model: 'SD2' } });
    await edit(u, { id, metadata: { baseModel: null } });
    const restored = (await server.app.db.flat_file.findUniqueOrThrow({ where: { id: BigInt(id) } })).gen_out_data as Record<string, any>;
    expect(restored.lora_metadata.base_model).toBe('SD1');
  });

  it.each([['RESUMABLE'], ['emprops_studio'], ['STUDIO']])(
    'a client cannot claim upload source %s: refused, nothing stored',
    async (value) => {
      const u = await newUser(server);
      const { res, result } = await upload(u, makeLora('SD1'), { uploadSource: value });
      expect(result, res.text).toBeUndefined();
      expect(res.body?.errors?.[0]?.message, res.text).toMatch(/LoraUploadSource/);
      expect(res.body?.errors?.[0]?.extensions?.code, res.text).toBe('BAD_USER_INPUT');
      expect(await server.app.db.flat_file.count({ where: { user_id: u.id } })).toBe(0);
    },
  );
});
