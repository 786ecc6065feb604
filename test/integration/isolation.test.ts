import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { expectRefused, withoutId } from '../testkit/graphql-assertions.ts';
import { eventually, newUserId, seedLora } from '../testkit/seed.ts';
import { startTestServer, type TestServer } from '../testkit/server.ts';

/**
 * Isolation between users: nothing of A reaches B, whatever B tries (THREATS.md rows 10, 15).
 * A real server per describe block over real HTTP, real PostgreSQL and Azurite, real JWTs.
 */

const LORA_RESULT = `__typename
  ... on Lora { id name tags status updatedAt usageCount }
  ... on NotFoundError { code message loraId }`;

const Q_LORA = `query($id: ID!) { lora(id: $id) { ${LORA_RESULT} } }`;
const M_UPDATE = `mutation($id: ID!, $name: String, $tags: [String!], $metadata: JSON) {
  updateLora(id: $id, name: $name, tags: $tags, metadata: $metadata) { ${LORA_RESULT} ... on ValidationError { code message } } }`;
const M_DELETE = `mutation($id: ID!) { deleteLora(id: $id) {
  __typename ... on DeleteLoraSuccess { loraId quota { loraCount usedStorageBytes } } ... on NotFoundError { code message loraId } } }`;

async function quotaRow(server: TestServer, userId: string) {
  return server.app.db.user_lora_quota.findUnique({ where: { user_id: userId } });
}

async function loraRow(server: TestServer, id: string) {
  return server.app.db.lora.findUniqueOrThrow({ where: { file_id: BigInt(id) } });
}

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

  const OPS: { op: string; document: string; variables: (id: string) => Record<string, unknown> }[] = [
    { op: 'lora', document: Q_LORA, variables: (id) => ({ id }) },
    {
      op: 'updateLora',
      document: M_UPDATE,
      variables: (id) => ({ id, name: 'hijacked', tags: ['pwned'], metadata: { description: 'mine now' } }),
    },
    { op: 'deleteLora', document: M_DELETE, variables: (id) => ({ id }) },
  ];

  it.each(OPS)("$op: B asking for A's LoRA gets LORA_NOT_FOUND, identical to a missing id", async ({ op, document, variables }) => {
    const { loraA, tokenB } = await twoUsers();
    // The id is real: its owner's admin view finds it.
    const admin = await server.gql(Q_LORA, { id: loraA.id }, { token: await server.tokens.admin() });
    expect(admin.body.data?.lora.__typename).toBe('Lora');

    const forA = await server.gql(document, variables(loraA.id), { token: tokenB });
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
      const missing = await server.gql(document, variables(id), { token: tokenB });
      expect(missing.status, `id ${JSON.stringify(id)}`).toBe(forA.status);
      expect(missing.headers.get('content-type')).toBe(forA.headers.get('content-type'));
      expect(withoutId(missing.body, id), `id ${JSON.stringify(id)}`).toEqual(withoutId(forA.body, loraA.id));
      expect(missing.body.data?.[op].message).toBe(`LoRA with ID ${id} not found or access denied`);
    }
  });

  it("after B's failed attempts A's LoRA is unchanged, still listed, and its blob and quota intact", async () => {
    const { loraA, tokenA, tokenB } = await twoUsers();
    const before = await server.gql(Q_LORA, { id: loraA.id }, { token: tokenA });
    expect(before.body.data?.lora).toMatchObject({ __typename: 'Lora', name: loraA.name, status: 'READY' });
    for (let i = 0; i < 3; i++) {
      await server.gql(
        M_UPDATE,
        { id: loraA.id, name: 'hijacked', tags: ['pwned'], metadata: { title: 'x', baseModel: 'SDXL' } },
        { token: tokenB },
      );
      await server.gql(M_UPDATE, { id: loraA.id, tags: [] }, { token: tokenB });
      await server.gql(M_DELETE, { id: loraA.id }, { token: tokenB });
    }
    const after = await server.gql(Q_LORA, { id: loraA.id }, { token: tokenA });
    expect(after.body).toEqual(before.body);
    expect(after.body.data?.lora.tags).toEqual(loraA.tags);
    const row = await loraRow(server, loraA.id);
    expect(row.status).toBe('READY');
    expect(row.base_model).toBe('SD1');
    expect(await server.app.blobs.exists(row.blob_path)).toBe(true);
    const flat = await server.app.db.flat_file.findUniqueOrThrow({ where: { id: BigInt(loraA.id) } });
    expect(flat.hidden).toBe(false);
    const quota = await server.gql('{ loraQuota { loraCount usedStorageBytes loras { id } } }', {}, { token: tokenA });
    expect(quota.body.data?.loraQuota).toEqual({ loraCount: 1, usedStorageBytes: loraA.sizeBytes, loras: [{ id: loraA.id }] });
    const list = await server.gql('{ loras { total loras { id } } }', {}, { token: tokenA });
    expect(list.body.data?.loras).toEqual({ total: 1, loras: [{ id: loraA.id }] });
  });

  it("B's list never shows A's LoRAs, whatever the filter or order", async () => {
    const { loraA, loraB, tag, tokenB } = await twoUsers();
    const q = `query($s: String, $t: [String!], $sort: LoraSort, $order: SortOrder, $b: String) {
      loras(search: $s, tags: $t, sort: $sort, order: $order, baseModel: $b, limit: 200) { total loras { id } } }`;
    const variants: Record<string, unknown>[] = [
      {},
      { s: loraA.name },
      { s: 'A-private' },
      { t: [tag] },
      { t: ['shared-word'] },
      { b: 'SD1' },
      ...(['NAME', 'SIZE', 'CREATED_AT', 'LAST_USED'] as const).flatMap((sort) => [
        { sort, order: 'ASC' },
        { sort, order: 'DESC' },
      ]),
    ];
    for (const v of variants) {
      const res = await server.gql(q, v, { token: tokenB });
      const ids = res.body.data?.loras.loras.map((l: { id: string }) => l.id);
      expect(ids, JSON.stringify(v)).not.toContain(loraA.id);
      expect(res.body.data?.loras.total, JSON.stringify(v)).toBe(ids.length);
    }
    const all = await server.gql(q, {}, { token: tokenB });
    expect(all.body.data?.loras).toEqual({ total: 1, loras: [{ id: loraB.id }] });
  });

  it('B cannot name A in loras(userId) or loraQuota(userId): FORBIDDEN, no data', async () => {
    const { a, loraB, tokenB } = await twoUsers();
    for (const userId of [a, a.toUpperCase()]) {
      expectRefused(
        await server.gql('query($u: ID) { loras(userId: $u) { total loras { id } } }', { u: userId }, { token: tokenB }),
        'FORBIDDEN',
      );
      expectRefused(
        await server.gql(
          'query($u: ID) { loraQuota(userId: $u) { userId loraCount loras { id name } } }',
          { u: userId },
          { token: tokenB },
        ),
        'FORBIDDEN',
      );
    }
    const own = await server.gql('{ loraQuota { loraCount loras { id } } }', {}, { token: tokenB });
    expect(own.body.data?.loraQuota).toEqual({ loraCount: 1, loras: [{ id: loraB.id }] });
  });

  it('a LoRA its owner deleted answers like a missing id, to the owner and to others', async () => {
    const { loraA, tokenA, tokenB } = await twoUsers();
    const del = await server.gql(M_DELETE, { id: loraA.id }, { token: tokenA });
    expect(del.body.data?.deleteLora.__typename).toBe('DeleteLoraSuccess');
    const missingId = (BigInt(loraA.id) + 1_000_000_000n).toString();
    const missing = await server.gql(Q_LORA, { id: missingId }, { token: tokenA });
    for (const token of [tokenA, tokenB]) {
      const res = await server.gql(Q_LORA, { id: loraA.id }, { token });
      expect(withoutId(res.body, loraA.id)).toEqual(withoutId(missing.body, missingId));
    }
    const other = await server.gql(M_UPDATE, { id: loraA.id, name: 'again' }, { token: tokenB });
    expect(other.body.data?.updateLora.code).toBe('LORA_NOT_FOUND');
    const list = await server.gql('{ loras { total } }', {}, { token: tokenA });
    expect(list.body.data?.loras.total).toBe(0);
  });

  it('deleting is idempotent and releases quota exactly once, even when retried concurrently (row 15)', async () => {
    const { a, loraA, tokenA, tokenB } = await twoUsers();
    const second = await seedLora(server.app, a);
    const before = await quotaRow(server, a);
    expect(before?.lora_count).toBe(2);
    // B's attempts (concurrent with A's) release nothing of A's.
    const results = await Promise.all([
      ...Array.from({ length: 5 }, () => server.gql(M_DELETE, { id: loraA.id }, { token: tokenA })),
      ...Array.from({ length: 3 }, () => server.gql(M_DELETE, { id: second.id }, { token: tokenB })),
    ]);
    for (const r of results.slice(0, 5)) {
      expect(r.body.data?.deleteLora).toMatchObject({ __typename: 'DeleteLoraSuccess', loraId: loraA.id, quota: { loraCount: 1 } });
    }
    for (const r of results.slice(5)) expect(r.body.data?.deleteLora.code).toBe('LORA_NOT_FOUND');
    const after = await quotaRow(server, a);
    expect(after?.lora_count).toBe(1);
    expect(Number(after?.used_bytes)).toBe(Number(before?.used_bytes) - loraA.sizeBytes);
    const retry = await server.gql(M_DELETE, { id: loraA.id }, { token: tokenA });
    expect(retry.body.data?.deleteLora).toEqual({
      __typename: 'DeleteLoraSuccess',
      loraId: loraA.id,
      quota: { loraCount: 1, usedStorageBytes: second.sizeBytes },
    });
    // One audited delete, and the blob is removed by the durable job; the other LoRA is untouched.
    expect(await server.app.db.audit_log.count({ where: { action: 'lora.delete', lora_id: BigInt(loraA.id) } })).toBe(1);
    const row = await loraRow(server, loraA.id);
    await eventually(async () => !(await server.app.blobs.exists(row.blob_path)), 15_000, 'blob deletion');
    expect(await server.app.blobs.exists((await loraRow(server, second.id)).blob_path)).toBe(true);
    expect((await loraRow(server, second.id)).status).toBe('READY');
  });
});
