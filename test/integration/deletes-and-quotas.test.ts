import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import {
  type LoraQuotaDetails,
  LoraQuotaDocument,
  SetUserLoraQuotaDocument,
  type SetUserLoraQuotaMutationVariables,
} from '../../sdk/index.ts';
import { QuotaExceededError } from '../../server/domain/errors.ts';
import { azuriteConnectionString } from '../../server/embedded/azurite.ts';
import { startCorruptingProxy } from '../testkit/corrupting-proxy.ts';
import { dataOf } from '../testkit/graphql-assertions.ts';
import { sha256 } from '../testkit/hashes.ts';
import {
  deleteJobsFor,
  deleteLora,
  expectBadUserInput,
  expectThrownCode,
  getLora,
  isolatedDatabase,
  listLoras,
  quotaOf,
  setUserLoraQuota,
  sleep,
  updateLora,
} from '../testkit/library-helpers.ts';
import { sizedLora } from '../testkit/safetensors.ts';
import { eventually, newUserId, seedLora } from '../testkit/seed.ts';
import { startTestServer, type TestServer } from '../testkit/server.ts';

/**
 * Deletion (soft delete, the durable blob-deletion job, quota released exactly once) and quota
 * administration and enforcement, over real HTTP against real PostgreSQL (pg-boss) and Azurite.
 * Operations go through the SDK's documents; the few hand-written ones are about inline literals
 * and the raw JSON on the wire.
 */

const GiB = 1024 ** 3;

async function quotaRow(server: TestServer, userId: string) {
  const row = await server.app.db.user_lora_quota.findUnique({ where: { user_id: userId } });
  return row ? { usedBytes: Number(row.used_bytes), count: row.lora_count } : null;
}

async function blobPathOf(server: TestServer, id: string): Promise<string> {
  return (await server.app.db.lora.findUniqueOrThrow({ where: { file_id: BigInt(id) } })).blob_path;
}

describe('deleteLora', () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer();
  });
  afterAll(async () => {
    await server?.stop();
  });

  it('hides the LoRA at once, frees its quota, and the durable job deletes the blob; a retry frees nothing more', async () => {
    const userId = newUserId();
    const token = await server.tokens.user(userId);
    const a = await seedLora(server.app, userId, { name: 'Doomed', bytes: sizedLora(3) });
    const b = await seedLora(server.app, userId, { name: 'Survivor', bytes: sizedLora(1) });
    const pathA = await blobPathOf(server, a.id);
    const pathB = await blobPathOf(server, b.id);
    expect(await quotaRow(server, userId)).toEqual({ usedBytes: a.sizeBytes + b.sizeBytes, count: 2 });

    const deleted = await deleteLora(server, token, a.id);
    expect(deleted).toEqual({
      __typename: 'DeleteLoraSuccess',
      loraId: a.id,
      quota: {
        userId,
        usedStorageBytes: b.sizeBytes,
        loraCount: 1,
        maxStorageBytes: 10 * GiB,
        maxLoraCount: 100,
        availableBytes: 10 * GiB - b.sizeBytes,
        utilizationPercent: 0,
        warning: false,
        loras: [{ id: b.id, name: 'Survivor', sizeBytes: b.sizeBytes }],
      },
    });

    // Gone from list and get at once, whatever the job has done yet.
    const list = await listLoras(server, token, {});
    expect(list.total).toBe(1);
    expect(list.loras.map((l) => l.id)).toEqual([b.id]);
    expect(await getLora(server, token, a.id)).toMatchObject({ __typename: 'NotFoundError', code: 'LORA_NOT_FOUND' });
    const upd = await updateLora(server, token, { id: a.id, name: 'Zombie' });
    expect(upd).toMatchObject({ __typename: 'NotFoundError', code: 'LORA_NOT_FOUND' });

    const file = await server.app.db.flat_file.findUniqueOrThrow({ where: { id: BigInt(a.id) } });
    const row = await server.app.db.lora.findUniqueOrThrow({ where: { file_id: BigInt(a.id) } });
    expect(file.hidden).toBe(true);
    expect(row.status).toBe('DELETED');
    expect(row.deleted_at).toBeInstanceOf(Date);
    expect(await quotaRow(server, userId)).toEqual({ usedBytes: b.sizeBytes, count: 1 });
    const quota = await quotaOf(server, userId);
    expect(quota).toMatchObject({
      usedStorageBytes: b.sizeBytes,
      loraCount: 1,
      loras: [{ id: b.id, name: 'Survivor', sizeBytes: b.sizeBytes }],
    });

    // the base goes by the content-deletion job (pg-boss polling): room for a loaded CI machine
    await eventually(async () => !(await server.app.blobs.exists(pathA)), 45_000, 'blob deletion');
    // deleteLora deleted A's own snapshot at once and marked its fallback job done (cancelled):
    // nothing deletes twice; the base went with the content-deletion job (no other LoRA names it)
    expect((await deleteJobsFor(server, a.id)).map((j) => j.state)).toEqual(['cancelled']);
    expect(await server.app.blobs.exists(pathB)).toBe(true);

    // Retried delete: success again, nothing released twice, no second job.
    const retried = await deleteLora(server, token, a.id);
    expect(retried).toMatchObject({
      __typename: 'DeleteLoraSuccess',
      loraId: a.id,
      quota: { usedStorageBytes: b.sizeBytes, loraCount: 1 },
    });
    expect(await quotaRow(server, userId)).toEqual({ usedBytes: b.sizeBytes, count: 1 });
    expect(await deleteJobsFor(server, a.id)).toHaveLength(1);
    expect((await listLoras(server, token, {})).total).toBe(1);
  }, 90_000);

  it('frees the quota once when the same LoRA is deleted concurrently', async () => {
    const userId = newUserId();
    const token = await server.tokens.user(userId);
    const target = await seedLora(server.app, userId, { name: 'Contended', bytes: sizedLora(4) });
    const others = [
      await seedLora(server.app, userId, { bytes: sizedLora(4) }),
      await seedLora(server.app, userId, { bytes: sizedLora(5) }),
    ];
    const othersBytes = others.reduce((s, l) => s + l.sizeBytes, 0);

    const results = await Promise.all(Array.from({ length: 5 }, () => deleteLora(server, token, target.id)));
    for (const r of results) expect(r).toMatchObject({ __typename: 'DeleteLoraSuccess', loraId: target.id });
    for (const r of results) expect(r).toMatchObject({ quota: { usedStorageBytes: othersBytes, loraCount: 2 } });
    expect(await quotaRow(server, userId)).toEqual({ usedBytes: othersBytes, count: 2 });
    expect(await deleteJobsFor(server, target.id)).toHaveLength(1);
    const audit = await server.app.db.audit_log.count({ where: { lora_id: BigInt(target.id), action: 'lora.delete' } });
    expect(audit).toBe(1);
    expect((await listLoras(server, token, {})).total).toBe(2);
  });

  it("refuses another user's delete with NotFoundError and changes nothing", async () => {
    const owner = newUserId();
    const lora = await seedLora(server.app, owner, { name: 'Protected' });
    const path = await blobPathOf(server, lora.id);
    const result = await deleteLora(server, await server.tokens.user(newUserId()), lora.id);
    expect(result).toEqual({
      __typename: 'NotFoundError',
      code: 'LORA_NOT_FOUND',
      loraId: lora.id,
      message: `LoRA with ID ${lora.id} not found or access denied`,
    });
    const row = await server.app.db.lora.findUniqueOrThrow({ where: { file_id: BigInt(lora.id) } });
    expect(row.status).toBe('READY');
    expect(await quotaRow(server, owner)).toEqual({ usedBytes: lora.sizeBytes, count: 1 });
    expect(await deleteJobsFor(server, lora.id)).toHaveLength(0);
    expect(await server.app.blobs.exists(path)).toBe(true);
    // An admin may delete it.
    const byAdmin = await deleteLora(server, await server.tokens.admin(), lora.id);
    expect(byAdmin).toMatchObject({ __typename: 'DeleteLoraSuccess', quota: { usedStorageBytes: 0, loraCount: 0 } });
  });
});

describe('blob deletion job: durability and idempotence', () => {
  // pg-boss queues live in the database: servers of other test files (jobs enabled) would run
  // our jobs, so this scenario gets a database of its own on the same PostgreSQL.
  let db: Awaited<ReturnType<typeof isolatedDatabase>>;
  const running = new Set<TestServer>();
  beforeAll(async () => {
    db = await isolatedDatabase();
  });
  afterAll(async () => {
    for (const s of running) await s.stop().catch(() => {});
    await db?.drop();
  });
  async function start(env: Record<string, string>): Promise<TestServer> {
    const s = await startTestServer({ DATABASE_URL: db.url, ...env });
    running.add(s);
    return s;
  }
  async function stop(s: TestServer): Promise<void> {
    running.delete(s);
    await s.stop();
  }

  it('survives a server stop between the soft delete and the job, and a blob already gone (404) still completes the job', async () => {
    const userId = newUserId();
    // deleteLora removes the blob at once when storage answers; here storage refuses A's DELETE
    // while the first server runs (as if it crashed right after the commit), so only the job can.
    const azuritePort = Number(/BlobEndpoint=http:\/\/127\.0\.0\.1:(\d+)/.exec(inject('storageConnectionString'))?.[1]);
    const proxy = await startCorruptingProxy(azuritePort);
    const noJobs = await start({ JOBS_ENABLED: 'false', AZURE_STORAGE_CONNECTION_STRING: azuriteConnectionString(proxy.port) });
    const token = await noJobs.tokens.user(userId);
    const a = await seedLora(noJobs.app, userId, { name: 'delete after restart', bytes: sizedLora(2) });
    const b = await seedLora(noJobs.app, userId, { name: 'blob removed by hand', bytes: sizedLora(3) });
    const keep = await seedLora(noJobs.app, userId, { name: 'kept', bytes: sizedLora(1) });
    const pathA = await blobPathOf(noJobs, a.id);
    const pathB = await blobPathOf(noJobs, b.id);
    const pathKeep = await blobPathOf(noJobs, keep.id);
    proxy.add({ fault: { kind: 'status', status: 503 }, times: 1_000, match: (r) => r.method === 'DELETE' && r.url.includes(pathA) });

    expect(await deleteLora(noJobs, token, a.id)).toMatchObject({ __typename: 'DeleteLoraSuccess', quota: { loraCount: 2 } });
    expect(await deleteLora(noJobs, token, b.id)).toMatchObject({
      __typename: 'DeleteLoraSuccess',
      quota: { loraCount: 1, usedStorageBytes: keep.sizeBytes },
    });
    // B's own snapshot went with deleteLora (its job is marked done); the base waits for the content job
    const snapshotB = (await noJobs.app.db.lora.findUniqueOrThrow({ where: { file_id: BigInt(b.id) } })).blob_snapshot ?? '';
    expect(await noJobs.app.blobs.clientsForTests().loras.getBlobClient(pathB).withSnapshot(snapshotB).exists()).toBe(false);
    expect((await deleteJobsFor(noJobs, b.id)).map((j) => j.state)).toEqual(['cancelled']);

    await sleep(2_500); // several polling intervals: nobody runs the jobs
    expect(await noJobs.app.blobs.exists(pathA)).toBe(true);
    const pending = await deleteJobsFor(noJobs, a.id);
    expect(pending.map((j) => j.state)).toEqual(['created']);
    await stop(noJobs);
    await proxy.close();

    const withJobs = await start({});
    await eventually(async () => !(await withJobs.app.blobs.exists(pathA)), 20_000, 'blob deleted after restart');
    await eventually(async () => !(await withJobs.app.blobs.exists(pathB)), 20_000, 'base of B deleted by the content job');
    const done = await eventually(
      async () => {
        const jobs = await deleteJobsFor(withJobs, a.id);
        return jobs.length === 1 && jobs[0]?.state === 'completed' ? jobs : undefined;
      },
      20_000,
      "A's job completed",
    );
    expect(done.map((j) => j.retry_count)).toEqual([0]);
    const viaBoss = await withJobs.app.jobs.boss.getJobById('lora.delete-blob', done[0]?.id ?? '');
    expect(viaBoss?.state).toBe('completed');

    // Quota released exactly once per LoRA across the restart; the kept LoRA is untouched.
    expect(await quotaRow(withJobs, userId)).toEqual({ usedBytes: keep.sizeBytes, count: 1 });
    expect(await withJobs.app.blobs.exists(pathKeep)).toBe(true);
    const userToken = await withJobs.tokens.user(userId);
    expect((await listLoras(withJobs, userToken, {})).loras.map((l) => l.id)).toEqual([keep.id]);
    await stop(withJobs);
  });
});

describe('quotas', () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer();
  });
  afterAll(async () => {
    await server?.stop();
  });

  async function setQuota(
    userId: string,
    maxStorageBytes: number | null | undefined,
    maxLoraCount: number | null | undefined,
  ): Promise<LoraQuotaDetails> {
    const variables: SetUserLoraQuotaMutationVariables = { userId };
    if (maxStorageBytes !== undefined) variables.maxStorageBytes = maxStorageBytes;
    if (maxLoraCount !== undefined) variables.maxLoraCount = maxLoraCount;
    return setUserLoraQuota(server, variables);
  }

  it('lets an admin set limits above 2^31 that round-trip as JSON numbers, and null restores the defaults', async () => {
    const userId = newUserId();
    const fiveGiB = 5 * GiB;
    const set = await setQuota(userId, fiveGiB, 7);
    expect(set).toEqual({
      userId,
      maxStorageBytes: fiveGiB,
      usedStorageBytes: 0,
      availableBytes: fiveGiB,
      utilizationPercent: 0,
      loraCount: 0,
      maxLoraCount: 7,
      warning: false,
      loras: [],
    });
    expect(typeof set.maxStorageBytes).toBe('number');

    // The raw response carries a bare JSON number, not a string.
    const raw = await fetch(server.graphqlUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${await server.tokens.user(userId)}` },
      body: JSON.stringify({ query: '{ loraQuota { maxStorageBytes availableBytes } }' }),
    }).then((r) => r.text());
    expect(raw).toContain(`"maxStorageBytes":${fiveGiB}`);
    expect(raw).toContain(`"availableBytes":${fiveGiB}`);
    expect(await quotaOf(server, userId)).toMatchObject({ maxStorageBytes: fiveGiB, maxLoraCount: 7 });

    // As a literal, too; and only the given limit changes.
    const literal = await server.gql(
      `mutation { setUserLoraQuota(userId: "${userId}", maxStorageBytes: 6442450944) { maxStorageBytes maxLoraCount } }`,
      {},
      { token: await server.tokens.admin() },
    );
    expect(literal.body.data?.setUserLoraQuota).toEqual({ maxStorageBytes: 6 * GiB, maxLoraCount: 7 });

    const reset = await setQuota(userId, null, null);
    expect(reset).toMatchObject({ maxStorageBytes: 10 * GiB, maxLoraCount: 100, availableBytes: 10 * GiB });
  });

  it('reports usage, largest LoRAs first, and warns from 80 % of either limit', async () => {
    const userId = newUserId();
    const seeded = [];
    for (const [name, k] of [
      ['small', 1],
      ['large', 9],
      ['medium', 5],
      ['tiny', 0],
    ] as const) {
      seeded.push(await seedLora(server.app, userId, { name, bytes: sizedLora(k) }));
    }
    const used = seeded.reduce((s, l) => s + l.sizeBytes, 0);
    expect(used % 4).toBe(0); // so that 5/4 of it is a whole number of bytes

    const initial = await quotaOf(server, userId);
    expect(initial).toMatchObject({ usedStorageBytes: used, loraCount: 4, maxStorageBytes: 10 * GiB, maxLoraCount: 100, warning: false });
    expect(initial.availableBytes).toBe(10 * GiB - used);
    expect(initial.utilizationPercent).toBeCloseTo((used / (10 * GiB)) * 100, 1);
    const bySize = [...seeded].sort((x, y) => y.sizeBytes - x.sizeBytes);
    expect(initial.loras).toEqual(bySize.map((l) => ({ id: l.id, name: l.name, sizeBytes: l.sizeBytes })));
    expect(initial.loras.map((l) => l.name)).toEqual(['large', 'medium', 'small', 'tiny']);

    // Bytes: exactly 80 % warns, just below does not.
    const atEighty = await setQuota(userId, (used * 5) / 4, null);
    expect(atEighty).toMatchObject({ warning: true, utilizationPercent: 80, availableBytes: used / 4 });
    const below = await setQuota(userId, (used * 5) / 4 + 8, null);
    expect(below.warning).toBe(false);
    expect(below.utilizationPercent).toBeCloseTo((used / ((used * 5) / 4 + 8)) * 100, 1); // may round to 80.00

    // Count: 4 of 5 warns (bytes far below), 4 of 6 does not.
    expect(await setQuota(userId, GiB, 5)).toMatchObject({ warning: true, loraCount: 4, maxLoraCount: 5 });
    expect(await setQuota(userId, GiB, 6)).toMatchObject({ warning: false, loraCount: 4, maxLoraCount: 6 });

    // Over the limit (lowered below usage): nothing is lost, availability is 0, still warning.
    const over = await setQuota(userId, 100, 2);
    expect(over).toMatchObject({ usedStorageBytes: used, availableBytes: 0, warning: true, loraCount: 4 });
    expect((await listLoras(server, await server.tokens.user(userId), {})).total).toBe(4);

    // The user sees the same through their own token.
    const own = await server.request(LoraQuotaDocument, {}, { token: await server.tokens.user(userId) });
    expect(dataOf(own).loraQuota).toEqual(over);
  });

  it('rejects negative, fractional, unsafe or non-UUID arguments with BAD_USER_INPUT and keeps users out', async () => {
    const userId = newUserId();
    await setQuota(userId, 3 * GiB, 9);
    const admin = await server.tokens.admin();
    const cases: [SetUserLoraQuotaMutationVariables, string | undefined][] = [
      [{ userId, maxStorageBytes: -1 }, undefined],
      [{ userId, maxStorageBytes: 1.5 }, undefined],
      [{ userId, maxStorageBytes: 2 ** 53 }, undefined],
      [{ userId, maxStorageBytes: '5368709120' as unknown as number }, undefined], // a string where Bytes wants a number
      [{ userId, maxLoraCount: -1 }, 'maxLoraCount'],
      [{ userId: 'not-a-uuid', maxLoraCount: 3 }, 'userId'],
      [{ userId: `${userId}x`, maxStorageBytes: GiB }, 'userId'],
    ];
    for (const [variables, path] of cases) {
      const res = await server.request(SetUserLoraQuotaDocument, variables, { token: admin });
      expectBadUserInput(res, path);
      expect(res.body.data?.setUserLoraQuota ?? null, JSON.stringify(variables)).toBeNull();
    }
    // As a literal (a hand-written document: Bytes' literal parsing is the point).
    expectBadUserInput(
      await server.gql(`mutation { setUserLoraQuota(userId: "${userId}", maxStorageBytes: -5) { userId } }`, {}, { token: admin }),
    );
    expectBadUserInput(await server.request(LoraQuotaDocument, { userId: 'nope' }, { token: admin }), 'userId');
    expect(await quotaOf(server, userId)).toMatchObject({ maxStorageBytes: 3 * GiB, maxLoraCount: 9 });

    // Users may neither set quotas (not even their own) nor read another user's.
    const userToken = await server.tokens.user(userId);
    const bySelf = await server.request(
      SetUserLoraQuotaDocument,
      { userId, maxStorageBytes: 100 * GiB, maxLoraCount: 1000 },
      { token: userToken },
    );
    expectThrownCode(bySelf, 'FORBIDDEN');
    expect(bySelf.body.data?.setUserLoraQuota ?? null).toBeNull();
    const peek = await server.request(LoraQuotaDocument, { userId: newUserId() }, { token: userToken });
    expectThrownCode(peek, 'FORBIDDEN');
    expectThrownCode(
      await server.request(SetUserLoraQuotaDocument, { userId, maxLoraCount: 1 }, { token: await server.tokens.machine() }),
      'FORBIDDEN',
    );
    expectThrownCode(await server.request(SetUserLoraQuotaDocument, { userId, maxLoraCount: 1 }), 'UNAUTHENTICATED');
    expect(await quotaOf(server, userId)).toMatchObject({ maxStorageBytes: 3 * GiB, maxLoraCount: 9 });
  });

  it('refuses a LoRA over the count or byte limit at finalize (QuotaExceededError) and leaves usage unchanged', async () => {
    const userId = newUserId();
    await setQuota(userId, null, 2);
    const first = await seedLora(server.app, userId, { name: 'one', bytes: sizedLora(1) });
    const second = await seedLora(server.app, userId, { name: 'two', bytes: sizedLora(2) });
    const used = first.sizeBytes + second.sizeBytes;
    const { registry } = server.app.services;

    async function attempt(bytes: Buffer): Promise<{ fileId: bigint; error: unknown }> {
      const { fileId, blobPath } = await registry.begin({
        userId,
        name: 'third',
        fileName: 'third.safetensors',
        format: 'SAFETENSORS',
        tags: [],
      });
      await server.app.blobs.put(blobPath, bytes);
      const error = await registry
        .finalize(
          { role: 'user', userId },
          {
            fileId,
            sizeBytes: bytes.length,
            sha256: sha256(bytes),
            baseModel: 'SD1',
            baseModelSource: 'METADATA',
            rank: 4,
            alpha: 2,
            metadata: {},
            uploadSource: 'api',
          },
        )
        .then(
          () => undefined,
          (e: unknown) => e,
        );
      return { fileId, error };
    }

    const byCount = await attempt(sizedLora(0));
    expect(byCount.error).toBeInstanceOf(QuotaExceededError);
    expect((byCount.error as QuotaExceededError).code).toBe('QUOTA_EXCEEDED');
    expect((byCount.error as QuotaExceededError).figures).toMatchObject({ currentCount: 2, maxCount: 2, currentUsageBytes: used });
    expect(await quotaRow(server, userId)).toEqual({ usedBytes: used, count: 2 });

    // Room by count, not by bytes: one byte short.
    const third = sizedLora(0);
    await setQuota(userId, used + third.length - 1, 10);
    const byBytes = await attempt(third);
    expect(byBytes.error).toBeInstanceOf(QuotaExceededError);
    expect((byBytes.error as QuotaExceededError).figures).toMatchObject({ availableBytes: third.length - 1, currentUsageBytes: used });
    expect(await quotaRow(server, userId)).toEqual({ usedBytes: used, count: 2 });

    for (const { fileId } of [byCount, byBytes]) {
      const row = await server.app.db.lora.findUniqueOrThrow({ where: { file_id: fileId } });
      expect(row.status).not.toBe('READY');
      expect((await server.app.db.flat_file.findUniqueOrThrow({ where: { id: fileId } })).hidden).toBe(true);
    }
    const list = await listLoras(server, await server.tokens.user(userId), {});
    expect(list.loras.map((l) => l.name).sort()).toEqual(['one', 'two']);
    expect(await quotaOf(server, userId)).toMatchObject({ usedStorageBytes: used, loraCount: 2 });

    // Exactly at the limit fits.
    await setQuota(userId, used + third.length, 3);
    const fits = await attempt(third);
    expect(fits.error).toBeUndefined();
    expect(await quotaRow(server, userId)).toEqual({ usedBytes: used + third.length, count: 3 });
  });
});
