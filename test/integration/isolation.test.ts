import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  DeleteLoraDocument,
  LoraDocument,
  LoraQuotaDocument,
  LorasDocument,
  type LorasQueryVariables,
  UpdateLoraDocument,
} from '../../sdk/index.ts';
import { dataOf, expectRefused, member, type Res, withoutId } from '../testkit/graphql-assertions.ts';
import { deleteLora, listLoras } from '../testkit/library-helpers.ts';
import { loraRow, quotaRow } from '../testkit/rows.ts';
import { eventually, newUserId, seedLora } from '../testkit/seed.ts';
import { startTestServer, type TestServer } from '../testkit/server.ts';

/**
 * Isolation between users: nothing of A reaches B, whatever B tries (THREATS.md rows 10, 15).
 * A real server per describe block over real HTTP, real PostgreSQL and Azurite, real JWTs.
 */

describe('isolation between users', () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer();
  });
  afterAll(() => server?.stop());

  async function twoUsers() {
    const a = newUserId();
    const b = newUserId();
    const tag = `secret-${randomUUID().slice(0, 8)}`;
    const loraA = await seedLora(server.app, a, { name: `A-private-${randomUUID().slice(0, 8)}`, tags: [tag, 'shared-word'] });
    const loraB = await seedLora(server.app, b, { name: `B-own-${randomUUID().slice(0, 8)}`, tags: ['shared-word'] });
    return { a, b, tag, loraA, loraB, tokenA: await server.tokens.user(a), tokenB: await server.tokens.user(b) };
  }

  const MISSING_IDS = ['0', '-1', 'abc', '99999999999999999999', '9223372036854775807', '1.5', '0x10', ' 1', ''];

  const OPS: { op: string; send(id: string, token: string): Promise<Res> }[] = [
    { op: 'lora', send: (id, token) => server.request(LoraDocument, { id }, { token }) },
    {
      op: 'updateLora',
      send: (id, token) =>
        server.request(UpdateLoraDocument, { id, name: 'hijacked', tags: ['pwned'], metadata: { description: 'mine now' } }, { token }),
    },
    { op: 'deleteLora', send: (id, token) => server.request(DeleteLoraDocument, { id }, { token }) },
  ];

  it.each(OPS)("$op: B asking for A's LoRA gets LORA_NOT_FOUND, identical to a missing id", async ({ op, send }) => {
    const { loraA, tokenB } = await twoUsers();
    // The id is real: its owner's admin view finds it.
    const admin = await server.request(LoraDocument, { id: loraA.id }, { token: await server.tokens.admin() });
    expect(dataOf(admin).lora.__typename).toBe('Lora');

    const forA = await send(loraA.id, tokenB);
    expect(forA.status).toBe(200);
    expect(forA.body).toEqual({
      data: {
        [op]: {
          __typename: 'NotFoundError',
          code: 'LORA_NOT_FOUND',
          message: `LoRA with ID ${loraA.id} not found or access denied`,
          loraId: loraA.id,
        },
      },
    });
    const neverExisted = (BigInt(loraA.id) + 1_000_000_000n).toString();
    for (const id of [neverExisted, ...MISSING_IDS]) {
      const missing = await send(id, tokenB);
      expect(missing.status, `id ${JSON.stringify(id)}`).toBe(forA.status);
      expect(missing.headers.get('content-type')).toBe(forA.headers.get('content-type'));
      expect(withoutId(missing.body, id), `id ${JSON.stringify(id)}`).toEqual(withoutId(forA.body, loraA.id));
      expect(missing.body.data?.[op].message).toBe(`LoRA with ID ${id} not found or access denied`);
    }
  });

  it("after B's failed attempts A's LoRA is unchanged, still listed, and its blob and quota intact", async () => {
    const { loraA, tokenA, tokenB } = await twoUsers();
    const before = await server.request(LoraDocument, { id: loraA.id }, { token: tokenA });
    expect(before.body.data?.lora).toMatchObject({ __typename: 'Lora', name: loraA.name, status: 'READY' });
    for (let i = 0; i < 3; i++) {
      await server.request(
        UpdateLoraDocument,
        { id: loraA.id, name: 'hijacked', tags: ['pwned'], metadata: { title: 'x', baseModel: 'SDXL' } },
        { token: tokenB },
      );
      await server.request(UpdateLoraDocument, { id: loraA.id, tags: [] }, { token: tokenB });
      await server.request(DeleteLoraDocument, { id: loraA.id }, { token: tokenB });
    }
    const after = await server.request(LoraDocument, { id: loraA.id }, { token: tokenA });
    expect(after.body).toEqual(before.body);
    expect(member(dataOf(after).lora, 'Lora').tags).toEqual(loraA.tags);
    const row = await loraRow(server, loraA.id);
    expect(row.status).toBe('READY');
    expect(row.base_model).toBe('SD1');
    expect(await server.app.blobs.exists(row.blob_path)).toBe(true);
    const flat = await server.app.db.flat_file.findUniqueOrThrow({ where: { id: BigInt(loraA.id) } });
    expect(flat.hidden).toBe(false);
    const quota = dataOf(await server.request(LoraQuotaDocument, {}, { token: tokenA })).loraQuota;
    expect([quota.loraCount, quota.usedStorageBytes, quota.loras.map((l) => l.id)]).toEqual([1, loraA.sizeBytes, [loraA.id]]);
    const list = await listLoras(server, tokenA);
    expect([list.total, list.loras.map((l) => l.id)]).toEqual([1, [loraA.id]]);
  });

  it("B's list never shows A's LoRAs, whatever the filter or order", async () => {
    const { loraA, loraB, tag, tokenB } = await twoUsers();
    const variants: LorasQueryVariables[] = [
      {},
      { search: loraA.name },
      { search: 'A-private' },
      { tags: [tag] },
      { tags: ['shared-word'] },
      { baseModel: 'SD1' },
      ...(['NAME', 'SIZE', 'CREATED_AT', 'LAST_USED'] as const).flatMap((sort): LorasQueryVariables[] => [
        { sort, order: 'ASC' },
        { sort, order: 'DESC' },
      ]),
    ];
    for (const v of variants) {
      const page = await listLoras(server, tokenB, { ...v, limit: 200 });
      const ids = page.loras.map((l) => l.id);
      expect(ids, JSON.stringify(v)).not.toContain(loraA.id);
      expect(page.total, JSON.stringify(v)).toBe(ids.length);
    }
    const all = await listLoras(server, tokenB, { limit: 200 });
    expect([all.total, all.loras.map((l) => l.id)]).toEqual([1, [loraB.id]]);
  });

  it('B cannot name A in loras(userId) or loraQuota(userId): FORBIDDEN, no data', async () => {
    const { a, loraB, tokenB } = await twoUsers();
    for (const userId of [a, a.toUpperCase()]) {
      expectRefused(await server.request(LorasDocument, { userId }, { token: tokenB }), 'FORBIDDEN');
      expectRefused(await server.request(LoraQuotaDocument, { userId }, { token: tokenB }), 'FORBIDDEN');
    }
    const own = dataOf(await server.request(LoraQuotaDocument, {}, { token: tokenB })).loraQuota;
    expect([own.loraCount, own.loras.map((l) => l.id)]).toEqual([1, [loraB.id]]);
  });

  it('a LoRA its owner deleted answers like a missing id, to the owner and to others', async () => {
    const { loraA, tokenA, tokenB } = await twoUsers();
    const del = await server.request(DeleteLoraDocument, { id: loraA.id }, { token: tokenA });
    expect(dataOf(del).deleteLora.__typename).toBe('DeleteLoraSuccess');
    const missingId = (BigInt(loraA.id) + 1_000_000_000n).toString();
    const missing = await server.request(LoraDocument, { id: missingId }, { token: tokenA });
    for (const token of [tokenA, tokenB]) {
      const res = await server.request(LoraDocument, { id: loraA.id }, { token });
      expect(withoutId(res.body, loraA.id)).toEqual(withoutId(missing.body, missingId));
    }
    const other = await server.request(UpdateLoraDocument, { id: loraA.id, name: 'again' }, { token: tokenB });
    expect(member(dataOf(other).updateLora, 'NotFoundError').code).toBe('LORA_NOT_FOUND');
    expect((await listLoras(server, tokenA)).total).toBe(0);
  });

  it('deleting is idempotent and releases quota exactly once, even when retried concurrently (row 15)', async () => {
    const { a, loraA, tokenA, tokenB } = await twoUsers();
    const second = await seedLora(server.app, a);
    const before = await quotaRow(server, a);
    expect(before?.lora_count).toBe(2);
    // B's attempts (concurrent with A's) release nothing of A's.
    const results = await Promise.all([
      ...Array.from({ length: 5 }, () => deleteLora(server, tokenA, loraA.id)),
      ...Array.from({ length: 3 }, () => deleteLora(server, tokenB, second.id)),
    ]);
    for (const r of results.slice(0, 5)) {
      expect(r).toMatchObject({ __typename: 'DeleteLoraSuccess', loraId: loraA.id, quota: { loraCount: 1 } });
    }
    for (const r of results.slice(5)) expect(member(r, 'NotFoundError').code).toBe('LORA_NOT_FOUND');
    const after = await quotaRow(server, a);
    expect(after?.lora_count).toBe(1);
    expect(Number(after?.used_bytes)).toBe(Number(before?.used_bytes) - loraA.sizeBytes);
    const retry = member(await deleteLora(server, tokenA, loraA.id), 'DeleteLoraSuccess');
    expect(retry.loraId).toBe(loraA.id);
    expect(retry.quota).toMatchObject({ loraCount: 1, usedStorageBytes: second.sizeBytes, loras: [{ id: second.id }] });
    // One audited delete, and the LoRA's own object (its snapshot of the stored content, which other
    // LoRAs of the same bytes may share) is removed; the other LoRA is untouched.
    expect(await server.app.db.audit_log.count({ where: { action: 'lora.delete', lora_id: BigInt(loraA.id) } })).toBe(1);
    const snapshotExists = async (id: string) => {
      const r = await server.app.db.lora.findUniqueOrThrow({ where: { file_id: BigInt(id) } });
      return server.app.blobs
        .clientsForTests()
        .loras.getBlobClient(r.blob_path)
        .withSnapshot(r.blob_snapshot ?? '')
        .exists();
    };
    await eventually(async () => !(await snapshotExists(loraA.id)), 15_000, 'blob deletion');
    expect(await snapshotExists(second.id)).toBe(true);
    expect((await loraRow(server, second.id)).status).toBe('READY');
  });
});
