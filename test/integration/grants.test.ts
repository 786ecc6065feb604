import { spawn } from 'node:child_process';
import { createPublicKey, generateKeyPairSync, randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import {
  CreateJobGrantDocument,
  type CreateJobGrantMutationVariables,
  LoraDownloadDocument,
  RecordLoraUsageDocument,
} from '../../sdk/index.ts';
import { loraDownload, mintGrant } from '../testkit/grants.ts';
import { dataOf, expectRefused, member, withoutId } from '../testkit/graphql-assertions.ts';
import { sha256 } from '../testkit/hashes.ts';
import {
  decodeHeader,
  decodePayload,
  GRANT_AUDIENCE,
  grantSigningKey,
  signGrant,
  unsignedGrant,
  unsignedJwt,
  withPayload,
} from '../testkit/jwt.ts';
import { deleteLora, getLora } from '../testkit/library-helpers.ts';
import { smallSd15Lora } from '../testkit/safetensors.ts';
import { newUserId, seedLora } from '../testkit/seed.ts';
import { startTestServer, TEST_GRANT_KEY_PEM, TEST_JWT_SECRET, type TestServer } from '../testkit/server.ts';

/**
 * Job grants and machine downloads: grants name one user and job; machines reach only that user's LoRAs.
 * A real server per describe block over real HTTP, real PostgreSQL and Azurite, real JWTs.
 */

const GRANT_MAX_TTL_SECONDS = 24 * 3600; // GRANT_MAX_TTL_SECONDS's default
const SAS_TTL_SECONDS = 900; // SAS_TTL_SECONDS's default
/** An Ed25519 key the server does not have. */
const otherKey = () => grantSigningKey(generateKeyPairSync('ed25519').privateKey.export({ format: 'pem', type: 'pkcs8' }) as string);
/** The server's public key as PEM: what an alg-swap forger uses as an HMAC secret. */
const PUBLIC_KEY_PEM = createPublicKey(TEST_GRANT_KEY_PEM).export({ format: 'pem', type: 'spki' }) as string;

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
    const res = await server.request(
      CreateJobGrantDocument,
      { userId, jobId: 'job-42', ttlSeconds: 600 },
      { token: await server.tokens.service() },
    );
    const grant = dataOf(res).createJobGrant;
    expect(grant).toMatchObject({ userId, jobId: 'job-42' });
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
    // EdDSA, naming the published key it was signed with (the RFC 7638 thumbprint of the test key)
    expect(decodeHeader(grant.token)).toEqual({ alg: 'EdDSA', typ: 'JWT', kid: (await grantSigningKey()).kid });
    expect(await server.app.db.audit_log.count({ where: { action: 'grant.create', user_id: userId } })).toBe(1);
  });

  it('GET /.well-known/jwks.json publishes the public keys only, cacheable, without a token', async () => {
    const res = await fetch(`${server.url}/.well-known/jwks.json`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^application\/jwk-set\+json/);
    expect(res.headers.get('cache-control')).toBe('public, max-age=300');
    const { x } = createPublicKey(TEST_GRANT_KEY_PEM).export({ format: 'jwk' });
    expect(await res.json()).toEqual({
      keys: [{ kty: 'OKP', crv: 'Ed25519', x, kid: (await grantSigningKey()).kid, alg: 'EdDSA', use: 'sig' }],
    });
    expect((await fetch(`${server.url}/.well-known/jwks.json`, { method: 'POST' })).status).toBe(405);
  });

  it('createJobGrant refuses bad arguments with BAD_USER_INPUT and mints nothing', async () => {
    const service = await server.tokens.service();
    const userId = newUserId();
    const cases: CreateJobGrantMutationVariables[] = [
      { userId, jobId: 'job', ttlSeconds: GRANT_MAX_TTL_SECONDS + 1 },
      { userId, jobId: 'job', ttlSeconds: 10 * 365 * 24 * 3600 },
      { userId, jobId: 'job', ttlSeconds: 0 },
      { userId, jobId: 'job', ttlSeconds: -5 },
      { userId: 'not-a-uuid', jobId: 'job', ttlSeconds: 60 },
      { userId: '', jobId: 'job', ttlSeconds: 60 },
      { userId: `${userId}x`, jobId: 'job', ttlSeconds: 60 },
      { userId, jobId: '   ', ttlSeconds: 60 },
      { userId, jobId: 'j'.repeat(201), ttlSeconds: 60 },
    ];
    for (const variables of cases) {
      expectRefused(await server.request(CreateJobGrantDocument, variables, { token: service }), 'BAD_USER_INPUT');
    }
    expect(await server.app.db.audit_log.count({ where: { action: 'grant.create', user_id: userId } })).toBe(0);
    // The maximum itself is fine.
    const max = await server.request(CreateJobGrantDocument, { userId, jobId: 'job', ttlSeconds: 86400 }, { token: service });
    expect(dataOf(max).createJobGrant).toMatchObject({ userId, jobId: 'job' });
  });

  it('users and machines cannot mint grants (FORBIDDEN), even for themselves', async () => {
    const userId = newUserId();
    const variables = { userId, jobId: 'job' };
    expectRefused(await server.request(CreateJobGrantDocument, variables, { token: await server.tokens.user(userId) }), 'FORBIDDEN');
    expectRefused(await server.request(CreateJobGrantDocument, variables, { token: machine }), 'FORBIDDEN');
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
      [await signGrant({ userId: a, audience: 'lora-vault' }), 'malformed'],
      [await signGrant({ userId: a, issuer: 'elsewhere' }), 'malformed'],
      [await signGrant({ userId: 'not-a-uuid' }), 'malformed'],
      [unsignedJwt({ sub: a, job_id: 'j', aud: GRANT_AUDIENCE }), 'malformed'],
      [unsignedGrant(a, (await grantSigningKey()).kid), 'malformed'], // alg none naming the real kid
      [await signGrant({ userId: a, hmacSecret: PUBLIC_KEY_PEM }), 'malformed'], // alg swapped to HS256, public key as secret
      [await signGrant({ userId: a, hmacSecret: TEST_JWT_SECRET, kid: null }), 'malformed'], // a grant of the retired HS256 scheme
    ];
    for (const [grant, reason] of bad) {
      const forA = await server.request(LoraDownloadDocument, { id: loraA.id, grant }, { token: machine });
      expect(forA.body.data?.loraDownload, grant).toMatchObject({ __typename: 'InvalidGrantError', code: 'INVALID_GRANT', reason });
      expect(forA.body.data?.loraDownload).not.toHaveProperty('url');
      const forMissing = await server.request(LoraDownloadDocument, { id: missingId, grant }, { token: machine });
      expect(forMissing.body).toEqual(forA.body);
    }
  });

  it("loraDownload with a grant signed with another Ed25519 key (naming the server's kid, its own, or none) → INVALID_GRANT", async () => {
    const { a, loraA } = await owners();
    const other = await otherKey();
    for (const kid of [(await grantSigningKey()).kid, other.kid]) {
      const forged = await signGrant({ signer: other, kid, userId: a });
      const res = await server.request(LoraDownloadDocument, { id: loraA.id, grant: forged }, { token: machine });
      expect(res.body.data?.loraDownload).toMatchObject({
        __typename: 'InvalidGrantError',
        code: 'INVALID_GRANT',
        reason: 'bad-signature',
      });
    }
    // A real grant tampered to name another user fails the same way.
    const { b } = await owners();
    const tampered = withPayload(await mintGrant(server, b), { sub: a });
    const res2 = await server.request(LoraDownloadDocument, { id: loraA.id, grant: tampered }, { token: machine });
    expect(res2.body.data?.loraDownload).toMatchObject({ __typename: 'InvalidGrantError', code: 'INVALID_GRANT' });
  });

  it('loraDownload with an expired grant → INVALID_GRANT (minted with ttlSeconds: 1, and signed with a past exp)', async () => {
    const { a, loraA } = await owners();
    const shortLived = await mintGrant(server, a, { ttlSeconds: 1 });
    await new Promise((r) => setTimeout(r, 2_500));
    const res = await server.request(LoraDownloadDocument, { id: loraA.id, grant: shortLived }, { token: machine });
    expect(res.body.data?.loraDownload).toMatchObject({ __typename: 'InvalidGrantError', code: 'INVALID_GRANT', reason: 'expired' });
    const pastExp = await signGrant({ userId: a, expiresIn: -3600 });
    const res2 = await server.request(LoraDownloadDocument, { id: loraA.id, grant: pastExp }, { token: machine });
    expect(res2.body.data?.loraDownload).toMatchObject({ __typename: 'InvalidGrantError', code: 'INVALID_GRANT', reason: 'expired' });
    expect(res2.body.data?.loraDownload).not.toHaveProperty('url');
  });

  it("a valid grant for B asking for A's LoRA → LORA_NOT_FOUND, identical to a missing id", async () => {
    const { b, loraA } = await owners();
    const grantB = await mintGrant(server, b);
    const forA = await server.request(LoraDownloadDocument, { id: loraA.id, grant: grantB }, { token: machine });
    expect(forA.body).toEqual({
      data: {
        loraDownload: {
          __typename: 'NotFoundError',
          code: 'LORA_NOT_FOUND',
          message: `LoRA with ID ${loraA.id} not found or access denied`,
        },
      },
    });
    for (const id of [(BigInt(loraA.id) + 1_000_000_000n).toString(), '0', '-1', 'abc', '99999999999999999999']) {
      const missing = await server.request(LoraDownloadDocument, { id, grant: grantB }, { token: machine });
      expect(missing.status).toBe(forA.status);
      expect(withoutId(missing.body, id), id).toEqual(withoutId(forA.body, loraA.id));
    }
    expect(await server.app.db.audit_log.count({ where: { action: 'lora.download-granted', lora_id: BigInt(loraA.id) } })).toBe(0);
  });

  it("a valid grant for A → a read-only URL that serves exactly A's bytes for ~15 minutes, with ranges", async () => {
    const { a, bytes, loraA } = await owners();
    const grant = await mintGrant(server, a);
    const started = Date.now();
    const dl = member(await loraDownload(server, machine, loraA.id, grant), 'LoraDownload');
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
    member(await deleteLora(server, await server.tokens.user(a), loraA.id), 'DeleteLoraSuccess');
    const res = await loraDownload(server, machine, loraA.id, await mintGrant(server, a));
    expect(res).toEqual({
      __typename: 'NotFoundError',
      code: 'LORA_NOT_FOUND',
      message: `LoRA with ID ${loraA.id} not found or access denied`,
    });
  });

  it('user and service tokens cannot call loraDownload, even with a valid grant (FORBIDDEN)', async () => {
    const { a, loraA } = await owners();
    const grant = await mintGrant(server, a);
    expectRefused(await server.request(LoraDownloadDocument, { id: loraA.id, grant }, { token: await server.tokens.user(a) }), 'FORBIDDEN');
    expectRefused(
      await server.request(LoraDownloadDocument, { id: loraA.id, grant }, { token: await server.tokens.service() }),
      'FORBIDDEN',
    );
    expectRefused(await server.request(LoraDownloadDocument, { id: loraA.id, grant }, { token: null }), 'UNAUTHENTICATED');
  });

  it("recordLoraUsage with B's grant counts 0 for A's LoRA; A's grant counts it once", async () => {
    const { a, b, loraA, loraB } = await owners();
    const grantB = await mintGrant(server, b);
    const usage = async (grant: string, loraIds: string[]) => {
      const variables = { grant, loraIds, workflowId: 'wf-1', workflowName: 'Workflow' };
      return dataOf(await server.request(RecordLoraUsageDocument, variables, { token: machine })).recordLoraUsage;
    };
    expect(await usage(grantB, [loraA.id])).toEqual({ __typename: 'RecordLoraUsageSuccess', recorded: 0 });
    expect(await usage(grantB, [loraA.id, loraB.id, 'abc', '0'])).toEqual({ __typename: 'RecordLoraUsageSuccess', recorded: 1 });
    const lookA = async () => {
      const { usageCount, lastUsedAt, workflowsUsing } = member(await getLora(server, await server.tokens.user(a), loraA.id), 'Lora');
      return { usageCount, lastUsedAt, workflowsUsing: workflowsUsing.map(({ id, useCount }) => ({ id, useCount })) };
    };
    expect(await lookA()).toEqual({ usageCount: 0, lastUsedAt: null, workflowsUsing: [] });
    const forged = await usage(await signGrant({ signer: await otherKey(), userId: a }), [loraA.id]);
    expect(forged).toMatchObject({ __typename: 'InvalidGrantError', code: 'INVALID_GRANT', reason: 'bad-signature' });
    expect(await lookA()).toEqual({ usageCount: 0, lastUsedAt: null, workflowsUsing: [] });
    // Control: the owner's grant counts.
    expect(await usage(await mintGrant(server, a), [loraA.id])).toEqual({ __typename: 'RecordLoraUsageSuccess', recorded: 1 });
    expect(await lookA()).toMatchObject({ usageCount: 1, workflowsUsing: [{ id: 'wf-1', useCount: 1 }] });
  });
});

describe('start-up: the grant key configuration (a real `server/main.ts` process)', () => {
  const ROOT = join(import.meta.dirname, '../..');
  async function start(env: Record<string, string>): Promise<{ code: number | null; output: string }> {
    const child = spawn(process.execPath, ['--import', 'tsx', 'server/main.ts'], {
      cwd: ROOT,
      env: {
        PATH: process.env.PATH ?? '',
        HOME: process.env.HOME ?? '/root',
        PORT: '0',
        DATA_DIR: await mkdtemp(join(tmpdir(), 'lora-grant-start-')),
        DATABASE_URL: inject('databaseUrl'),
        AZURE_STORAGE_CONNECTION_STRING: inject('storageConnectionString'),
        JWT_SECRET: TEST_JWT_SECRET,
        JOBS_ENABLED: 'false',
        ...env,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (d) => (output += d));
    child.stderr.on('data', (d) => (output += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000); // it must exit on its own, at once
    const [code] = (await once(child, 'exit')) as [number | null];
    clearTimeout(timer);
    return { code, output };
  }

  it('GRANT_SECRET set → exit 1 saying it is retired and to set GRANT_SIGNING_KEY; production without a key → exit 1', async () => {
    const retired = await start({ NODE_ENV: 'test', GRANT_SECRET: TEST_JWT_SECRET, GRANT_SIGNING_KEY: TEST_GRANT_KEY_PEM });
    expect(retired.code).toBe(1);
    expect(retired.output).toMatch(/GRANT_SECRET: is retired: job grants are signed with Ed25519 now[\s\S]*set GRANT_SIGNING_KEY/);
    const missing = await start({ NODE_ENV: 'production' });
    expect(missing.code).toBe(1);
    expect(missing.output).toContain('GRANT_SIGNING_KEY: production needs GRANT_SIGNING_KEY');
    expect(missing.output).not.toMatch(/listening/);
  }, 90_000);
});
