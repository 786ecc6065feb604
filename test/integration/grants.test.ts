import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mintGrant } from '../testkit/grants.ts';
import { expectRefused, withoutId } from '../testkit/graphql-assertions.ts';
import { sha256 } from '../testkit/hashes.ts';
import { decodePayload, GRANT_AUDIENCE, signGrant, unsignedJwt, withPayload } from '../testkit/jwt.ts';
import { smallSd15Lora } from '../testkit/safetensors.ts';
import { newUserId, seedLora } from '../testkit/seed.ts';
import { startTestServer, TEST_JWT_SECRET, type TestServer } from '../testkit/server.ts';

/**
 * Job grants and machine downloads: grants name one user and job; machines reach only that user's LoRAs.
 * A real server per describe block over real HTTP, real PostgreSQL and Azurite, real JWTs.
 */

const GRANT_MAX_TTL_SECONDS = 24 * 3600; // GRANT_MAX_TTL_SECONDS's default
const SAS_TTL_SECONDS = 900; // SAS_TTL_SECONDS's default
const OTHER_SECRET = 'not-the-server-secret-not-the-server-secret-42';

const M_DELETE = `mutation($id: ID!) { deleteLora(id: $id) {
  __typename ... on DeleteLoraSuccess { loraId quota { loraCount usedStorageBytes } } ... on NotFoundError { code message loraId } } }`;
const Q_DOWNLOAD = `query($id: ID!, $grant: String!) { loraDownload(id: $id, grant: $grant) {
  __typename
  ... on LoraDownload { url loraId userId sha256 sizeBytes fileName etag expiresAt sharedName }
  ... on NotFoundError { code message notFoundId: loraId }
  ... on InvalidGrantError { code message reason } } }`;
const M_USAGE = `mutation($grant: String!, $ids: [ID!]!) { recordLoraUsage(grant: $grant, loraIds: $ids, workflowId: "wf-1", workflowName: "Workflow") {
  __typename ... on RecordLoraUsageSuccess { recorded } ... on InvalidGrantError { code reason } ... on ValidationError { code } } }`;

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
    const shortLived = await mintGrant(server, a, { ttlSeconds: 1 });
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
