import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CancelUserLoraAccountDeletionDocument,
  CreateJobGrantDocument,
  CreateLoraDownloadDocument,
  DeleteUserLoraAccountDocument,
  LoraDocument,
  LoraQuotaDocument,
} from '../../sdk/index.ts';
import { agentPool, userWithLoras } from '../testkit/agent.ts';
import { loraDownload, mintGrant } from '../testkit/grants.ts';
import { codes, dataOf, expectRefused, member } from '../testkit/graphql-assertions.ts';
import { holdUpload } from '../testkit/held-upload.ts';
import { invariantViolations } from '../testkit/invariants.ts';
import { isolatedDatabase, listLoras, sleep } from '../testkit/library-helpers.ts';
import { postMultipart } from '../testkit/multipart.ts';
import { smallSd15Lora } from '../testkit/safetensors.ts';
import { eventually, newUserId, seedLora } from '../testkit/seed.ts';
import { startTestServer, type TestServer } from '../testkit/server.ts';

/**
 * §4 of issue 13: deleting a user's LoRA account. Two servers on one database of their own (the
 * reconciler's short window and the purge jobs must not touch other suites): `slow` keeps the
 * default 30-day window (cancel before the purge), `quick` purges after PURGE_SECONDS — the
 * purge delay is configuration, so the test runs the real job on the real clock.
 */

const PURGE_SECONDS = 20;
let slow: TestServer;
let quick: TestServer;
let db: Awaited<ReturnType<typeof isolatedDatabase>>;
const agents = agentPool(() => quick);

beforeAll(async () => {
  db = await isolatedDatabase();
  const shared = { DATABASE_URL: db.url, LORA_CONTAINER: `accounts-${randomUUID().slice(0, 8)}`, UPLOAD_STALE_SECONDS: '1' };
  slow = await startTestServer(shared);
  quick = await startTestServer({ ...shared, ACCOUNT_PURGE_DAYS: String(PURGE_SECONDS / 86_400) });
});
afterAll(async () => {
  await agents.stopAll();
  await quick?.stop();
  await slow?.stop();
  await slow?.app.blobs.clientsForTests().loras.deleteIfExists();
  await db?.drop();
});

async function deleteAccount(server: TestServer, userId: string, token?: string) {
  const res = await server.request(DeleteUserLoraAccountDocument, { userId }, { token: token ?? (await server.tokens.service()) });
  return dataOf(res).deleteUserLoraAccount;
}

async function cancel(server: TestServer, userId: string) {
  const res = await server.request(CancelUserLoraAccountDeletionDocument, { userId }, { token: await server.tokens.admin() });
  return dataOf(res).cancelUserLoraAccountDeletion;
}

async function auditOf(server: TestServer, userId: string) {
  return server.app.db.audit_log.findMany({ where: { user_id: userId }, orderBy: { id: 'asc' } });
}

async function uploadAs(server: TestServer, userId: string) {
  const res = await postMultipart({ url: server.graphqlUrl, token: await server.tokens.user(userId), file: smallSd15Lora() });
  return res.body?.data?.uploadLora as { __typename: string; code?: string };
}

/** The blobs this user's LoRA rows name that exist (stored content may be another user's too). */
async function storedBlobsOf(server: TestServer, userId: string): Promise<string[]> {
  const rows = await server.app.db.lora.findMany({ where: { user_id: userId }, select: { blob_path: true } });
  const paths = [...new Set(rows.map((r) => r.blob_path))];
  const present = await Promise.all(paths.map(async (p) => ((await server.app.blobs.exists(p)) ? p : null)));
  return present.filter((p): p is string => p !== null);
}

/** Of `paths`, those still stored although no LoRA names them any more: what a purge left behind. */
async function leftovers(server: TestServer, paths: string[]): Promise<string[]> {
  const named = new Set(
    (await server.app.db.lora.findMany({ where: { blob_path: { in: paths } }, select: { blob_path: true } })).map((r) => r.blob_path),
  );
  const present = await Promise.all(paths.map(async (p) => (!named.has(p) && (await server.app.blobs.exists(p)) ? p : null)));
  return present.filter((p): p is string => p !== null);
}

describe('deleteUserLoraAccount', () => {
  it('end to end: hidden, quota 0, a running agent evicts, uploads and grants refused, purged after the window, audit kept', async () => {
    const server = quick;
    const agent = await agents.start({ subscribe: true });
    const { userId, grant, loras } = await userWithLoras(server, [40_000, 30_000]);
    const [free, leased] = loras as [(typeof loras)[0], (typeof loras)[0]];
    const userToken = await server.tokens.user(userId);
    const cachedFree = await agent.ensure({ source: 'user', id: free.id, grant });
    const cachedLeased = await agent.ensure({ source: 'user', id: leased.id, grant }, { lease: { holder: 'job-7' } });
    await eventually(async () => agent.invalidator.reconciliations > 0, 5000, 'agent subscribed');

    const deleted = await deleteAccount(server, userId);
    expect(deleted).toMatchObject({ userId, status: 'DELETED', changedLoras: 2, quota: { usedStorageBytes: 0, loraCount: 0 } });
    const purgeAfter = new Date(deleted.purgeAfter as string).getTime();
    expect(purgeAfter - new Date(deleted.requestedAt as string).getTime()).toBe(PURGE_SECONDS * 1000);

    // hidden everywhere: the user's list and reads, downloads, the platform's flat_file rows
    expect((await listLoras(server, userToken)).total).toBe(0);
    expect(member(dataOf(await server.request(LoraDocument, { id: free.id }, { token: userToken })).lora, 'NotFoundError').code).toBe(
      'LORA_NOT_FOUND',
    );
    const ownerLink = dataOf(await server.request(CreateLoraDownloadDocument, { id: free.id }, { token: userToken })).createLoraDownload;
    expect(ownerLink.__typename).toBe('NotFoundError');
    expect((await loraDownload(server, await server.tokens.machine(), free.id, grant)).__typename).toBe('NotFoundError');
    expect(await server.app.db.flat_file.count({ where: { user_id: userId, hidden: false } })).toBe(0);
    const adminView = member(
      dataOf(await server.request(LoraDocument, { id: free.id }, { token: await server.tokens.admin() })).lora,
      'Lora',
    );
    expect(adminView.status).toBe('SUSPENDED');
    expect(dataOf(await server.request(LoraQuotaDocument, {}, { token: userToken })).loraQuota).toMatchObject({
      usedStorageBytes: 0,
      loraCount: 0,
    });
    expect(await invariantViolations(server.app, userId)).toEqual([]);

    // the agent evicted at once what no job holds; the leased file stays until its lease ends
    await eventually(async () => !existsSync(cachedFree.path), 5000, 'unleased LoRA evicted');
    expect(existsSync(cachedLeased.path)).toBe(true);
    await agent.release({ holder: 'job-7', grant });
    expect(existsSync(cachedLeased.path)).toBe(false);

    // new uploads and grants are refused with ACCOUNT_DELETED
    expect(await uploadAs(server, userId)).toMatchObject({ __typename: 'AccountDeletedError', code: 'ACCOUNT_DELETED' });
    const grantRes = await server.request(
      CreateJobGrantDocument,
      { userId, jobId: 'after-delete' },
      { token: await server.tokens.service() },
    );
    expectRefused(grantRes, 'ACCOUNT_DELETED');

    // idempotent: a repeat changes nothing, keeps the date, writes no second entry
    const entries = (await auditOf(server, userId)).filter((e) => e.action === 'account.delete');
    expect(await deleteAccount(server, userId, await server.tokens.admin())).toMatchObject({
      status: 'DELETED',
      changedLoras: 0,
      purgeAfter: deleted.purgeAfter,
    });
    expect((await auditOf(server, userId)).filter((e) => e.action === 'account.delete')).toEqual(entries);

    // before the window nothing is purged; after it the job removes blobs and rows
    const stored = await storedBlobsOf(server, userId);
    if (Date.now() < purgeAfter - 1000) expect(stored.length).toBe(2);
    const purged = await eventually(
      async () => (await server.app.db.lora_account_deletion.findUnique({ where: { user_id: userId } }))?.purged_at ?? undefined,
      60_000,
      'the purge',
    );
    expect(purged.getTime()).toBeGreaterThanOrEqual(purgeAfter);
    // content no LoRA names any more goes by its own job, just after the purge
    await eventually(async () => (await leftovers(server, stored)).length === 0, 15_000, 'the purged content deleted');
    expect(await server.app.db.lora.count({ where: { user_id: userId } })).toBe(0);
    expect(await server.app.db.flat_file.count({ where: { id: { in: loras.map((l) => BigInt(l.id)) } } })).toBe(0);
    expect(await server.app.db.user_lora_quota.count({ where: { user_id: userId } })).toBe(0);

    // the audit trail stays: the user id, actions and actors, without the details
    const trail = await auditOf(server, userId);
    expect(trail.map((e) => e.action)).toEqual(expect.arrayContaining(['lora.upload', 'grant.create', 'account.delete', 'account.purge']));
    for (const e of trail.filter((e) => e.action !== 'account.purge')) expect(e.details).toEqual({});

    // purged: still refused, and no longer cancellable
    expect(await uploadAs(server, userId)).toMatchObject({ code: 'ACCOUNT_DELETED' });
    expect(await cancel(server, userId)).toMatchObject({ __typename: 'AccountDeletedError', code: 'ACCOUNT_DELETED', purgeStarted: true });
  }, 120_000);

  it('an admin cancels before the purge: LoRAs and quota restored, uploads and grants accepted, the old purge job does nothing', async () => {
    const userId = newUserId();
    const loras = [await seedLora(slow.app, userId), await seedLora(slow.app, userId)];
    const token = await slow.tokens.user(userId);
    const before = dataOf(await slow.request(LoraQuotaDocument, {}, { token })).loraQuota;
    const deleted = await deleteAccount(slow, userId);
    const deletionId = (await slow.app.db.lora_account_deletion.findUniqueOrThrow({ where: { user_id: userId } })).deletion_id;
    expect(deleted.quota.loraCount).toBe(0);
    // the reconciler keeps the blobs of suspended LoRAs (a cancel needs them), however old
    await sleep(1500); // past UPLOAD_STALE_SECONDS
    expect((await slow.app.jobs.reconcileNow()).orphanBlobs.filter((path) => path.includes(userId))).toEqual([]);

    // only admins cancel; users never delete or cancel accounts
    expectRefused(
      await slow.request(CancelUserLoraAccountDeletionDocument, { userId }, { token: await slow.tokens.service() }),
      'FORBIDDEN',
    );
    expectRefused(await slow.request(DeleteUserLoraAccountDocument, { userId }, { token }), 'FORBIDDEN');

    const restored = member(await cancel(slow, userId), 'LoraAccountDeletion');
    expect(restored).toMatchObject({ status: 'ACTIVE', changedLoras: 2, purgeAfter: null });
    expect(restored.quota).toEqual(before);
    expect((await listLoras(slow, token)).loras.map((l) => l.id).sort()).toEqual(loras.map((l) => l.id).sort());
    expect(await slow.app.db.flat_file.count({ where: { user_id: userId, hidden: false } })).toBe(2);
    expect(await invariantViolations(slow.app, userId)).toEqual([]);
    expect(await uploadAs(slow, userId)).toMatchObject({ __typename: 'UploadLoraSuccess' });
    expect(await mintGrant(slow, userId)).toMatch(/\./);
    // a second cancel answers as it is
    expect(await cancel(slow, userId)).toMatchObject({ status: 'ACTIVE', changedLoras: 0 });

    // the cancelled deletion's job (were it to run now) finds nothing to do
    expect(await slow.app.jobs.purgeAccountNow({ userId, deletionId })).toBe('nothing-to-do');
    expect(await slow.app.db.lora.count({ where: { user_id: userId, status: 'READY' } })).toBe(3);
    expect(await invariantViolations(slow.app, userId)).toEqual([]);
    expect((await auditOf(slow, userId)).map((e) => e.action)).toContain('account.delete-cancel');
  });

  it('an upload in flight when the account is deleted ends ACCOUNT_DELETED and leaves nothing', async () => {
    const userId = newUserId();
    const file = smallSd15Lora();
    const held = holdUpload({ url: slow.graphqlUrl, token: await slow.tokens.user(userId), fileSize: file.length });
    await held.send(file.subarray(0, 64));
    await eventually(
      async () => (await slow.app.db.lora.count({ where: { user_id: userId, status: 'UPLOADING' } })) > 0,
      15_000,
      'upload row',
    );
    await deleteAccount(slow, userId);
    await held.send(file.subarray(64));
    held.finish();
    const res = await held.response;
    expect(res.body?.data?.uploadLora, res.text).toMatchObject({ __typename: 'AccountDeletedError', code: 'ACCOUNT_DELETED' });
    expect(await slow.app.db.lora.count({ where: { user_id: userId } })).toBe(0);
    expect(await storedBlobsOf(slow, userId)).toEqual([]);
    expect(dataOf(await slow.request(LoraQuotaDocument, { userId }, { token: await slow.tokens.admin() })).loraQuota.loraCount).toBe(0);
  });

  it('the reconciler runs a purge whose job was lost, and removes blobs no row names after the window', async () => {
    const userId = newUserId();
    await seedLora(quick.app, userId, { bytes: smallSd15Lora({ owner: userId }) }); // content of its own
    const stored = await storedBlobsOf(quick, userId);
    await deleteAccount(quick, userId);
    // the job is lost (a restore of the database without pgboss, an operator's mistake …)
    await quick.app.db.$executeRaw`DELETE FROM pgboss.job WHERE name = 'account.purge' AND data->>'userId' = ${userId}`;
    const mark = await quick.app.db.lora_account_deletion.findUniqueOrThrow({ where: { user_id: userId } });
    await sleep(Math.max(0, mark.purge_after.getTime() - Date.now()) + 1500); // past the window and UPLOAD_STALE_SECONDS
    expect(stored).toHaveLength(1);
    expect(await storedBlobsOf(quick, userId)).toEqual(stored); // nobody purged it

    const plan = await quick.app.jobs.reconcileNow();
    expect(plan.overduePurges).toEqual([{ userId, deletionId: mark.deletion_id }]);
    // content no LoRA names any more goes by its own job, just after the purge
    await eventually(async () => (await leftovers(quick, stored)).length === 0, 15_000, 'the purged content deleted');
    expect(await quick.app.db.lora.count({ where: { user_id: userId } })).toBe(0);

    // a blob written under the purged user afterwards (no row names it) is an orphan of the next sweep
    const stray = `users/${userId}/loras/123456789.safetensors`;
    await quick.app.blobs.put(stray, Buffer.from('stray'));
    await sleep(1500);
    expect((await quick.app.jobs.reconcileNow()).orphanBlobs).toContain(stray);
    expect(await quick.app.blobs.exists(stray)).toBe(false);
  }, 60_000);

  it('a purge gives up shared content: another user holding the same file keeps it, byte for byte', async () => {
    const server = quick;
    const [gone, keeper] = [newUserId(), newUserId()];
    const bytes = smallSd15Lora({ pair: gone }); // the same file for both (and nobody else): stored once (issue 17)
    const theirs = await seedLora(server.app, gone, { bytes });
    const mine = await seedLora(server.app, keeper, { bytes });
    const stored = await server.app.db.lora.findMany({ where: { file_id: { in: [BigInt(theirs.id), BigInt(mine.id)] } } });
    expect(new Set(stored.map((l) => l.blob_path)).size).toBe(1);
    const blobPath = stored[0]?.blob_path as string;

    await deleteAccount(server, gone);
    await eventually(
      async () => (await server.app.db.lora_account_deletion.findUnique({ where: { user_id: gone } }))?.purged_at ?? undefined,
      (PURGE_SECONDS + 30) * 1000,
      'the purge',
    );
    // the keeper's LoRA still downloads the exact bytes, and the content counts one reference: theirs
    const link = await loraDownload(server, await server.tokens.machine('m-keeper'), mine.id, await mintGrant(server, keeper));
    if (link.__typename !== 'LoraDownload') throw new Error(`expected a download, got ${link.__typename}`);
    const fetched = Buffer.from(await (await fetch(link.url)).arrayBuffer());
    expect(fetched.equals(bytes)).toBe(true);
    const content = await server.app.db.lora_blob.findMany({ where: { blob_path: blobPath } });
    expect(content.map((c) => c.ref_count)).toEqual([1]);
    expect(await invariantViolations(server.app, keeper)).toEqual([]);
  }, 90_000);

  it('refuses a malformed user id as BAD_USER_INPUT, and users and machines as FORBIDDEN', async () => {
    const res = await slow.request(DeleteUserLoraAccountDocument, { userId: 'not-a-uuid' }, { token: await slow.tokens.admin() });
    expect(codes(res)).toEqual(['BAD_USER_INPUT']);
    expectRefused(
      await slow.request(DeleteUserLoraAccountDocument, { userId: newUserId() }, { token: await slow.tokens.machine() }),
      'FORBIDDEN',
    );
  });
});
