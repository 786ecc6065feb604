import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type LoraSort, LorasDocument, type LorasQueryVariables, type UpdateLoraMutationVariables } from '../../sdk/index.ts';
import type { LoraView } from '../../server/domain/lora.ts';
import { mintGrant } from '../testkit/grants.ts';
import { member } from '../testkit/graphql-assertions.ts';
import {
  compareCodePoints,
  compareIds,
  expectBadUserInput,
  getLora as getLoraResult,
  listLoras,
  recordUsage,
  updateLora,
} from '../testkit/library-helpers.ts';
import { sizedLora } from '../testkit/safetensors.ts';
import { newUserId, type SeedLoraOptions, seedLora } from '../testkit/seed.ts';
import { startTestServer, type TestServer } from '../testkit/server.ts';

/**
 * The LoRA library over real HTTP: listing (search, filters, sort, paging), reading one LoRA
 * with its usage, and editing (rename, tags, metadata). Each test builds its own users.
 */

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer();
});
afterAll(async () => {
  await server?.stop();
});

/** Seeds several LoRAs concurrently (a few at a time) and returns them in input order. */
async function seedAll(userId: string, specs: SeedLoraOptions[], concurrency = 8): Promise<LoraView[]> {
  const out: LoraView[] = new Array(specs.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, specs.length) }, async () => {
      while (next < specs.length) {
        const i = next++;
        out[i] = await seedLora(server.app, userId, specs[i]);
      }
    }),
  );
  return out;
}

async function names(token: string, variables: LorasQueryVariables): Promise<string[]> {
  const page = await listLoras(server, token, { limit: 200, ...variables });
  expect(page.total).toBe(page.loras.length);
  return page.loras.map((l) => l.name).sort();
}

/** `lora(id)` when the LoRA must be visible: the Lora member of the result. */
async function getLora(token: string, id: string) {
  return member(await getLoraResult(server, token, id), 'Lora');
}

/** `updateLora` when the edit must succeed: the Lora member of the result. */
async function update(token: string, variables: UpdateLoraMutationVariables) {
  return member(await updateLora(server, token, variables), 'Lora');
}

describe('loras: sort, order and paging', () => {
  it('orders by NAME|SIZE|CREATED_AT|LAST_USED × ASC|DESC like an independent sort, ties by id, and pages through every LoRA once', async () => {
    const userId = newUserId();
    const token = await server.tokens.user(userId);
    const t0 = Date.parse('2025-03-01T10:00:00.000Z');
    const at = (minutes: number) => new Date(t0 + minutes * 60_000);
    // Names: case-insensitive duplicates (a three-way tie), accents, ß, emoji, CJK, fullwidth
    // letters (above the UTF-16 surrogates: code-point order differs from JS string order).
    const specs: (SeedLoraOptions & { name: string; k: number; created: Date; used: Date | null })[] = [
      { name: 'alpha', k: 3, created: at(5), used: at(100) },
      { name: 'Alpha', k: 3, created: at(5), used: null },
      { name: 'ALPHA', k: 1, created: at(1), used: at(100) },
      { name: 'beta', k: 7, created: at(5), used: at(50) },
      { name: 'Émile', k: 2, created: at(9), used: null },
      { name: 'éclair', k: 3, created: at(2), used: at(300) },
      { name: 'Straße', k: 5, created: at(9), used: at(50) },
      { name: 'zeta', k: 0, created: at(3), used: null },
      { name: '😀 smile', k: 4, created: at(7), used: at(20) },
      { name: '日本語 LoRA', k: 6, created: at(7), used: null },
      { name: 'Ｚｅｎ fullwidth', k: 3, created: at(0), used: at(300) },
      { name: 'Beta', k: 7, created: at(8), used: at(50) },
    ].map((s) => ({ ...s, bytes: sizedLora(s.k), createdAt: s.created, lastUsedAt: s.used }));
    const seeded = await seedAll(userId, specs);
    const rows = specs.map((s, i) => ({
      id: seeded[i]?.id ?? '',
      name: s.name,
      size: s.bytes?.length ?? 0,
      created: s.created.getTime(),
      used: s.used?.getTime() ?? null,
    }));
    type Row = (typeof rows)[number];
    // Another user's LoRAs must never show up.
    await seedLora(server.app, newUserId(), { name: 'alpha' });

    const ascending: Record<LoraSort, (a: Row, b: Row) => number> = {
      NAME: (a, b) => compareCodePoints(a.name.toLowerCase(), b.name.toLowerCase()) || compareIds(a.id, b.id),
      SIZE: (a, b) => a.size - b.size || compareIds(a.id, b.id),
      CREATED_AT: (a, b) => a.created - b.created || compareIds(a.id, b.id),
      // Never-used first going up, so that DESC (most recent first) puts them last.
      LAST_USED: (a, b) => (a.used ?? -Infinity) - (b.used ?? -Infinity) || compareIds(a.id, b.id),
    };
    // Sanity of the fixture: every order has ties the id must break.
    expect(new Set(rows.map((r) => r.size)).size).toBeLessThan(rows.length);
    expect(new Set(rows.map((r) => r.created)).size).toBeLessThan(rows.length);

    for (const [sort, cmp] of Object.entries(ascending) as [LoraSort, (a: Row, b: Row) => number][]) {
      for (const order of ['ASC', 'DESC'] as const) {
        const expected = [...rows].sort(cmp).map((r) => r.id);
        if (order === 'DESC') expected.reverse();
        const all = await listLoras(server, token, { sort, order, limit: 200 });
        expect(all.total).toBe(rows.length);
        expect(
          all.loras.map((l) => l.id),
          `${sort} ${order}`,
        ).toEqual(expected);

        const seen: string[] = [];
        for (let offset = 0; offset < rows.length + 5; offset += 5) {
          const page = await listLoras(server, token, { sort, order, limit: 5, offset });
          expect(page.total, `${sort} ${order} @${offset}`).toBe(rows.length);
          expect(page.limit).toBe(5);
          expect(page.offset).toBe(offset);
          expect(page.loras.length).toBe(Math.max(0, Math.min(5, rows.length - offset)));
          seen.push(...page.loras.map((l) => l.id));
        }
        expect(seen, `paging ${sort} ${order}`).toEqual(expected);
        expect(new Set(seen).size).toBe(rows.length);
      }
    }

    const lastUsedDesc = await listLoras(server, token, { sort: 'LAST_USED', order: 'DESC', limit: 200 });
    const usedFlags = lastUsedDesc.loras.map((l) => l.lastUsedAt !== null);
    expect(usedFlags).toEqual([...usedFlags].sort((a, b) => Number(b) - Number(a))); // all used ones first
    expect(usedFlags.filter((u) => !u).length).toBe(4);
    expect(lastUsedDesc.loras.at(-1)?.lastUsedAt).toBeNull();

    // The default order is CREATED_AT DESC.
    const byDefault = await listLoras(server, token, { limit: 200 });
    expect(byDefault.loras.map((l) => l.id)).toEqual(all(rows, ascending.CREATED_AT).reverse());
  });

  it('defaults to 50 per page, allows up to 200, and rejects limit 0 / 201 / negative offset with issues', async () => {
    const userId = newUserId();
    const token = await server.tokens.user(userId);
    await seedAll(
      userId,
      Array.from({ length: 51 }, (_, i) => ({ name: `bulk ${String(i).padStart(2, '0')}` })),
      10,
    );

    const byDefault = await listLoras(server, token);
    expect(byDefault.limit).toBe(50);
    expect(byDefault.offset).toBe(0);
    expect(byDefault.total).toBe(51);
    expect(byDefault.loras).toHaveLength(50);

    const max = await listLoras(server, token, { limit: 200 });
    expect(max.limit).toBe(200);
    expect(max.loras).toHaveLength(51);
    const tail = await listLoras(server, token, { offset: 50 });
    expect(tail.loras).toHaveLength(1);
    expect(tail.total).toBe(51);

    const bad: [LorasQueryVariables, string][] = [
      [{ limit: 0 }, 'limit'],
      [{ limit: 201 }, 'limit'],
      [{ limit: -5 }, 'limit'],
      [{ offset: -1 }, 'offset'],
    ];
    for (const [variables, path] of bad) {
      const r = await server.request(LorasDocument, variables, { token });
      expectBadUserInput(r, path);
      expect(r.body.data?.loras ?? null).toBeNull();
    }
    // Inline literals take the same path (a hand-written document: the literal is the point).
    expectBadUserInput(await server.gql('{ loras(limit: 201) { total } }', {}, { token }), 'limit');
  });
});

describe('loras: search and filters', () => {
  it('searches names case-insensitively across unicode (é, ß, emoji, CJK, mixed case)', async () => {
    const userId = newUserId();
    const token = await server.tokens.user(userId);
    await seedAll(userId, [
      { name: 'Café Crème' },
      { name: 'CAFÉ noir' },
      { name: 'cafe plain' },
      { name: 'Straße Nacht' },
      { name: '日本語スタイル' },
      { name: '😀 Smile Pack' },
      { name: 'MiXeD CaSe' },
    ]);
    await seedLora(server.app, newUserId(), { name: 'Café of someone else' });

    expect(await names(token, { search: 'café' })).toEqual(['CAFÉ noir', 'Café Crème']);
    expect(await names(token, { search: 'É' })).toEqual(['CAFÉ noir', 'Café Crème']);
    expect(await names(token, { search: 'CAFE' })).toEqual(['cafe plain']);
    expect(await names(token, { search: 'crème' })).toEqual(['Café Crème']);
    expect(await names(token, { search: 'aße n' })).toEqual(['Straße Nacht']);
    expect(await names(token, { search: '本語' })).toEqual(['日本語スタイル']);
    expect(await names(token, { search: '😀' })).toEqual(['😀 Smile Pack']);
    expect(await names(token, { search: 'mixed case' })).toEqual(['MiXeD CaSe']);
    expect(await names(token, { search: 'xEd c' })).toEqual(['MiXeD CaSe']);
    expect(await names(token, { search: 'nothing like it' })).toEqual([]);
    // Pages agree with the filter's total.
    const page = await listLoras(server, token, { search: 'caf', limit: 2, sort: 'NAME', order: 'ASC' });
    expect(page.total).toBe(3);
    expect(page.loras.map((l) => l.name)).toEqual(['cafe plain', 'Café Crème']);
  });

  it('finds a name by its own text whatever the script (Greek final sigma, Turkish dotted İ)', async () => {
    const userId = newUserId();
    const token = await server.tokens.user(userId);
    await seedAll(userId, [{ name: 'ΟΔΟΣ Style' }, { name: 'İstanbul Nights' }, { name: 'plain' }]);
    // Searching for exactly what the name says must find it.
    expect.soft(await names(token, { search: 'ΟΔΟΣ' }), 'ΟΔΟΣ').toEqual(['ΟΔΟΣ Style']);
    expect.soft(await names(token, { search: 'ΟΔΟΣ Style' }), 'ΟΔΟΣ Style').toEqual(['ΟΔΟΣ Style']);
    expect.soft(await names(token, { search: 'οδοσ' }), 'οδοσ').toEqual(['ΟΔΟΣ Style']);
    expect.soft(await names(token, { search: 'İstanbul' }), 'İstanbul').toEqual(['İstanbul Nights']);
  });

  it('matches a decomposed (NFD) search against composed names', async () => {
    const userId = newUserId();
    const token = await server.tokens.user(userId);
    await seedLora(server.app, userId, { name: 'Café Crème' });
    expect(await names(token, { search: 'cafe\u0301' })).toEqual(['Café Crème']);
  });

  it('treats % _ and \\ in a search as literal characters, not wildcards', async () => {
    const userId = newUserId();
    const token = await server.tokens.user(userId);
    await seedAll(userId, [
      { name: '100% natural' },
      { name: '100 natural' },
      { name: '1000 natural' },
      { name: 'snake_case' },
      { name: 'snakeXcase' },
      { name: 'back\\slash' },
      { name: 'backslash' },
    ]);
    expect(await names(token, { search: '%' })).toEqual(['100% natural']);
    expect(await names(token, { search: '100%' })).toEqual(['100% natural']);
    expect(await names(token, { search: '%%' })).toEqual([]);
    expect(await names(token, { search: '_' })).toEqual(['snake_case']);
    expect(await names(token, { search: 'e_c' })).toEqual(['snake_case']);
    expect(await names(token, { search: '1_0' })).toEqual([]);
    expect(await names(token, { search: '\\' })).toEqual(['back\\slash']);
    expect(await names(token, { search: 'k\\s' })).toEqual(['back\\slash']);
    expect(await names(token, { search: '' })).toHaveLength(7);
  });

  it('filters by tags (all required) and baseModel, alone and combined with search', async () => {
    const userId = newUserId();
    const token = await server.tokens.user(userId);
    await seedAll(userId, [
      { name: 'A both', tags: ['anime', 'style'], baseModel: 'SD1' },
      { name: 'B anime', tags: ['anime'], baseModel: 'SDXL' },
      { name: 'C style', tags: ['style', 'extra'], baseModel: 'SD1' },
      { name: 'D none', tags: [], baseModel: 'FLUX1' },
      { name: 'E all', tags: ['anime', 'style', 'extra'], baseModel: 'SDXL' },
    ]);
    await seedLora(server.app, newUserId(), { name: 'X other', tags: ['anime', 'style'], baseModel: 'SD1' });

    expect(await names(token, { tags: ['anime', 'style'] })).toEqual(['A both', 'E all']);
    expect(await names(token, { tags: ['style', 'anime'] })).toEqual(['A both', 'E all']);
    expect(await names(token, { tags: ['anime'] })).toEqual(['A both', 'B anime', 'E all']);
    expect(await names(token, { tags: ['style', 'extra'] })).toEqual(['C style', 'E all']);
    expect(await names(token, { tags: ['anime', 'style', 'extra'] })).toEqual(['E all']);
    expect(await names(token, { tags: ['anime', 'missing'] })).toEqual([]);
    expect(await names(token, { tags: [] })).toHaveLength(5);
    expect(await names(token, { baseModel: 'SD1' })).toEqual(['A both', 'C style']);
    expect(await names(token, { baseModel: 'SDXL' })).toEqual(['B anime', 'E all']);
    expect(await names(token, { baseModel: 'SD3' })).toEqual([]);
    expect(await names(token, { baseModel: 'SDXL', tags: ['style'] })).toEqual(['E all']);
    expect(await names(token, { baseModel: 'SD1', search: 'sty' })).toEqual(['C style']);
    const page = await listLoras(server, token, { tags: ['anime'], limit: 1, sort: 'NAME', order: 'DESC' });
    expect(page.total).toBe(3);
    expect(page.loras.map((l) => l.name)).toEqual(['E all']);
    expect(page.loras[0]?.tags).toEqual(['anime', 'style', 'extra']);
  });
});

describe('lora(id): metadata and usage', () => {
  it('returns metadata, usageCount, lastUsedAt and workflowsUsing (per workflow, most recent first) after machine usage reports', async () => {
    const userId = newUserId();
    const token = await server.tokens.user(userId);
    const bytes = sizedLora(2);
    const l1 = await seedLora(server.app, userId, { name: 'Portrait LoRA', bytes, fileName: 'portrait_v2.safetensors' });
    const l2 = await seedLora(server.app, userId, { name: 'Second' });
    const strangerId = newUserId();
    const foreign = await seedLora(server.app, strangerId, { name: 'Not yours' });

    const before = await getLora(token, l1.id);
    expect(before).toMatchObject({
      __typename: 'Lora',
      id: l1.id,
      name: 'Portrait LoRA',
      fileName: 'portrait_v2.safetensors',
      format: 'SAFETENSORS',
      sizeBytes: bytes.length,
      sha256: l1.sha256,
      status: 'READY',
      tags: [],
      usageCount: 0,
      lastUsedAt: null,
      workflowsUsing: [],
      metadata: {
        baseModel: 'SD1',
        baseModelSource: 'METADATA',
        rank: 4,
        alpha: 2,
        networkModule: 'networks.lora',
        tensorCount: 3,
        triggerWords: [],
      },
    });
    expect(before.sha256).toMatch(/^[0-9a-f]{64}$/);

    const machine = await server.tokens.machine(`m-${userId.slice(0, 8)}`);
    const grant = await mintGrant(server, userId);
    const t1 = Date.now();
    expect(await recordUsage(server, machine, grant, [l1.id], 'wf-a', 'Portraits')).toBe(1);
    await new Promise((r) => setTimeout(r, 10));
    expect(await recordUsage(server, machine, grant, [l1.id, l2.id, foreign.id], 'wf-b', 'Landscapes')).toBe(2);
    await new Promise((r) => setTimeout(r, 10));
    expect(await recordUsage(server, machine, grant, [l1.id, l1.id], 'wf-a', 'Portraits')).toBe(1); // duplicates count once
    await new Promise((r) => setTimeout(r, 10));
    expect(await recordUsage(server, machine, grant, [l1.id])).toBe(1); // no workflow: counted, not listed

    const after = await getLora(token, l1.id);
    expect(after.usageCount).toBe(4);
    const lastUsed = Date.parse(after.lastUsedAt ?? '');
    expect(lastUsed).toBeGreaterThanOrEqual(t1 - 1000);
    expect(lastUsed).toBeLessThanOrEqual(Date.now() + 1000);
    expect(after.workflowsUsing.map((w) => [w.id, w.name, w.useCount])).toEqual([
      ['wf-a', 'Portraits', 2],
      ['wf-b', 'Landscapes', 1],
    ]);
    const [latest, earlier] = after.workflowsUsing;
    expect(Date.parse(latest?.lastUsedAt ?? '')).toBeGreaterThan(Date.parse(earlier?.lastUsedAt ?? ''));
    expect(Date.parse(after.updatedAt)).toBe(Date.parse(before.updatedAt)); // usage is not an edit

    await new Promise((r) => setTimeout(r, 10));
    expect(await recordUsage(server, machine, grant, [l1.id], 'wf-b', 'Landscapes')).toBe(1);
    const flipped = await getLora(token, l1.id);
    expect(flipped.workflowsUsing.map((w) => [w.id, w.useCount])).toEqual([
      ['wf-b', 2],
      ['wf-a', 2],
    ]);
    expect(flipped.usageCount).toBe(5);
    expect(Date.parse(flipped.lastUsedAt ?? '')).toBeGreaterThan(lastUsed);

    const second = await getLora(token, l2.id);
    expect(second.usageCount).toBe(1);
    expect(second.workflowsUsing.map((w) => [w.id, w.useCount])).toEqual([['wf-b', 1]]);

    // The same fields through the list, sorted by LAST_USED.
    const list = await listLoras(server, token, { sort: 'LAST_USED', order: 'DESC' });
    expect(list.loras.map((l) => l.id)).toEqual([l1.id, l2.id]);

    // A grant for this user cannot count another user's LoRA, and the stranger sees nothing of it.
    const foreignRow = await server.app.db.lora.findUniqueOrThrow({ where: { file_id: BigInt(foreign.id) } });
    expect(foreignRow.usage_count).toBe(0);
    expect(foreignRow.last_used_at).toBeNull();
    const strangersView = await getLora(await server.tokens.user(strangerId), foreign.id);
    expect(strangersView.workflowsUsing).toEqual([]);
  });

  it("answers NotFoundError for another user's LoRA and for ids that do not exist, identically", async () => {
    const owner = newUserId();
    const lora = await seedLora(server.app, owner, { name: 'private' });
    const token = await server.tokens.user(newUserId());
    for (const id of [lora.id, '999999999999', 'abc', '0', '-1']) {
      const res = await getLoraResult(server, token, id);
      expect(res).toEqual({
        __typename: 'NotFoundError',
        code: 'LORA_NOT_FOUND',
        message: `LoRA with ID ${id} not found or access denied`,
        loraId: id,
      });
    }
  });
});

describe('updateLora', () => {
  async function dbState(id: string) {
    const fileId = BigInt(id);
    const [file, lora] = await Promise.all([
      server.app.db.flat_file.findUniqueOrThrow({ where: { id: fileId } }),
      server.app.db.lora.findUniqueOrThrow({ where: { file_id: fileId } }),
    ]);
    return {
      fileName: file.name,
      fileTags: file.tags,
      hidden: file.hidden,
      name: lora.name,
      baseModel: lora.base_model,
      baseModelSource: lora.base_model_source,
      userMetadata: lora.user_metadata,
      updatedAt: lora.updated_at.toISOString(),
      blobPath: lora.blob_path,
    };
  }

  it('renames with a sanitized display name (controls, RTL override, zero-width removed; whitespace collapsed; NFC) and flat_file.name follows', async () => {
    const userId = newUserId();
    const token = await server.tokens.user(userId);
    const lora = await seedLora(server.app, userId, { name: 'Original' });
    const before = await dbState(lora.id);

    const raw = '\u202E  My\u200B Cool\u200C\u200D\uFEFF\t\n  LoRA\u0000\u0007\u009F   ../../etc \u202Dx\u200E\u200F  ';
    const renamed = await update(token, { id: lora.id, name: raw });
    expect(renamed.__typename).toBe('Lora');
    expect(renamed.name).toBe('My Cool LoRA ../../etc x');
    expect(Date.parse(renamed.updatedAt)).toBeGreaterThan(Date.parse(before.updatedAt));
    const after = await dbState(lora.id);
    expect(after.name).toBe('My Cool LoRA ../../etc x');
    expect(after.fileName).toBe('My Cool LoRA ../../etc x');
    expect(after.blobPath).toBe(before.blobPath); // the name is never part of a path
    expect(after.fileTags).toEqual(before.fileTags);

    const nfc = await update(token, { id: lora.id, name: 'Cafe\u0301  Cre\u0300me' });
    expect(nfc.name).toBe('Café Crème');
    expect((await dbState(lora.id)).fileName).toBe('Café Crème');
    expect(await names(token, { search: 'café' })).toEqual(['Café Crème']);
    expect((await getLora(token, lora.id)).name).toBe('Café Crème');
  });

  it('also strips other invisible formatting characters (word joiner U+2060, invisible separator U+2063, arabic letter mark U+061C)', async () => {
    const userId = newUserId();
    const token = await server.tokens.user(userId);
    const lora = await seedLora(server.app, userId, { name: 'Original' });
    for (const [what, ch] of [
      ['U+2060', '\u2060'],
      ['U+2063', '\u2063'],
      ['U+061C', '\u061C'],
    ] as const) {
      const renamed = await update(token, { id: lora.id, name: `in${ch}visible ${what}` });
      expect.soft(renamed.name, what).toBe(`invisible ${what}`);
      expect.soft((await dbState(lora.id)).fileName, what).toBe(`invisible ${what}`);
    }
  });

  it('refuses bad names, tags and metadata with a ValidationError naming the path, and changes nothing', async () => {
    const userId = newUserId();
    const token = await server.tokens.user(userId);
    const lora = await seedLora(server.app, userId, { name: 'Keep me', tags: ['keep'] });
    const before = await dbState(lora.id);

    const cases: [string, Omit<UpdateLoraMutationVariables, 'id'>, (path: string) => boolean][] = [
      ['only spaces', { name: '    \t  ' }, (p) => p === 'name'],
      ['only invisible characters', { name: '\u200B\u202E\u0000 ' }, (p) => p === 'name'],
      ['10,000 characters', { name: 'n'.repeat(10_000) }, (p) => p === 'name'],
      ['21 tags', { tags: Array.from({ length: 21 }, (_, i) => `t${i}`) }, (p) => p === 'tags'],
      ['a 51-character tag', { tags: ['fine', 'y'.repeat(51)] }, (p) => p === 'tags.1'],
      ['an empty tag', { tags: ['fine', '   '] }, (p) => p === 'tags.1'],
      ['an unknown metadata key', { metadata: { evil: 'x' } }, (p) => p.startsWith('metadata')],
      ['a bad baseModel', { metadata: { baseModel: '../SDXL' } }, (p) => p === 'metadata.baseModel'],
      ['metadata that is not an object', { metadata: 'SDXL' }, (p) => p.startsWith('metadata')],
      ['a good name with bad tags', { name: 'Renamed', tags: Array.from({ length: 21 }, (_, i) => `t${i}`) }, (p) => p === 'tags'],
      ['good tags with a bad name', { name: ' ', tags: ['new'], metadata: { baseModel: 'SDXL' } }, (p) => p === 'name'],
    ];
    for (const [what, variables, pathOk] of cases) {
      const result = member(await updateLora(server, token, { id: lora.id, ...variables }), 'ValidationError');
      expect(result.code, what).toBe('VALIDATION_FAILED');
      expect(result.issues.length, what).toBeGreaterThan(0);
      expect(
        result.issues.some((i) => pathOk(i.path)),
        `${what}: ${JSON.stringify(result.issues)}`,
      ).toBe(true);
      expect(await dbState(lora.id), what).toEqual(before);
    }
    const view = await getLora(token, lora.id);
    expect(view.name).toBe('Keep me');
    expect(view.tags).toEqual(['keep']);
    expect(view.metadata.baseModel).toBe('SD1');
  });

  it("replaces tags, deduplicates them case-insensitively, and keeps the implicit 'lora' tag exactly once", async () => {
    const userId = newUserId();
    const token = await server.tokens.user(userId);
    const lora = await seedLora(server.app, userId, { name: 'Tagged', tags: ['old1', 'old2'] });
    expect((await dbState(lora.id)).fileTags).toEqual(['lora', 'old1', 'old2']);

    const updated = await update(token, {
      id: lora.id,
      tags: ['Anime', 'anime', '  ANIME ', 'Style', 'lora', 'LoRA', 'style', 'x\u200By'],
    });
    expect(updated.__typename).toBe('Lora');
    expect(updated.tags).toEqual(['Anime', 'Style', 'xy']);
    const stored = (await dbState(lora.id)).fileTags;
    expect(stored.filter((t) => t.toLowerCase() === 'lora')).toEqual(['lora']);
    expect([...stored].sort()).toEqual(['Anime', 'Style', 'lora', 'xy']);
    expect(await names(token, { tags: ['Anime', 'Style'] })).toEqual(['Tagged']);
    expect(await names(token, { tags: ['old1'] })).toEqual([]);

    // A rename leaves the tags alone; an empty list clears the user tags but not 'lora'.
    await update(token, { id: lora.id, name: 'Tagged 2' });
    expect((await getLora(token, lora.id)).tags).toEqual(['Anime', 'Style', 'xy']);
    const cleared = await update(token, { id: lora.id, tags: [] });
    expect(cleared.tags).toEqual([]);
    expect((await dbState(lora.id)).fileTags).toEqual(['lora']);
    expect(await names(token, {})).toEqual(['Tagged 2']);

    const twenty = Array.from({ length: 20 }, (_, i) => `tag-${i}`);
    expect((await update(token, { id: lora.id, tags: twenty })).tags).toEqual(twenty);
    expect((await dbState(lora.id)).fileTags.filter((t) => t === 'lora')).toHaveLength(1);
  });

  it('overrides baseModel (source USER, filters follow) and restores the detected one with baseModel: null', async () => {
    const userId = newUserId();
    const token = await server.tokens.user(userId);
    const lora = await seedLora(server.app, userId, { name: 'Overridable', baseModel: 'SD1' });
    await seedLora(server.app, userId, { name: 'Bystander', baseModel: 'SD1' });

    const overridden = await update(token, {
      id: lora.id,
      metadata: { baseModel: 'SDXL', triggerWords: ['  neon \u200Bcity ', 'glow'], description: 'A test LoRA' },
    });
    expect(overridden.__typename).toBe('Lora');
    expect(overridden.metadata).toMatchObject({
      baseModel: 'SDXL',
      baseModelSource: 'USER',
      triggerWords: ['neon city', 'glow'],
      description: 'A test LoRA',
    });
    expect(await names(token, { baseModel: 'SDXL' })).toEqual(['Overridable']);
    expect(await names(token, { baseModel: 'SD1' })).toEqual(['Bystander']);
    expect((await dbState(lora.id)).baseModelSource).toBe('USER');

    // Later patches merge: the title is added, the override and trigger words stay.
    const titled = await update(token, { id: lora.id, metadata: { title: 'Neon' } });
    expect(titled.metadata).toMatchObject({
      baseModel: 'SDXL',
      baseModelSource: 'USER',
      title: 'Neon',
      triggerWords: ['neon city', 'glow'],
    });

    const restored = await update(token, { id: lora.id, metadata: { baseModel: null } });
    expect(restored.metadata).toMatchObject({ baseModel: 'SD1', baseModelSource: 'METADATA', title: 'Neon', description: 'A test LoRA' });
    expect(await names(token, { baseModel: 'SDXL' })).toEqual([]);
    expect(await names(token, { baseModel: 'SD1' })).toEqual(['Bystander', 'Overridable']);
    const state = await dbState(lora.id);
    expect([state.baseModel, state.baseModelSource]).toEqual(['SD1', 'METADATA']);

    // The description can be cleared with null.
    const noDescription = await update(token, { id: lora.id, metadata: { description: null } });
    expect(noDescription.metadata.description).toBeNull();
  });

  it('does not let another user edit (NotFoundError) and leaves the LoRA untouched', async () => {
    const owner = newUserId();
    const lora = await seedLora(server.app, owner, { name: 'Mine', tags: ['a'] });
    const before = await dbState(lora.id);
    const result = await updateLora(server, await server.tokens.user(newUserId()), { id: lora.id, name: 'Stolen', tags: ['b'] });
    expect(result).toEqual({
      __typename: 'NotFoundError',
      code: 'LORA_NOT_FOUND',
      message: `LoRA with ID ${lora.id} not found or access denied`,
      loraId: lora.id,
    });
    expect(await dbState(lora.id)).toEqual(before);
  });
});

function all<T extends { id: string }>(rows: T[], cmp: (a: T, b: T) => number): string[] {
  return [...rows].sort(cmp).map((r) => r.id);
}
