import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mintGrant } from '../testkit/grants.ts';
import { expectRefused } from '../testkit/graphql-assertions.ts';
import { M_SET_QUOTA, STATS_INPUT } from '../testkit/graphql-requests.ts';
import { signRawJwt, unsignedJwt, withPayload } from '../testkit/jwt.ts';
import { quotaRow } from '../testkit/rows.ts';
import { newUserId, seedLora } from '../testkit/seed.ts';
import { startTestServer, TEST_JWT_SECRET, type TestServer } from '../testkit/server.ts';

/**
 * Bearer tokens: every bad token gets the same answer (THREATS.md row 9).
 * A real server per describe block over real HTTP, real PostgreSQL and Azurite, real JWTs.
 * The documents are hand-written on purpose: whole bodies are compared, so each selects only what the comparison needs.
 */

const OTHER_SECRET = 'not-the-server-secret-not-the-server-secret-42';

describe('bearer tokens', () => {
  let server: TestServer;
  beforeAll(async () => {
    // hundreds of bad tokens from one address on purpose: out of reach of RATE_LIMIT_AUTH_FAILURES (rate-limits.test.ts)
    server = await startTestServer({ RATE_LIMIT_AUTH_FAILURES: '100000/300' });
  });
  afterAll(() => server?.stop());

  const userId = newUserId();
  const now = () => Math.floor(Date.now() / 1000);

  const BAD_TOKENS: { name: string; token: () => Promise<string> | string }[] = [
    {
      name: 'admin token signed with another secret',
      token: () => signRawJwt({ secret: OTHER_SECRET, claims: { role: 'admin', sub: 'mallory' } }),
    },
    {
      name: 'user token signed with another secret',
      token: () => signRawJwt({ secret: OTHER_SECRET, claims: { role: 'user', sub: userId } }),
    },
    {
      name: 'expired an hour ago',
      token: () => signRawJwt({ secret: TEST_JWT_SECRET, claims: { role: 'admin', sub: 'ops' }, expiresIn: -3600 }),
    },
    {
      name: 'expired a minute ago (beyond clock tolerance)',
      token: () => signRawJwt({ secret: TEST_JWT_SECRET, claims: { role: 'user', sub: userId }, expiresIn: -60 }),
    },
    {
      name: 'not valid before an hour from now',
      token: () => signRawJwt({ secret: TEST_JWT_SECRET, claims: { role: 'admin', sub: 'ops' }, notBeforeIn: 3600 }),
    },
    {
      name: 'wrong issuer',
      token: () => signRawJwt({ secret: TEST_JWT_SECRET, claims: { role: 'admin', sub: 'ops' }, issuer: 'someone-else' }),
    },
    { name: 'no issuer', token: () => signRawJwt({ secret: TEST_JWT_SECRET, claims: { role: 'admin', sub: 'ops' }, issuer: null }) },
    { name: 'alg: none (unsigned admin token)', token: () => unsignedJwt({ role: 'admin', sub: 'mallory' }) },
    { name: 'alg: none with a user claim', token: () => unsignedJwt({ role: 'user', sub: userId }) },
    {
      name: 'HS512 with the right secret (algorithm not allowed)',
      token: () => signRawJwt({ secret: TEST_JWT_SECRET, claims: { role: 'admin', sub: 'ops' }, alg: 'HS512' }),
    },
    {
      name: 'user token tampered into an admin token',
      token: async () => withPayload(await server.tokens.user(userId), { role: 'admin' }),
    },
    {
      name: 'user token whose exp was pushed out by tampering',
      token: async () =>
        withPayload(await signRawJwt({ secret: TEST_JWT_SECRET, claims: { role: 'user', sub: userId }, expiresIn: -3600 }), {
          exp: now() + 3600,
        }),
    },
    {
      name: 'user token whose sub is not a UUID',
      token: () => signRawJwt({ secret: TEST_JWT_SECRET, claims: { role: 'user', sub: 'alice' } }),
    },
    {
      name: 'user token whose sub is a UUID with junk around it',
      token: () => signRawJwt({ secret: TEST_JWT_SECRET, claims: { role: 'user', sub: `${userId}' OR 1=1 --` } }),
    },
    { name: 'user token without sub', token: () => signRawJwt({ secret: TEST_JWT_SECRET, claims: { role: 'user' } }) },
    { name: 'unknown role', token: () => signRawJwt({ secret: TEST_JWT_SECRET, claims: { role: 'superuser', sub: 'ops' } }) },
    { name: 'role given as an array', token: () => signRawJwt({ secret: TEST_JWT_SECRET, claims: { role: ['admin'], sub: 'ops' } }) },
    { name: 'no role', token: () => signRawJwt({ secret: TEST_JWT_SECRET, claims: { sub: userId } }) },
    { name: 'machine token without machine_id or sub', token: () => signRawJwt({ secret: TEST_JWT_SECRET, claims: { role: 'machine' } }) },
    { name: 'a job grant used as a bearer token', token: () => mintGrant(server, userId) },
    { name: 'garbage', token: () => 'garbage' },
    { name: 'three garbage segments', token: () => 'a.b.c' },
    { name: 'a header with an empty signature', token: async () => `${(await server.tokens.admin()).split('.').slice(0, 2).join('.')}.` },
    { name: 'a JSON document', token: () => Buffer.from('{"role":"admin"}').toString('base64url') },
  ];

  it('control: the same requests with a valid token succeed', async () => {
    const token = await server.tokens.user(userId);
    expect((await server.gql('{ loraQuota { userId } }', {}, { token })).body).toEqual({ data: { loraQuota: { userId } } });
    expect((await server.gql('{ __typename }', {}, { token })).body).toEqual({ data: { __typename: 'Query' } });
    const target = newUserId();
    const set = await server.gql(M_SET_QUOTA, { u: target, n: 3 }, { token: await server.tokens.admin() });
    expect(set.body).toEqual({ data: { setUserLoraQuota: { userId: target, maxLoraCount: 3 } } });
  });

  it.each(BAD_TOKENS)('$name → UNAUTHENTICATED, no data, no effect', async ({ token: make }) => {
    const token = await make();
    const target = newUserId();
    const requests: [string, Record<string, unknown>][] = [
      ['{ loraQuota { userId loraCount } }', {}],
      ['{ __typename }', {}],
      [M_SET_QUOTA, { u: target, n: 3 }],
      ['query($u: ID) { loras(userId: $u) { total } }', { u: userId }],
    ];
    for (const [query, variables] of requests) {
      const res = await server.gql(query, variables, { token });
      expect([200, 401], `${query}: status ${res.status}`).toContain(res.status);
      expectRefused(res, 'UNAUTHENTICATED');
    }
    expect(await quotaRow(server, target)).toBeNull();
  });

  it('every bad token gets the same answer: nothing tells which check failed', async () => {
    const bodies = new Set<string>();
    const statuses = new Set<number>();
    for (const { token: make } of BAD_TOKENS) {
      const res = await server.gql('{ loraQuota { loraCount } }', {}, { token: await make() });
      bodies.add(JSON.stringify(res.body));
      statuses.add(res.status);
    }
    expect([...bodies]).toHaveLength(1);
    expect([...statuses]).toHaveLength(1);
  });

  it('no token, an empty bearer or another scheme → UNAUTHENTICATED (anonymous), no data', async () => {
    const headerSets: Record<string, string>[] = [
      {},
      { authorization: 'Bearer ' },
      { authorization: 'Basic YWRtaW46YWRtaW4=' },
      { authorization: `Bearer ${await server.tokens.admin()} extra` },
    ];
    for (const headers of headerSets) {
      const res = await server.gql('{ loraQuota { loraCount } }', {}, { token: null, headers });
      expectRefused(res, 'UNAUTHENTICATED');
      const mutation = await server.gql(M_SET_QUOTA, { u: userId, n: 1 }, { token: null, headers });
      expectRefused(mutation, 'UNAUTHENTICATED');
    }
    expect(await quotaRow(server, userId)).toBeNull();
  });

  it('a user token whose sub is an upper-case UUID is the same user (not another one)', async () => {
    const owner = newUserId();
    const lora = await seedLora(server.app, owner);
    const upper = await signRawJwt({ secret: TEST_JWT_SECRET, claims: { role: 'user', sub: owner.toUpperCase() } });
    const res = await server.gql('{ loras { loras { id } } loraQuota { userId } }', {}, { token: upper });
    expect(res.body).toEqual({ data: { loras: { loras: [{ id: lora.id }] }, loraQuota: { userId: owner } } });
  });

  it('a token signed by hand with the test secret and the documented claims is accepted (the claim shape is right)', async () => {
    const machineId = `m-${randomUUID()}`;
    const token = await signRawJwt({ secret: TEST_JWT_SECRET, claims: { role: 'machine', sub: 'ignored', machine_id: machineId } });
    const res = await server.gql('mutation($i: CacheStatsInput!) { reportCacheStats(input: $i) }', { i: STATS_INPUT }, { token });
    expect(res.body).toEqual({ data: { reportCacheStats: true } });
    expect(await server.app.db.machine_cache_report.count({ where: { machine_id: machineId } })).toBe(1);
  });
});
