import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LoraView } from '../../server/domain/lora.ts';
import { mintGrant } from '../testkit/grants.ts';
import { expectRefused } from '../testkit/graphql-assertions.ts';
import { M_SET_QUOTA, STATS_INPUT } from '../testkit/graphql-requests.ts';
import { decodePayload, GRANT_AUDIENCE } from '../testkit/jwt.ts';
import { postMultipart } from '../testkit/multipart.ts';
import { loraRow, quotaRow } from '../testkit/rows.ts';
import { smallSd15Lora } from '../testkit/safetensors.ts';
import { newUserId, seedLora } from '../testkit/seed.ts';
import { startTestServer, type TestServer } from '../testkit/server.ts';

/**
 * Roles: every operation × every role (API.md "Roles", enforced by Pothos scope-auth on every field).
 * A real server per describe block over real HTTP, real PostgreSQL and Azurite, real JWTs.
 * The documents are hand-written on purpose: each selects the fields a role must (or must not) see.
 */

const DEFAULT_MAX_LORA_COUNT = 100; // QUOTA_DEFAULT_MAX_COUNT's default (server/config.ts)

const Q_DOWNLOAD = `query($id: ID!, $grant: String!) { loraDownload(id: $id, grant: $grant) {
  __typename
  ... on LoraDownload { url loraId userId sha256 sizeBytes fileName etag expiresAt sharedName }
  ... on NotFoundError { code message notFoundId: loraId }
  ... on InvalidGrantError { code message reason } } }`;
const M_USAGE = `mutation($grant: String!, $ids: [ID!]!) { recordLoraUsage(grant: $grant, loraIds: $ids, workflowId: "wf-1", workflowName: "Workflow") {
  __typename ... on RecordLoraUsageSuccess { recorded } ... on InvalidGrantError { code reason } ... on ValidationError { code } } }`;

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
    op: 'businessMetrics',
    allowed: ['admin'],
    document: '{ businessMetrics { usersWithLoras loraCount } }',
    variables: () => ({}),
    expectAllowed: (data) => {
      expect(data.businessMetrics.loraCount).toBeGreaterThanOrEqual(1);
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
  // Resumable uploads (issue 17): users only; a session id that is not the caller's answers as missing
  {
    op: 'beginLoraUpload',
    allowed: ['user'],
    document:
      'mutation { beginLoraUpload(fileName: "r.safetensors", sizeBytes: 4096) { __typename ... on LoraUploadSession { state fileName } } }',
    variables: () => ({}),
    expectAllowed: (data) => {
      expect(data.beginLoraUpload).toEqual({ __typename: 'LoraUploadSession', state: 'OPEN', fileName: 'r.safetensors' });
    },
    expectUnchanged: async (fx) => {
      expect(await fx.server.app.db.upload_session.count({ where: { user_id: fx.owner } })).toBe(0);
    },
  },
  ...(['loraUploadSession', 'renewLoraUpload', 'abortLoraUpload'] as const).map(
    (op): OperationCase => ({
      op,
      allowed: ['user'],
      document: `${op === 'loraUploadSession' ? 'query' : 'mutation'}($id: ID!) { ${op}(id: $id) { __typename ... on UploadSessionNotFoundError { code } } }`,
      variables: () => ({ id: randomUUID() }),
      expectAllowed: (data) => {
        expect(data[op]).toEqual({ __typename: 'UploadSessionNotFoundError', code: 'UPLOAD_SESSION_NOT_FOUND' });
      },
    }),
  ),
  {
    op: 'completeLoraUpload',
    allowed: ['user'],
    document: 'mutation($id: ID!) { completeLoraUpload(id: $id, blockIds: []) { __typename ... on UploadSessionNotFoundError { code } } }',
    variables: () => ({ id: randomUUID() }),
    expectAllowed: (data) => {
      expect(data.completeLoraUpload).toEqual({ __typename: 'UploadSessionNotFoundError', code: 'UPLOAD_SESSION_NOT_FOUND' });
    },
  },
  {
    op: 'createLoraDownload',
    allowed: ['user', 'admin'],
    document: 'mutation($id: ID!) { createLoraDownload(id: $id) { __typename ... on LoraDownloadLink { loraId fileName } } }',
    variables: (fx) => ({ id: fx.lora.id }),
    expectAllowed: (data, fx) => {
      expect(data.createLoraDownload).toEqual({
        __typename: 'LoraDownloadLink',
        loraId: fx.lora.id,
        fileName: `${fx.lora.name}.safetensors`,
      });
    },
  },
  {
    op: 'deleteUserLoraAccount',
    allowed: ['admin', 'service'],
    document: 'mutation($u: ID!) { deleteUserLoraAccount(userId: $u) { userId status changedLoras } }',
    variables: (fx) => ({ u: fx.owner }),
    expectAllowed: async (data, fx) => {
      expect(data.deleteUserLoraAccount).toEqual({ userId: fx.owner, status: 'DELETED', changedLoras: 1 });
      expect((await loraRow(fx.server, fx.lora.id)).status).toBe('SUSPENDED');
    },
    expectUnchanged: async (fx) => {
      expect((await loraRow(fx.server, fx.lora.id)).status).toBe('READY');
      expect(await fx.server.app.db.lora_account_deletion.count({ where: { user_id: fx.owner } })).toBe(0);
    },
  },
  {
    op: 'cancelUserLoraAccountDeletion',
    allowed: ['admin'],
    document: 'mutation($u: ID!) { cancelUserLoraAccountDeletion(userId: $u) { __typename ... on LoraAccountDeletion { userId status } } }',
    variables: (fx) => ({ u: fx.owner }),
    expectAllowed: (data, fx) => {
      expect(data.cancelUserLoraAccountDeletion).toEqual({ __typename: 'LoraAccountDeletion', userId: fx.owner, status: 'ACTIVE' });
    },
  },
  {
    op: 'auditLog',
    allowed: ['admin'],
    document: 'query($u: ID) { auditLog(filter: { userId: $u }, first: 5) { entries { action userId } } }',
    variables: (fx) => ({ u: fx.owner }),
    expectAllowed: (data, fx) => {
      expect(data.auditLog.entries).toEqual([{ action: 'lora.upload', userId: fx.owner }]);
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
