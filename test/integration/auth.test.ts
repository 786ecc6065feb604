import { createHash, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { LoraView } from '../../server/domain/lora.ts';
import { azuriteConnectionString } from '../../server/embedded/azurite.ts';
import { type CorruptingProxy, startCorruptingProxy } from '../testkit/corrupting-proxy.ts';
import { decodePayload, GRANT_AUDIENCE, signGrant, signRawJwt, unsignedJwt, withPayload } from '../testkit/jwt.ts';
import { postMultipart } from '../testkit/multipart.ts';
import { smallSd15Lora } from '../testkit/safetensors.ts';
import { eventually, newUserId, seedLora } from '../testkit/seed.ts';
import { type GqlResponse, startTestServer, TEST_JWT_SECRET, type TestServer } from '../testkit/server.ts';

/**
 * Authentication, roles and isolation over real HTTP (API.md "Roles", THREATS.md rows 9, 10, 15):
 * a real server per describe block, real PostgreSQL and Azurite, real JWTs.
 */

const OTHER_SECRET = 'not-the-server-secret-not-the-server-secret-42';
const DEFAULT_MAX_LORA_COUNT = 100; // QUOTA_DEFAULT_MAX_COUNT's default (server/config.ts)
const GRANT_MAX_TTL_SECONDS = 24 * 3600; // GRANT_MAX_TTL_SECONDS's default
const SAS_TTL_SECONDS = 900; // SAS_TTL_SECONDS's default
const CSRF_HEADER: Record<string, string> = { 'x-graphql-yoga-csrf': '1' };
const CSRF_HEADERS: Record<string, string>[] = [{ 'x-graphql-yoga-csrf': '1' }, { 'apollo-require-preflight': 'true' }];

type Res = GqlResponse<Record<string, any>>;

function codes(res: Res): unknown[] {
  return (res.body.errors ?? []).map((e) => e.extensions?.code);
}

/** A thrown GraphQL error with exactly this code, and no data at all. */
function expectRefused(res: Res, code: string): void {
  expect(res.body.data ?? null, JSON.stringify(res.body)).toBeNull();
  expect(codes(res), JSON.stringify(res.body)).toEqual([code]);
}

/** Refused before execution: a 4xx or a GraphQL error, never data. */
function expectRejectedBeforeExecution(res: Res): void {
  expect(res.body.data ?? null, JSON.stringify(res.body)).toBeNull();
  expect(res.body.errors?.length ?? 0, JSON.stringify(res.body)).toBeGreaterThan(0);
  expect(res.status === 200 || (res.status >= 400 && res.status < 500), `status ${res.status}`).toBe(true);
}

function sha256(bytes: Buffer | Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** Replaces the id in string values (loraId, "LoRA with ID <id> not found…") so responses can be compared. */
function withoutId(body: unknown, id: string): unknown {
  const json = JSON.stringify(body, (_key, value: unknown) => {
    if (typeof value !== 'string') return value;
    if (value === id) return '<ID>';
    return value.split(`ID ${id} not found`).join('ID <ID> not found');
  });
  return JSON.parse(json);
}

async function postRaw(url: string, init: RequestInit): Promise<{ status: number; text: string; json: any }> {
  const res = await fetch(url, init);
  const text = await res.text();
  let json: any;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, text, json };
}

async function mintGrant(
  server: TestServer,
  userId: string,
  ttlSeconds?: number,
  jobId = `job-${randomUUID().slice(0, 8)}`,
): Promise<string> {
  const res = await server.gql(
    'mutation($u: ID!, $j: String!, $t: Int) { createJobGrant(userId: $u, jobId: $j, ttlSeconds: $t) { ... on JobGrant { token userId jobId expiresAt } } }',
    { u: userId, j: jobId, t: ttlSeconds ?? 3600 },
    { token: await server.tokens.service() },
  );
  const grant = res.body.data?.createJobGrant;
  if (!grant?.token) throw new Error(`createJobGrant failed: ${JSON.stringify(res.body)}`);
  return grant.token as string;
}

async function quotaRow(server: TestServer, userId: string) {
  return server.app.db.user_lora_quota.findUnique({ where: { user_id: userId } });
}

async function loraRow(server: TestServer, id: string) {
  return server.app.db.lora.findUniqueOrThrow({ where: { file_id: BigInt(id) } });
}

const LORA_RESULT = `__typename
  ... on Lora { id name tags status updatedAt usageCount }
  ... on NotFoundError { code message loraId }`;

const Q_LORA = `query($id: ID!) { lora(id: $id) { ${LORA_RESULT} } }`;
const M_UPDATE = `mutation($id: ID!, $name: String, $tags: [String!], $metadata: JSON) {
  updateLora(id: $id, name: $name, tags: $tags, metadata: $metadata) { ${LORA_RESULT} ... on ValidationError { code message } } }`;
const M_DELETE = `mutation($id: ID!) { deleteLora(id: $id) {
  __typename ... on DeleteLoraSuccess { loraId quota { loraCount usedStorageBytes } } ... on NotFoundError { code message loraId } } }`;
const Q_DOWNLOAD = `query($id: ID!, $grant: String!) { loraDownload(id: $id, grant: $grant) {
  __typename
  ... on LoraDownload { url loraId userId sha256 sizeBytes fileName etag expiresAt sharedName }
  ... on NotFoundError { code message notFoundId: loraId }
  ... on InvalidGrantError { code message reason } } }`;
const M_USAGE = `mutation($grant: String!, $ids: [ID!]!) { recordLoraUsage(grant: $grant, loraIds: $ids, workflowId: "wf-1", workflowName: "Workflow") {
  __typename ... on RecordLoraUsageSuccess { recorded } ... on InvalidGrantError { code reason } ... on ValidationError { code } } }`;
const M_SET_QUOTA = 'mutation($u: ID!, $n: Int) { setUserLoraQuota(userId: $u, maxLoraCount: $n) { userId maxLoraCount } }';
const STATS_INPUT = {
  totalLoraCacheBytes: 3_000_000_000,
  maxLoraCacheBytes: 6_000_000_000,
  userLoraCount: 3,
  sharedLoraCount: 2,
  cacheHitRate24h: 0.5,
  evictions24h: 1,
  oldestLoraAgeDays: 2.5,
};

// ---------------------------------------------------------------------------------------------
// 1. Roles: every operation × every role
// ---------------------------------------------------------------------------------------------

type Role = 'anonymous' | 'user' | 'admin' | 'machine' | 'service';
const ROLES: Role[] = ['anonymous', 'user', 'admin', 'machine', 'service'];

interface Fixture {
  owner: string;
  lora: LoraView;
  machineId: string;
  sharedName: string;
  server: TestServer;
  grant(): Promise<string>;
}

interface OperationCase {
  op: string;
  allowed: Role[];
  document: string;
  variables(fx: Fixture): Promise<Record<string, unknown>> | Record<string, unknown>;
  /** What an allowed role gets. */
  expectAllowed(data: Record<string, any>, fx: Fixture, role: Role): Promise<void> | void;
  /** After a refusal: nothing changed. */
  expectUnchanged?(fx: Fixture): Promise<void>;
}

const OPERATIONS: OperationCase[] = [
  {
    op: 'loras',
    allowed: ['user', 'admin'],
    document: 'query($u: ID) { loras(userId: $u) { total loras { id name } } }',
    variables: (fx) => ({ u: fx.owner }),
    expectAllowed: (data, fx) => {
      expect(data.loras).toEqual({ total: 1, loras: [{ id: fx.lora.id, name: fx.lora.name }] });
    },
  },
  {
    op: 'lora',
    allowed: ['user', 'admin'],
    document: 'query($id: ID!) { lora(id: $id) { __typename ... on Lora { id name } } }',
    variables: (fx) => ({ id: fx.lora.id }),
    expectAllowed: (data, fx) => {
      expect(data.lora).toEqual({ __typename: 'Lora', id: fx.lora.id, name: fx.lora.name });
    },
  },
  {
    op: 'updateLora',
    allowed: ['user', 'admin'],
    document: 'mutation($id: ID!) { updateLora(id: $id, name: "renamed", tags: ["changed"]) { __typename ... on Lora { id name tags } } }',
    variables: (fx) => ({ id: fx.lora.id }),
    expectAllowed: async (data, fx) => {
      expect(data.updateLora).toEqual({ __typename: 'Lora', id: fx.lora.id, name: 'renamed', tags: ['changed'] });
      expect((await loraRow(fx.server, fx.lora.id)).name).toBe('renamed');
    },
    expectUnchanged: async (fx) => {
      const row = await loraRow(fx.server, fx.lora.id);
      expect(row.name).toBe(fx.lora.name);
      expect(row.updated_at.getTime()).toBe(fx.lora.updatedAt.getTime());
    },
  },
  {
    op: 'deleteLora',
    allowed: ['user', 'admin'],
    document: 'mutation($id: ID!) { deleteLora(id: $id) { __typename ... on DeleteLoraSuccess { loraId quota { userId loraCount } } } }',
    variables: (fx) => ({ id: fx.lora.id }),
    expectAllowed: async (data, fx) => {
      expect(data.deleteLora).toEqual({ __typename: 'DeleteLoraSuccess', loraId: fx.lora.id, quota: { userId: fx.owner, loraCount: 0 } });
      expect((await loraRow(fx.server, fx.lora.id)).status).toBe('DELETED');
    },
    expectUnchanged: async (fx) => {
      expect((await loraRow(fx.server, fx.lora.id)).status).toBe('READY');
      expect((await quotaRow(fx.server, fx.owner))?.lora_count).toBe(1);
    },
  },
  {
    op: 'loraQuota',
    allowed: ['user', 'admin'],
    document: 'query($u: ID) { loraQuota(userId: $u) { userId loraCount usedStorageBytes maxLoraCount } }',
    variables: (fx) => ({ u: fx.owner }),
    expectAllowed: (data, fx) => {
      expect(data.loraQuota).toEqual({
        userId: fx.owner,
        loraCount: 1,
        usedStorageBytes: fx.lora.sizeBytes,
        maxLoraCount: DEFAULT_MAX_LORA_COUNT,
      });
    },
  },
  {
    op: 'setUserLoraQuota',
    allowed: ['admin'],
    document: M_SET_QUOTA,
    variables: (fx) => ({ u: fx.owner, n: 7 }),
    expectAllowed: async (data, fx) => {
      expect(data.setUserLoraQuota).toEqual({ userId: fx.owner, maxLoraCount: 7 });
      expect((await quotaRow(fx.server, fx.owner))?.max_lora_count).toBe(7);
    },
    expectUnchanged: async (fx) => {
      expect((await quotaRow(fx.server, fx.owner))?.max_lora_count ?? null).toBeNull();
    },
  },
  {
    op: 'loraCacheStats',
    allowed: ['admin'],
    document: 'query($m: String) { loraCacheStats(machineId: $m) { machineId userLoraCount totalLoraCacheBytes } }',
    variables: (fx) => ({ m: fx.machineId }),
    expectAllowed: (data, fx) => {
      expect(data.loraCacheStats).toEqual([{ machineId: fx.machineId, userLoraCount: 3, totalLoraCacheBytes: 3_000_000_000 }]);
    },
  },
  {
    op: 'createJobGrant',
    allowed: ['service', 'admin'],
    document: 'mutation($u: ID!) { createJobGrant(userId: $u, jobId: "matrix-job") { ... on JobGrant { userId jobId token } } }',
    variables: (fx) => ({ u: fx.owner }),
    expectAllowed: (data, fx) => {
      expect(data.createJobGrant).toMatchObject({ userId: fx.owner, jobId: 'matrix-job' });
      const claims = decodePayload(data.createJobGrant.token);
      expect(claims).toMatchObject({ sub: fx.owner, job_id: 'matrix-job', aud: GRANT_AUDIENCE });
    },
  },
  {
    op: 'loraDownload',
    allowed: ['machine', 'admin'],
    document: Q_DOWNLOAD,
    variables: async (fx) => ({ id: fx.lora.id, grant: await fx.grant() }),
    expectAllowed: (data, fx) => {
      expect(data.loraDownload).toMatchObject({ __typename: 'LoraDownload', loraId: fx.lora.id, userId: fx.owner, sha256: fx.lora.sha256 });
    },
  },
  {
    op: 'sharedLoraDownload',
    allowed: ['machine', 'admin'],
    document: 'query($n: String!) { sharedLoraDownload(name: $n) { __typename ... on LoraDownload { sharedName loraId userId url } } }',
    variables: (fx) => ({ n: fx.sharedName }),
    expectAllowed: (data, fx) => {
      expect(data.sharedLoraDownload).toMatchObject({ __typename: 'LoraDownload', sharedName: fx.sharedName, loraId: null, userId: null });
    },
  },
  {
    op: 'recordLoraUsage',
    allowed: ['machine'],
    document: M_USAGE,
    variables: async (fx) => ({ grant: await fx.grant(), ids: [fx.lora.id] }),
    expectAllowed: async (data, fx) => {
      expect(data.recordLoraUsage).toEqual({ __typename: 'RecordLoraUsageSuccess', recorded: 1 });
      expect((await loraRow(fx.server, fx.lora.id)).usage_count).toBe(1);
    },
    expectUnchanged: async (fx) => {
      expect((await loraRow(fx.server, fx.lora.id)).usage_count).toBe(0);
    },
  },
  {
    op: 'reportCacheStats',
    allowed: ['machine'],
    document: 'mutation($i: CacheStatsInput!) { reportCacheStats(input: $i) }',
    variables: () => ({ i: { ...STATS_INPUT, userLoraCount: 41 } }),
    expectAllowed: async (data, fx) => {
      expect(data.reportCacheStats).toBe(true);
      const rows = await fx.server.app.db.machine_cache_report.findMany({ where: { machine_id: fx.machineId, user_lora_count: 41 } });
      expect(rows).toHaveLength(1);
    },
    expectUnchanged: async (fx) => {
      const rows = await fx.server.app.db.machine_cache_report.findMany({ where: { machine_id: fx.machineId, user_lora_count: 41 } });
      expect(rows).toHaveLength(0);
    },
  },
  {
    op: 'lorasStillValid',
    allowed: ['machine'],
    document: 'query($l: [CachedLoraInput!]!) { lorasStillValid(loras: $l) }',
    variables: (fx) => ({ l: [{ id: fx.lora.id, sha256: fx.lora.sha256 }] }),
    expectAllowed: (data, fx) => {
      expect(data.lorasStillValid).toEqual([fx.lora.id]);
    },
  },
  {
    op: 'reportCacheEvent',
    allowed: ['machine'],
    document: 'mutation($i: CacheEventInput!) { reportCacheEvent(input: $i) { __typename ... on CacheEvent { type machineId loraId } } }',
    variables: (fx) => ({ i: { type: 'DOWNLOADED', loraId: fx.lora.id } }),
    expectAllowed: (data, fx) => {
      expect(data.reportCacheEvent).toEqual({ __typename: 'CacheEvent', type: 'DOWNLOADED', machineId: fx.machineId, loraId: fx.lora.id });
    },
  },
];

describe('roles: every operation × every role', () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer();
  });
  afterAll(() => server?.stop());

  /** A fresh owner with one LoRA, a machine that has reported once, and a shared-library file. */
  async function fixture(): Promise<Fixture> {
    const owner = newUserId();
    const lora = await seedLora(server.app, owner, { name: `matrix-${randomUUID().slice(0, 8)}`, tags: ['alpha'] });
    const machineId = `machine-${randomUUID()}`;
    const reported = await server.gql(
      'mutation($i: CacheStatsInput!) { reportCacheStats(input: $i) }',
      { i: STATS_INPUT },
      { token: await server.tokens.machine(machineId) },
    );
    expect(reported.body).toEqual({ data: { reportCacheStats: true } });
    const sharedName = `matrix/${randomUUID()}.safetensors`;
    await server.app.blobs.putShared(sharedName, smallSd15Lora());
    return { owner, lora, machineId, sharedName, server, grant: () => mintGrant(server, owner) };
  }

  async function tokenFor(role: Role, fx: Fixture): Promise<string | null> {
    switch (role) {
      case 'anonymous':
        return null;
      case 'user':
        return server.tokens.user(fx.owner);
      case 'admin':
        return server.tokens.admin();
      case 'machine':
        return server.tokens.machine(fx.machineId);
      case 'service':
        return server.tokens.service();
    }
  }

  const cases = OPERATIONS.flatMap((operation) =>
    ROLES.map((role) => ({
      operation,
      role,
      outcome: operation.allowed.includes(role) ? 'allowed' : role === 'anonymous' ? 'UNAUTHENTICATED' : 'FORBIDDEN',
    })),
  );

  it.each(cases)('$operation.op as $role → $outcome', async ({ operation, role, outcome }) => {
    const fx = await fixture();
    const res = await server.gql(operation.document, await operation.variables(fx), { token: await tokenFor(role, fx) });
    if (outcome === 'allowed') {
      expect(res.body.errors, JSON.stringify(res.body.errors)).toBeUndefined();
      expect(res.status).toBe(200);
      await operation.expectAllowed(res.body.data ?? {}, fx, role);
    } else {
      expectRefused(res, outcome);
      await operation.expectUnchanged?.(fx);
    }
  });

  it('the table covers every root field of the schema', async () => {
    const res = await server.gql(
      '{ q: __type(name: "Query") { fields { name } } m: __type(name: "Mutation") { fields { name } } }',
      {},
      { token: await server.tokens.admin() },
    );
    const data = res.body.data ?? {};
    const fields = [...(data.q?.fields ?? []), ...(data.m?.fields ?? [])].map((f: { name: string }) => f.name);
    expect(fields.length).toBeGreaterThan(0);
    // uploadLora needs a multipart request (checked by the next test); subscriptions are in events.test.ts
    expect(new Set(fields)).toEqual(new Set([...OPERATIONS.map((o) => o.op), 'uploadLora']));
  });

  it('uploadLora: users only (admin, machine, service FORBIDDEN; anonymous UNAUTHENTICATED); nothing stored', async () => {
    const fx = await fixture();
    for (const role of ROLES) {
      const token = await tokenFor(role, fx);
      const res = await postMultipart({ url: server.graphqlUrl, token, file: smallSd15Lora(), variables: { name: `by-${role}` } });
      if (role === 'user') {
        expect(res.body.data.uploadLora.__typename, res.text).toBe('UploadLoraSuccess');
      } else {
        expect(res.body.data ?? null, res.text).toBeNull();
        expect(res.body.errors?.[0]?.extensions?.code).toBe(role === 'anonymous' ? 'UNAUTHENTICATED' : 'FORBIDDEN');
        expect(await server.app.db.lora.count({ where: { name: `by-${role}` } })).toBe(0);
      }
    }
  });

  it('a user reads their own quota without userId; an admin must name the user (BAD_USER_INPUT)', async () => {
    const fx = await fixture();
    const own = await server.gql('{ loraQuota { userId loraCount } }', {}, { token: await server.tokens.user(fx.owner) });
    expect(own.body).toEqual({ data: { loraQuota: { userId: fx.owner, loraCount: 1 } } });
    expectRefused(await server.gql('{ loraQuota { userId } }', {}, { token: await server.tokens.admin() }), 'BAD_USER_INPUT');
  });

  it('Lora.userId is for admins only: a user gets FORBIDDEN on that field, an admin sees the owner', async () => {
    const fx = await fixture();
    const q = 'query($id: ID!) { lora(id: $id) { ... on Lora { id userId } } }';
    const asUser = await server.gql(q, { id: fx.lora.id }, { token: await server.tokens.user(fx.owner) });
    expect(asUser.body.data?.lora).toEqual({ id: fx.lora.id, userId: null });
    expect(asUser.body.errors?.map((e) => [e.extensions?.code, e.path])).toEqual([['FORBIDDEN', ['lora', 'userId']]]);
    const asAdmin = await server.gql(q, { id: fx.lora.id }, { token: await server.tokens.admin() });
    expect(asAdmin.body).toEqual({ data: { lora: { id: fx.lora.id, userId: fx.owner } } });
  });

  it("an admin lists everyone's LoRAs without userId, a user only their own", async () => {
    const a = await fixture();
    const b = await fixture();
    const q = 'query($s: String) { loras(search: $s, limit: 200) { loras { id } } }';
    const prefix = 'matrix-';
    const admin = await server.gql(q, { s: prefix }, { token: await server.tokens.admin() });
    const adminIds = admin.body.data?.loras.loras.map((l: { id: string }) => l.id);
    expect(adminIds).toEqual(expect.arrayContaining([a.lora.id, b.lora.id]));
    const user = await server.gql(q, { s: prefix }, { token: await server.tokens.user(a.owner) });
    expect(user.body.data?.loras.loras).toEqual([{ id: a.lora.id }]);
  });

  it("a machine's reportCacheStats is filed under the machine id of its own token", async () => {
    const m1 = `machine-${randomUUID()}`;
    const m2 = `machine-${randomUUID()}`;
    const report = 'mutation($i: CacheStatsInput!) { reportCacheStats(input: $i) }';
    expect(
      (await server.gql(report, { i: { ...STATS_INPUT, userLoraCount: 11 } }, { token: await server.tokens.machine(m1) })).body.data,
    ).toEqual({ reportCacheStats: true });
    expect(
      (await server.gql(report, { i: { ...STATS_INPUT, userLoraCount: 22 } }, { token: await server.tokens.machine(m2) })).body.data,
    ).toEqual({ reportCacheStats: true });
    const admin = await server.tokens.admin();
    const stats = async (m: string) =>
      (await server.gql('query($m: String) { loraCacheStats(machineId: $m) { machineId userLoraCount } }', { m }, { token: admin })).body
        .data?.loraCacheStats;
    expect(await stats(m1)).toEqual([{ machineId: m1, userLoraCount: 11 }]);
    expect(await stats(m2)).toEqual([{ machineId: m2, userLoraCount: 22 }]);
  });
});

// ---------------------------------------------------------------------------------------------
// 2. Tokens
// ---------------------------------------------------------------------------------------------

describe('bearer tokens', () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer();
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

// ---------------------------------------------------------------------------------------------
// 3. Isolation between users (THREATS row 10, and row 15 for deletes)
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// 4. Job grants (THREATS row 10)
// ---------------------------------------------------------------------------------------------

describe('job grants and machine downloads', () => {
  let server: TestServer;
  let machine: string;
  beforeAll(async () => {
    server = await startTestServer();
    machine = await server.tokens.machine(`grants-${randomUUID()}`);
  });
  afterAll(() => server?.stop());

  async function owners() {
    const a = newUserId();
    const b = newUserId();
    const bytes = smallSd15Lora({ ss_output_name: `grant-${randomUUID()}` });
    const loraA = await seedLora(server.app, a, { bytes });
    const loraB = await seedLora(server.app, b);
    return { a, b, bytes, loraA, loraB };
  }

  it('createJobGrant by the service returns a grant naming the user and job, expiring after ttlSeconds', async () => {
    const userId = newUserId();
    const started = Date.now();
    const res = await server.gql(
      'mutation($u: ID!) { createJobGrant(userId: $u, jobId: "job-42", ttlSeconds: 600) { __typename ... on JobGrant { token userId jobId expiresAt } } }',
      { u: userId },
      { token: await server.tokens.service() },
    );
    const grant = res.body.data?.createJobGrant;
    expect(grant).toMatchObject({ __typename: 'JobGrant', userId, jobId: 'job-42' });
    const expiresAt = new Date(grant.expiresAt).getTime();
    expect(Math.abs(expiresAt - (started + 600_000))).toBeLessThan(5_000);
    const claims = decodePayload(grant.token);
    expect(claims).toMatchObject({
      sub: userId,
      job_id: 'job-42',
      aud: GRANT_AUDIENCE,
      iss: 'lora-vault',
      exp: Math.floor(expiresAt / 1000),
    });
    expect(await server.app.db.audit_log.count({ where: { action: 'grant.create', user_id: userId } })).toBe(1);
  });

  it('createJobGrant refuses bad arguments with BAD_USER_INPUT and mints nothing', async () => {
    const service = await server.tokens.service();
    const userId = newUserId();
    const cases: Record<string, unknown>[] = [
      { u: userId, j: 'job', t: GRANT_MAX_TTL_SECONDS + 1 },
      { u: userId, j: 'job', t: 10 * 365 * 24 * 3600 },
      { u: userId, j: 'job', t: 0 },
      { u: userId, j: 'job', t: -5 },
      { u: 'not-a-uuid', j: 'job', t: 60 },
      { u: '', j: 'job', t: 60 },
      { u: `${userId}x`, j: 'job', t: 60 },
      { u: userId, j: '   ', t: 60 },
      { u: userId, j: 'j'.repeat(201), t: 60 },
    ];
    for (const variables of cases) {
      const res = await server.gql(
        'mutation($u: ID!, $j: String!, $t: Int) { createJobGrant(userId: $u, jobId: $j, ttlSeconds: $t) { ... on JobGrant { token } } }',
        variables,
        { token: service },
      );
      expectRefused(res, 'BAD_USER_INPUT');
    }
    expect(await server.app.db.audit_log.count({ where: { action: 'grant.create', user_id: userId } })).toBe(0);
    // The maximum itself is fine.
    const max = await server.gql(
      'mutation($u: ID!) { createJobGrant(userId: $u, jobId: "job", ttlSeconds: 86400) { ... on JobGrant { userId } } }',
      { u: userId },
      { token: service },
    );
    expect(max.body).toEqual({ data: { createJobGrant: { userId } } });
  });

  it('users and machines cannot mint grants (FORBIDDEN), even for themselves', async () => {
    const userId = newUserId();
    const q = 'mutation($u: ID!) { createJobGrant(userId: $u, jobId: "job") { ... on JobGrant { token } } }';
    expectRefused(await server.gql(q, { u: userId }, { token: await server.tokens.user(userId) }), 'FORBIDDEN');
    expectRefused(await server.gql(q, { u: userId }, { token: machine }), 'FORBIDDEN');
    expect(await server.app.db.audit_log.count({ where: { action: 'grant.create', user_id: userId } })).toBe(0);
  });

  it('loraDownload with a missing, garbage or non-grant token → INVALID_GRANT, the same whether the id exists or not', async () => {
    const { a, loraA } = await owners();
    const missingId = (BigInt(loraA.id) + 1_000_000_000n).toString();
    const bad: [string, string][] = [
      ['', 'missing'],
      ['garbage', 'malformed'],
      ['a.b.c', 'malformed'],
      [await server.tokens.user(a), 'malformed'], // a bearer token is not a grant (no audience)
      [await signGrant({ secret: TEST_JWT_SECRET, userId: a, audience: 'lora-vault' }), 'malformed'],
      [await signGrant({ secret: TEST_JWT_SECRET, userId: a, issuer: 'elsewhere' }), 'malformed'],
      [await signGrant({ secret: TEST_JWT_SECRET, userId: 'not-a-uuid' }), 'malformed'],
      [unsignedJwt({ sub: a, job_id: 'j', aud: GRANT_AUDIENCE }), 'malformed'],
    ];
    for (const [grant, reason] of bad) {
      const forA = await server.gql(Q_DOWNLOAD, { id: loraA.id, grant }, { token: machine });
      expect(forA.body.data?.loraDownload, grant).toMatchObject({ __typename: 'InvalidGrantError', code: 'INVALID_GRANT', reason });
      expect(forA.body.data?.loraDownload.url).toBeUndefined();
      const forMissing = await server.gql(Q_DOWNLOAD, { id: missingId, grant }, { token: machine });
      expect(forMissing.body).toEqual(forA.body);
    }
  });

  it('loraDownload with a grant signed with another secret → INVALID_GRANT', async () => {
    const { a, loraA } = await owners();
    const forged = await signGrant({ secret: OTHER_SECRET, userId: a });
    const res = await server.gql(Q_DOWNLOAD, { id: loraA.id, grant: forged }, { token: machine });
    expect(res.body.data?.loraDownload).toMatchObject({ __typename: 'InvalidGrantError', code: 'INVALID_GRANT', reason: 'bad-signature' });
    // A real grant tampered to name another user fails the same way.
    const { b } = await owners();
    const tampered = withPayload(await mintGrant(server, b), { sub: a });
    const res2 = await server.gql(Q_DOWNLOAD, { id: loraA.id, grant: tampered }, { token: machine });
    expect(res2.body.data?.loraDownload).toMatchObject({ __typename: 'InvalidGrantError', code: 'INVALID_GRANT' });
  });

  it('loraDownload with an expired grant → INVALID_GRANT (minted with ttlSeconds: 1, and signed with a past exp)', async () => {
    const { a, loraA } = await owners();
    const shortLived = await mintGrant(server, a, 1);
    await new Promise((r) => setTimeout(r, 2_500));
    const res = await server.gql(Q_DOWNLOAD, { id: loraA.id, grant: shortLived }, { token: machine });
    expect(res.body.data?.loraDownload).toMatchObject({ __typename: 'InvalidGrantError', code: 'INVALID_GRANT', reason: 'expired' });
    const pastExp = await signGrant({ secret: TEST_JWT_SECRET, userId: a, expiresIn: -3600 });
    const res2 = await server.gql(Q_DOWNLOAD, { id: loraA.id, grant: pastExp }, { token: machine });
    expect(res2.body.data?.loraDownload).toMatchObject({ __typename: 'InvalidGrantError', code: 'INVALID_GRANT', reason: 'expired' });
    expect(res2.body.data?.loraDownload.url).toBeUndefined();
  });

  it("a valid grant for B asking for A's LoRA → LORA_NOT_FOUND, identical to a missing id", async () => {
    const { b, loraA } = await owners();
    const grantB = await mintGrant(server, b);
    const forA = await server.gql(Q_DOWNLOAD, { id: loraA.id, grant: grantB }, { token: machine });
    expect(forA.body).toEqual({
      data: {
        loraDownload: {
          __typename: 'NotFoundError',
          code: 'LORA_NOT_FOUND',
          message: `LoRA with ID ${loraA.id} not found or access denied`,
          notFoundId: loraA.id,
        },
      },
    });
    for (const id of [(BigInt(loraA.id) + 1_000_000_000n).toString(), '0', '-1', 'abc', '99999999999999999999']) {
      const missing = await server.gql(Q_DOWNLOAD, { id, grant: grantB }, { token: machine });
      expect(missing.status).toBe(forA.status);
      expect(withoutId(missing.body, id), id).toEqual(withoutId(forA.body, loraA.id));
    }
    expect(await server.app.db.audit_log.count({ where: { action: 'lora.download-granted', lora_id: BigInt(loraA.id) } })).toBe(0);
  });

  it("a valid grant for A → a read-only URL that serves exactly A's bytes for ~15 minutes, with ranges", async () => {
    const { a, bytes, loraA } = await owners();
    const grant = await mintGrant(server, a);
    const started = Date.now();
    const res = await server.gql(Q_DOWNLOAD, { id: loraA.id, grant }, { token: machine });
    const dl = res.body.data?.loraDownload;
    expect(dl).toMatchObject({
      __typename: 'LoraDownload',
      loraId: loraA.id,
      userId: a,
      sharedName: null,
      fileName: loraA.fileName,
      sizeBytes: bytes.length,
      sha256: sha256(bytes),
    });
    expect(Math.abs(new Date(dl.expiresAt).getTime() - (started + SAS_TTL_SECONDS * 1000))).toBeLessThan(60_000);

    const whole = await fetch(dl.url);
    expect(whole.status).toBe(200);
    const body = Buffer.from(await whole.arrayBuffer());
    expect(body.length).toBe(dl.sizeBytes);
    expect(sha256(body)).toBe(dl.sha256);
    expect(body.equals(bytes)).toBe(true);
    expect(whole.headers.get('etag')).toBe(dl.etag);

    const ranged = await fetch(dl.url, { headers: { range: 'bytes=100-1123' } });
    expect(ranged.status).toBe(206);
    expect(ranged.headers.get('content-range')).toBe(`bytes 100-1123/${bytes.length}`);
    expect(Buffer.from(await ranged.arrayBuffer()).equals(bytes.subarray(100, 1124))).toBe(true);

    // Read-only: the same signature cannot overwrite or delete the blob.
    const put = await fetch(dl.url, { method: 'PUT', headers: { 'x-ms-blob-type': 'BlockBlob' }, body: 'overwritten' });
    expect(put.status).toBe(403);
    const del = await fetch(dl.url, { method: 'DELETE' });
    expect(del.status).toBe(403);
    const again = Buffer.from(await (await fetch(dl.url)).arrayBuffer());
    expect(again.equals(bytes)).toBe(true);
    expect(await server.app.db.audit_log.count({ where: { action: 'lora.download-granted', lora_id: BigInt(loraA.id) } })).toBe(1);
  });

  it("A's grant does not reach A's deleted LoRA (LORA_NOT_FOUND)", async () => {
    const { a, loraA } = await owners();
    const del = await server.gql(M_DELETE, { id: loraA.id }, { token: await server.tokens.user(a) });
    expect(del.body.data?.deleteLora.__typename).toBe('DeleteLoraSuccess');
    const res = await server.gql(Q_DOWNLOAD, { id: loraA.id, grant: await mintGrant(server, a) }, { token: machine });
    expect(res.body.data?.loraDownload).toMatchObject({ __typename: 'NotFoundError', code: 'LORA_NOT_FOUND', notFoundId: loraA.id });
  });

  it('user and service tokens cannot call loraDownload, even with a valid grant (FORBIDDEN)', async () => {
    const { a, loraA } = await owners();
    const grant = await mintGrant(server, a);
    expectRefused(await server.gql(Q_DOWNLOAD, { id: loraA.id, grant }, { token: await server.tokens.user(a) }), 'FORBIDDEN');
    expectRefused(await server.gql(Q_DOWNLOAD, { id: loraA.id, grant }, { token: await server.tokens.service() }), 'FORBIDDEN');
    expectRefused(await server.gql(Q_DOWNLOAD, { id: loraA.id, grant }, { token: null }), 'UNAUTHENTICATED');
  });

  it("recordLoraUsage with B's grant counts 0 for A's LoRA; A's grant counts it once", async () => {
    const { a, b, loraA, loraB } = await owners();
    const grantB = await mintGrant(server, b);
    const forA = await server.gql(M_USAGE, { grant: grantB, ids: [loraA.id] }, { token: machine });
    expect(forA.body.data?.recordLoraUsage).toEqual({ __typename: 'RecordLoraUsageSuccess', recorded: 0 });
    const mixed = await server.gql(M_USAGE, { grant: grantB, ids: [loraA.id, loraB.id, 'abc', '0'] }, { token: machine });
    expect(mixed.body.data?.recordLoraUsage).toEqual({ __typename: 'RecordLoraUsageSuccess', recorded: 1 });
    const lookA = async () =>
      (
        await server.gql(
          'query($id: ID!) { lora(id: $id) { ... on Lora { usageCount lastUsedAt workflowsUsing { id useCount } } } }',
          { id: loraA.id },
          { token: await server.tokens.user(a) },
        )
      ).body.data?.lora;
    expect(await lookA()).toEqual({ usageCount: 0, lastUsedAt: null, workflowsUsing: [] });
    const forged = await server.gql(
      M_USAGE,
      { grant: await signGrant({ secret: OTHER_SECRET, userId: a }), ids: [loraA.id] },
      { token: machine },
    );
    expect(forged.body.data?.recordLoraUsage).toEqual({ __typename: 'InvalidGrantError', code: 'INVALID_GRANT', reason: 'bad-signature' });
    expect(await lookA()).toEqual({ usageCount: 0, lastUsedAt: null, workflowsUsing: [] });
    // Control: the owner's grant counts.
    const own = await server.gql(M_USAGE, { grant: await mintGrant(server, a), ids: [loraA.id] }, { token: machine });
    expect(own.body.data?.recordLoraUsage).toEqual({ __typename: 'RecordLoraUsageSuccess', recorded: 1 });
    expect(await lookA()).toMatchObject({ usageCount: 1, workflowsUsing: [{ id: 'wf-1', useCount: 1 }] });
  });
});

// ---------------------------------------------------------------------------------------------
// 5. Request limits (THREATS row 9), in the default (test) environment
// ---------------------------------------------------------------------------------------------

const nestedInlineFragments = (field: string, type: string, n: number) =>
  `${'... on '.concat(type, ' { ').repeat(n)}${field}${' }'.repeat(n)}`;

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

// ---------------------------------------------------------------------------------------------
// 5b. Introspection, suggestions and masking: test/development vs production
// ---------------------------------------------------------------------------------------------

const INTROSPECTION = '{ __schema { queryType { name } mutationType { name } } }';

/**
 * A failure no resolver expects: storage (through a fault proxy in front of Azurite) refuses
 * with 403 the properties request behind a shared-LoRA download URL.
 */
interface ProxiedServer {
  server: TestServer;
  proxy: CorruptingProxy;
}
async function startServerBehindProxy(env: Record<string, string> = {}): Promise<ProxiedServer> {
  const azuritePort = Number(/BlobEndpoint=http:\/\/127\.0\.0\.1:(\d+)/.exec(inject('storageConnectionString'))?.[1]);
  const proxy = await startCorruptingProxy(azuritePort);
  const server = await startTestServer({ ...env, AZURE_STORAGE_CONNECTION_STRING: azuriteConnectionString(proxy.port) });
  return { server, proxy };
}
async function provokeUnexpectedFailure({ server, proxy }: ProxiedServer): Promise<Res> {
  const name = `broken/${randomUUID()}.safetensors`;
  proxy.add({ fault: { kind: 'status', status: 403 }, times: 10, match: (r) => r.url.includes(name) });
  return server.gql(
    'query($n: String!) { sharedLoraDownload(name: $n) { __typename } }',
    { n: name },
    { token: await server.tokens.machine() },
  );
}
const STACK_TRACE = /\n\s+at |\bat [\w$.<>]+ \(|(?:file:\/\/|\/work\/|node_modules)|\.ts:\d+|"stack"/;

describe('introspection and suggestions in development (NODE_ENV=test)', () => {
  let server: TestServer;
  let proxied: ProxiedServer;
  beforeAll(async () => {
    proxied = await startServerBehindProxy();
    server = proxied.server;
  });
  afterAll(async () => {
    await server?.stop();
    await proxied?.proxy.close();
  });

  it('__schema introspection works for a user (and anonymously)', async () => {
    for (const token of [await server.tokens.user(newUserId()), null]) {
      const res = await server.gql(INTROSPECTION, {}, { token });
      expect(res.body).toEqual({ data: { __schema: { queryType: { name: 'Query' }, mutationType: { name: 'Mutation' } } } });
    }
  });

  it('the provoked failure is an unexpected one: development shows its real message (the control for masking)', async () => {
    const res = await provokeUnexpectedFailure(proxied);
    expect(res.body.data ?? null).toBeNull();
    expect(res.body.errors?.[0]?.extensions?.code).toBe('INTERNAL_SERVER_ERROR');
    expect(res.body.errors?.[0]?.message).not.toBe('Unexpected error.');
    expect(res.body.errors?.[0]?.message).toMatch(/403|ServerBusy|injected|status code/i);
  });

  it('field suggestions appear (the control for production)', async () => {
    const res = await server.gql('{ loraQouta { loraCount } }', {}, { token: await server.tokens.user(newUserId()) });
    expect(res.body.errors?.[0]?.message).toContain('Did you mean "loraQuota"?');
  });
});

describe('production (NODE_ENV=production)', () => {
  let server: TestServer;
  let proxied: ProxiedServer;
  beforeAll(async () => {
    proxied = await startServerBehindProxy({ NODE_ENV: 'production' });
    server = proxied.server;
  });
  afterAll(async () => {
    await server?.stop();
    await proxied?.proxy.close();
  });

  it('the server really runs in production mode', () => {
    expect(server.app.config.production).toBe(true);
  });

  it('introspection is refused for users, machines, services and anonymous callers, with no data', async () => {
    const tokens = [await server.tokens.user(newUserId()), await server.tokens.machine(), await server.tokens.service(), null];
    for (const token of tokens) {
      for (const query of [
        INTROSPECTION,
        '{ __type(name: "Lora") { name fields { name } } }',
        '{ loraQuota { __typename } __schema { types { name } } }',
      ]) {
        const res = await server.gql(query, {}, { token });
        expectRejectedBeforeExecution(res);
        expect(res.body.errors?.[0]?.message, JSON.stringify(res.body)).toMatch(/introspection/i);
      }
    }
  });

  it('introspection is allowed for an admin token', async () => {
    const res = await server.gql(INTROSPECTION, {}, { token: await server.tokens.admin() });
    expect(res.body).toEqual({ data: { __schema: { queryType: { name: 'Query' }, mutationType: { name: 'Mutation' } } } });
  });

  it("an admin's accepted introspection is not reused for a user's identical query, nor the other way round", async () => {
    const admin = await server.tokens.admin();
    const user = await server.tokens.user(newUserId());
    const first = `{ __schema { subscriptionType { name } } } # ${randomUUID()}`;
    expect((await server.gql(first, {}, { token: admin })).body.data).toBeTruthy();
    expectRejectedBeforeExecution(await server.gql(first, {}, { token: user }));
    const second = `{ __schema { subscriptionType { name } } } # ${randomUUID()}`;
    expectRejectedBeforeExecution(await server.gql(second, {}, { token: user }));
    expect((await server.gql(second, {}, { token: admin })).body.data).toBeTruthy();
  });

  it('a misspelled field, argument or type gets no "Did you mean" suggestion', async () => {
    const token = await server.tokens.user(newUserId());
    const cases: [string, string][] = [
      ['{ loraQouta { loraCount } }', '"loraQuota"'],
      ['{ loraQuota { loraCont } }', '"loraCount"'],
      ['{ loras(limt: 5) { total } }', '"limit"'],
      ['{ loraQuota { ... on LoraQuot { loraCount } } }', '"LoraQuota"'],
    ];
    for (const [query, hidden] of cases) {
      const res = await server.gql(query, {}, { token });
      expectRejectedBeforeExecution(res);
      const text = JSON.stringify(res.body.errors);
      expect(text, query).not.toMatch(/did you mean/i);
      expect(text, query).not.toContain(hidden.replaceAll('"', '\\"'));
    }
  });

  it('a misspelled enum value gets no suggestion either (no schema names leak to non-admins)', async () => {
    const token = await server.tokens.user(newUserId());
    const res = await server.gql('{ loras(sort: NAEM) { total } }', {}, { token });
    expectRejectedBeforeExecution(res);
    expect(JSON.stringify(res.body)).not.toMatch(/did you mean/i);
  });

  it('a bad variable value is a client error (BAD_USER_INPUT) without suggestions, not an INTERNAL_SERVER_ERROR', async () => {
    const token = await server.tokens.user(newUserId());
    const res = await server.gql('query($s: LoraSort) { loras(sort: $s) { total } }', { s: 'NAEM' }, { token });
    expectRejectedBeforeExecution(res);
    expect(codes(res)).toEqual(['BAD_USER_INPUT']);
    expect(JSON.stringify(res.body)).not.toMatch(/did you mean/i);
  });

  it('an unexpected failure is masked: a generic message, INTERNAL_SERVER_ERROR, no stack or internals', async () => {
    const res = await provokeUnexpectedFailure(proxied);
    expect(res.body.data ?? null).toBeNull();
    expect(res.body.errors).toHaveLength(1);
    expect(res.body.errors?.[0]).toMatchObject({ message: 'Unexpected error.', extensions: { code: 'INTERNAL_SERVER_ERROR' } });
    const text = JSON.stringify(res.body);
    expect(text).not.toMatch(STACK_TRACE);
    expect(text).not.toMatch(/prisma|postgres|azure|blob|403|ServerBusy|injected|broken\//i);
  });

  it('no response to any provoked failure carries a stack trace or server paths', async () => {
    const user = await server.tokens.user(newUserId());
    const auth = { authorization: `Bearer ${user}` };
    const json = { 'content-type': 'application/json', ...auth };
    const url = server.graphqlUrl;
    const responses = await Promise.all([
      postRaw(url, {
        method: 'POST',
        headers: json,
        body: JSON.stringify({ query: 'query($s: String) { loras(search: $s) { total } }', variables: { s: 'a\u0000b' } }),
      }),
      postRaw(url, { method: 'POST', headers: json, body: '{"query": "{ loraQuota' }),
      postRaw(url, { method: 'POST', headers: json, body: JSON.stringify({ query: '{ loraQuota { loraCount }' }) }),
      postRaw(url, { method: 'POST', headers: json, body: JSON.stringify({ query: 42 }) }),
      postRaw(url, { method: 'POST', headers: json, body: JSON.stringify({}) }),
      postRaw(url, {
        method: 'POST',
        headers: json,
        body: JSON.stringify({ query: '{ loraQuota { loraCount } }', operationName: 'Nope' }),
      }),
      postRaw(url, {
        method: 'POST',
        headers: json,
        body: JSON.stringify({ query: 'query($n: Int!) { loras(limit: $n) { total } }', variables: { n: 'many' } }),
      }),
      postRaw(url, { method: 'POST', headers: json, body: JSON.stringify({ query: '{ loras(limit: 100000) { total } }' }) }),
      postRaw(url, {
        method: 'POST',
        headers: json,
        body: JSON.stringify({ query: 'query($id: ID!) { lora(id: $id) { __typename } }', variables: { id: { $gt: '' } } }),
      }),
      postRaw(url, {
        method: 'POST',
        headers: json,
        body: JSON.stringify({ query: 'mutation { setUserLoraQuota(userId: "x", maxStorageBytes: -1) { userId } }' }),
      }),
      postRaw(url, { method: 'POST', headers: json, body: JSON.stringify([{ query: '{ __typename }' }]) }),
      postRaw(url, {
        method: 'POST',
        headers: json,
        body: JSON.stringify({ query: `{ loraQuota { ${nestedInlineFragments('loraCount', 'LoraQuota', 20)} } }` }),
      }),
      postRaw(url, { method: 'POST', headers: json, body: JSON.stringify({ query: `{ __typename } #${'x'.repeat(20_001)}` }) }),
      postRaw(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: 'Bearer a.b.c' },
        body: JSON.stringify({ query: '{ __typename }' }),
      }),
      postRaw(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ query: '{ loraQuota { loraCount } }' }),
      }),
      postRaw(url, { method: 'POST', headers: { 'content-type': 'text/plain', ...auth }, body: '{ __typename }' }),
      postRaw(url, {
        method: 'POST',
        headers: { 'content-type': 'multipart/form-data; boundary=xyz', ...auth, ...CSRF_HEADER },
        body: '--xyz\r\nContent-Disposition: form-data; name="operations"\r\n\r\n{bad json\r\n--xyz--\r\n',
      }),
      postRaw(url, { method: 'POST', headers: json, body: `{"query":"{ __typename }","pad":"${'x'.repeat(1_100_000)}"}` }),
      postRaw(`${url}?query=${encodeURIComponent('mutation { setUserLoraQuota(userId: "x") { userId } }')}`, {
        method: 'GET',
        headers: { ...auth, ...CSRF_HEADER },
      }),
      postRaw(`${url}?query=${encodeURIComponent('{ loraQuota { loraCount }')}`, { method: 'GET', headers: { ...auth, ...CSRF_HEADER } }),
      postRaw(url, { method: 'PUT', headers: json, body: JSON.stringify({ query: '{ __typename }' }) }),
    ]);
    for (const res of responses) {
      expect(res.text, res.text.slice(0, 300)).not.toMatch(STACK_TRACE);
      expect(res.status, res.text.slice(0, 300)).toBeLessThan(500);
    }
  });
});

// ---------------------------------------------------------------------------------------------
// 6. CSRF (@graphql-yoga/plugin-csrf-prevention: a request whose content type is missing or one a
// browser may send without preflight — text/plain, multipart/form-data,
// application/x-www-form-urlencoded — must carry x-graphql-yoga-csrf or apollo-require-preflight)
// ---------------------------------------------------------------------------------------------

describe('CSRF prevention', () => {
  let server: TestServer;
  let admin: string;
  beforeAll(async () => {
    server = await startTestServer();
    admin = await server.tokens.admin();
  });
  afterAll(() => server?.stop());

  const getUrl = (query: string) => `${server.graphqlUrl}?query=${encodeURIComponent(query)}`;

  function multipartBody(
    operations: object,
    boundary = `----lv${randomUUID().replaceAll('-', '')}`,
  ): { body: string; contentType: string } {
    const part = (name: string, value: string) => `--${boundary}\r\nContent-Disposition: form-data; name="${name}"\r\n\r\n${value}\r\n`;
    return {
      body: `${part('operations', JSON.stringify(operations))}${part('map', '{}')}--${boundary}--\r\n`,
      contentType: `multipart/form-data; boundary=${boundary}`,
    };
  }

  function expectCsrfRefusal(res: { status: number; text: string }): void {
    expect(res.status).toBe(403);
    expect(res.text).toContain('Required CSRF header(s) not present');
    expect(res.text).not.toContain('"data"');
  }

  it('a GET with a query but no CSRF header is refused with 403', async () => {
    const user = newUserId();
    const res = await postRaw(getUrl('{ loraQuota { userId } }'), {
      headers: { authorization: `Bearer ${await server.tokens.user(user)}` },
    });
    expectCsrfRefusal(res);
  });

  it('a GET with x-graphql-yoga-csrf or apollo-require-preflight is served', async () => {
    const user = newUserId();
    const token = await server.tokens.user(user);
    for (const header of CSRF_HEADERS) {
      const res = await postRaw(getUrl('{ loraQuota { userId } }'), { headers: { authorization: `Bearer ${token}`, ...header } });
      expect(res.status).toBe(200);
      expect(res.json).toEqual({ data: { loraQuota: { userId: user } } });
    }
  });

  it('a mutation over GET is never executed (403 without the header, 405 with it)', async () => {
    const target = newUserId();
    const url = getUrl(`mutation { setUserLoraQuota(userId: "${target}", maxLoraCount: 9) { userId } }`);
    expectCsrfRefusal(await postRaw(url, { headers: { authorization: `Bearer ${admin}` } }));
    const withHeader = await postRaw(url, { headers: { authorization: `Bearer ${admin}`, ...CSRF_HEADER } });
    expect(withHeader.status).toBe(405);
    expect(await quotaRow(server, target)).toBeNull();
  });

  it('a multipart/form-data POST without the header is refused with 403 and not executed', async () => {
    const target = newUserId();
    const operations = { query: `mutation { setUserLoraQuota(userId: "${target}", maxLoraCount: 9) { userId } }` };
    const { body, contentType } = multipartBody(operations);
    expectCsrfRefusal(
      await postRaw(server.graphqlUrl, {
        method: 'POST',
        headers: { 'content-type': contentType, authorization: `Bearer ${admin}` },
        body,
      }),
    );
    const upper = multipartBody(operations);
    expectCsrfRefusal(
      await postRaw(server.graphqlUrl, {
        method: 'POST',
        headers: {
          'content-type': upper.contentType.replace('multipart/form-data', 'Multipart/Form-Data'),
          authorization: `Bearer ${admin}`,
        },
        body: upper.body,
      }),
    );
    const form = new FormData();
    form.set('operations', JSON.stringify(operations));
    form.set('map', '{}');
    expectCsrfRefusal(await postRaw(server.graphqlUrl, { method: 'POST', headers: { authorization: `Bearer ${admin}` }, body: form }));
    expect(await quotaRow(server, target)).toBeNull();
  });

  it('a multipart/form-data POST with the header is not refused for CSRF', async () => {
    const target = newUserId();
    const { body, contentType } = multipartBody({
      query: `mutation { setUserLoraQuota(userId: "${target}", maxLoraCount: 9) { userId } }`,
    });
    for (const header of CSRF_HEADERS) {
      const res = await postRaw(server.graphqlUrl, {
        method: 'POST',
        headers: { 'content-type': contentType, authorization: `Bearer ${admin}`, ...header },
        body,
      });
      expect(res.status, res.text).not.toBe(403);
      expect(res.text).not.toContain('CSRF');
      expect(res.json).toEqual({ data: { setUserLoraQuota: { userId: target } } });
    }
    expect((await quotaRow(server, target))?.max_lora_count).toBe(9);
  });

  it('text/plain, form-urlencoded and content-type-less POSTs need the header; application/json does not', async () => {
    const target = newUserId();
    const payload = JSON.stringify({ query: `mutation { setUserLoraQuota(userId: "${target}", maxLoraCount: 9) { userId } }` });
    const auth = { authorization: `Bearer ${admin}` };
    expectCsrfRefusal(
      await postRaw(server.graphqlUrl, { method: 'POST', headers: { 'content-type': 'text/plain', ...auth }, body: payload }),
    );
    expectCsrfRefusal(
      await postRaw(server.graphqlUrl, { method: 'POST', headers: { 'content-type': 'text/plain;charset=UTF-8', ...auth }, body: payload }),
    );
    expectCsrfRefusal(
      await postRaw(server.graphqlUrl, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', ...auth },
        body: new URLSearchParams({ query: `mutation { setUserLoraQuota(userId: "${target}", maxLoraCount: 9) { userId } }` }).toString(),
      }),
    );
    expectCsrfRefusal(await postRaw(server.graphqlUrl, { method: 'POST', headers: auth, body: new Blob([payload]) }));
    expect(await quotaRow(server, target)).toBeNull();
    // With the header, text/plain is no longer a CSRF matter (Yoga may still not parse it).
    const withHeader = await postRaw(server.graphqlUrl, {
      method: 'POST',
      headers: { 'content-type': 'text/plain', ...auth, ...CSRF_HEADER },
      body: payload,
    });
    expect(withHeader.text).not.toContain('CSRF');
    // application/json always triggers a browser preflight, so it needs no header.
    const jsonRes = await postRaw(server.graphqlUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...auth },
      body: payload,
    });
    expect(jsonRes.status).toBe(200);
    expect(jsonRes.json).toEqual({ data: { setUserLoraQuota: { userId: target } } });
  });
});
