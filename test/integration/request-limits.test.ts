import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { expectRefused, expectRejectedBeforeExecution } from '../testkit/graphql-assertions.ts';
import { nestedInlineFragments, postRaw } from '../testkit/graphql-requests.ts';
import { quotaRow } from '../testkit/rows.ts';
import { newUserId } from '../testkit/seed.ts';
import { startTestServer, type TestServer } from '../testkit/server.ts';

/**
 * Request limits before execution (THREATS.md row 9): depth, aliases, directives, tokens, characters, batching.
 * A real server per describe block over real HTTP, real PostgreSQL and Azurite, real JWTs.
 * The documents are hand-written on purpose: their shape (depth, aliases, size) is what is tested.
 */

describe('request limits (THREATS row 9)', () => {
  let server: TestServer;
  let admin: string;
  beforeAll(async () => {
    server = await startTestServer();
    admin = await server.tokens.admin();
  });
  afterAll(() => server?.stop());

  /** A mutation that would set the target's maxLoraCount to 9: proof of (non-)execution. */
  const setQuota = (target: string, selection = 'userId', alias = '') =>
    `${alias}setUserLoraQuota(userId: "${target}", maxLoraCount: 9) { ${selection} }`;

  async function expectNotExecuted(target: string): Promise<void> {
    expect(await quotaRow(server, target)).toBeNull();
  }

  it('depth: 10 levels run, 11 are rejected before execution', async () => {
    const user = await server.tokens.user(newUserId());
    // loraQuota (1) + n inline fragments + loraCount (1)
    const ok = await server.gql(`{ loraQuota { ${nestedInlineFragments('loraCount', 'LoraQuota', 8)} } }`, {}, { token: user });
    expect(ok.body).toEqual({ data: { loraQuota: { loraCount: 0 } } });
    const deep = await server.gql(`{ loraQuota { ${nestedInlineFragments('loraCount', 'LoraQuota', 9)} } }`, {}, { token: user });
    expectRejectedBeforeExecution(deep);
    expect(deep.body.errors?.[0]?.message).toMatch(/depth/i);
    const target = newUserId();
    const mutation = await server.gql(
      `mutation { ${setQuota(target, nestedInlineFragments('userId', 'LoraQuota', 12))} }`,
      {},
      { token: admin },
    );
    expectRejectedBeforeExecution(mutation);
    await expectNotExecuted(target);
  });

  it('aliases: 15 run, 16 are rejected before execution', async () => {
    const target = newUserId();
    const aliased = (n: number) => `mutation { ${Array.from({ length: n }, (_, i) => setQuota(target, 'userId', `a${i}: `)).join(' ')} }`;
    const rejected = await server.gql(aliased(16), {}, { token: admin });
    expectRejectedBeforeExecution(rejected);
    expect(rejected.body.errors?.[0]?.message).toMatch(/alias/i);
    await expectNotExecuted(target);
    const ok = await server.gql(aliased(15), {}, { token: admin });
    expect(ok.body.errors).toBeUndefined();
    expect(Object.keys(ok.body.data ?? {})).toHaveLength(15);
    expect((await quotaRow(server, target))?.max_lora_count).toBe(9);
  });

  it('directives: more than 20 are rejected before execution', async () => {
    const target = newUserId();
    // One @include per selection (a directive may appear once per location): only the count is wrong.
    const withDirectives = (field: string, n: number) => `${field} @include(if: true) `.repeat(n);
    const rejected = await server.gql(
      `mutation { setUserLoraQuota(userId: "${target}", maxLoraCount: 9) { ${withDirectives('userId', 21)} } }`,
      {},
      { token: admin },
    );
    expectRejectedBeforeExecution(rejected);
    expect(rejected.body.errors?.[0]?.message).toMatch(/directives limit/i);
    await expectNotExecuted(target);
    const ok = await server.gql(`{ ${withDirectives('__typename', 20)} }`, {}, { token: admin });
    expect(ok.body).toEqual({ data: { __typename: 'Query' } });
  });

  it('tokens: a query of more than 2,000 tokens (under 20,000 characters) is rejected before execution', async () => {
    const target = newUserId();
    const query = `mutation { ${setQuota(target, 'userId '.repeat(2100))} }`;
    expect(query.length).toBeLessThan(20_000);
    const rejected = await server.gql(query, {}, { token: admin });
    expectRejectedBeforeExecution(rejected);
    expect(rejected.body.errors?.[0]?.message).toMatch(/token/i);
    await expectNotExecuted(target);
    // The same shape under the limit parses and runs (and the service, not the parser, refuses the tags).
    const tagsQuery = (n: number) => `{ loras(tags: [${'"a" '.repeat(n)}]) { total } }`;
    const under = await server.gql(tagsQuery(1900), {}, { token: admin });
    expectRefused(under, 'BAD_USER_INPUT');
    expect(under.body.errors?.[0]?.message).toMatch(/tags/);
    const over = await server.gql(tagsQuery(2100), {}, { token: admin });
    expectRejectedBeforeExecution(over);
    expect(over.body.errors?.[0]?.message).toMatch(/token/i);
  });

  it('characters: a query over 20,000 characters is rejected before execution (even if only a comment)', async () => {
    const target = newUserId();
    const base = `mutation { ${setQuota(target)} }\n#`;
    const rejected = await server.gql(base + 'x'.repeat(20_001 - base.length), {}, { token: admin });
    expect(rejected.status).toBe(400);
    expectRejectedBeforeExecution(rejected);
    await expectNotExecuted(target);
    const ok = await server.gql(base + 'x'.repeat(19_999 - base.length), {}, { token: admin });
    expect(ok.body).toEqual({ data: { setUserLoraQuota: { userId: target } } });
  });

  it('fragment cycles, deep fragment chains and fragment bombs are rejected quickly, and the server keeps serving', async () => {
    const user = await server.tokens.user(newUserId());
    const chain = (n: number, cyclic: boolean, spreads = 1) =>
      Array.from({ length: n }, (_, i) => {
        const next = i + 1 < n ? `F${i + 1}` : cyclic ? 'F0' : null;
        return `fragment F${i} on LoraQuota { loraCount ${next ? `...${next} `.repeat(spreads) : ''}}`;
      }).join('\n');
    const documents = [
      '{ loraQuota { ...A } } fragment A on LoraQuota { userId ...B } fragment B on LoraQuota { loraCount ...A }',
      '{ loraQuota { ...A } } fragment A on LoraQuota { ...A }',
      `{ loraQuota { ...F0 } }\n${chain(60, true)}`,
      `{ loraQuota { ...F0 } }\n${chain(60, false)}`,
      `{ loraQuota { ...F0 } }\n${chain(40, false, 2)}`, // 2^40 expansions if walked naively
    ];
    for (const query of documents) {
      const started = Date.now();
      const res = await server.gql(query, {}, { token: user });
      expectRejectedBeforeExecution(res);
      expect(Date.now() - started).toBeLessThan(3_000);
    }
    expect((await server.gql('{ loraQuota { loraCount } }', {}, { token: user })).body).toEqual({ data: { loraQuota: { loraCount: 0 } } });
  });

  it('batched operations (a JSON array body) are refused without executing any', async () => {
    const target = newUserId();
    const res = await postRaw(server.graphqlUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${admin}` },
      body: JSON.stringify([{ query: `mutation { ${setQuota(target)} }` }, { query: '{ __typename }' }]),
    });
    expect(res.status).toBeGreaterThanOrEqual(400);
    expect(res.status).toBeLessThan(500);
    expect(res.text).not.toContain('"data"');
    await expectNotExecuted(target);
  });
});
