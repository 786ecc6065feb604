import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type CacheStatsInput, LoraCacheStatsDocument, ReportCacheStatsDocument } from '../../sdk/index.ts';
import { dataOf } from '../testkit/graphql-assertions.ts';
import { expectBadUserInput, expectThrownCode } from '../testkit/library-helpers.ts';
import { newUserId } from '../testkit/seed.ts';
import { startTestServer, type TestServer } from '../testkit/server.ts';

/** GPU machines report their cache (`reportCacheStats`); admins read the latest report per machine (`loraCacheStats`). */

const GiB = 1024 ** 3;

describe('machine cache stats', () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer();
  });
  afterAll(async () => {
    await server?.stop();
  });

  const input = (over: Partial<CacheStatsInput> = {}): CacheStatsInput => ({
    totalLoraCacheBytes: 3 * GiB,
    maxLoraCacheBytes: 8 * GiB,
    userLoraCount: 12,
    sharedLoraCount: 3,
    cacheHitRate24h: 0.75,
    evictions24h: 4,
    oldestLoraAgeDays: 2.5,
    ...over,
  });

  async function statsFor(machineIds: string[]) {
    const res = await server.request(LoraCacheStatsDocument, {}, { token: await server.tokens.admin() });
    return dataOf(res).loraCacheStats.filter((s) => machineIds.includes(s.machineId));
  }

  it('keeps the latest report per machine and computes utilizationPercent', async () => {
    const m1 = `gpu-${randomUUID()}`;
    const m2 = `gpu-${randomUUID()}`;
    const t1 = await server.tokens.machine(m1);
    const t2 = await server.tokens.machine(m2);
    const before = Date.now();
    expect((await server.request(ReportCacheStatsDocument, { input: input() }, { token: t1 })).body).toEqual({
      data: { reportCacheStats: true },
    });
    expect(
      (
        await server.request(
          ReportCacheStatsDocument,
          { input: input({ totalLoraCacheBytes: 6 * GiB, userLoraCount: 20, cacheHitRate24h: 0.9 }) },
          { token: t1 },
        )
      ).body.data,
    ).toEqual({ reportCacheStats: true });
    expect(
      (
        await server.request(
          ReportCacheStatsDocument,
          { input: input({ totalLoraCacheBytes: 0, maxLoraCacheBytes: 0, cacheHitRate24h: 0, evictions24h: 0 }) },
          { token: t2 },
        )
      ).body.data,
    ).toEqual({ reportCacheStats: true });

    const stats = await statsFor([m1, m2]);
    expect(stats).toHaveLength(2);
    const s1 = stats.find((s) => s.machineId === m1);
    const s2 = stats.find((s) => s.machineId === m2);
    expect(s1).toMatchObject({
      totalLoraCacheBytes: 6 * GiB,
      maxLoraCacheBytes: 8 * GiB,
      utilizationPercent: 75,
      userLoraCount: 20,
      sharedLoraCount: 3,
      cacheHitRate24h: 0.9,
      evictions24h: 4,
      oldestLoraAgeDays: 2.5,
    });
    expect(Date.parse(s1?.reportedAt ?? '')).toBeGreaterThanOrEqual(before - 5_000);
    expect(s2).toMatchObject({ totalLoraCacheBytes: 0, maxLoraCacheBytes: 0, utilizationPercent: 0, cacheHitRate24h: 0 });

    const one = await server.request(LoraCacheStatsDocument, { machineId: m1 }, { token: await server.tokens.admin() });
    expect(one.body.data?.loraCacheStats).toEqual([s1]);
    const unknown = await server.request(
      LoraCacheStatsDocument,
      { machineId: `gpu-${randomUUID()}` },
      { token: await server.tokens.admin() },
    );
    expect(unknown.body.data?.loraCacheStats).toEqual([]);

    // A third of the cache: rounded to two decimals.
    await server.request(ReportCacheStatsDocument, { input: input({ totalLoraCacheBytes: 1000, maxLoraCacheBytes: 3000 }) }, { token: t2 });
    const [third] = await statsFor([m2]);
    expect(third?.utilizationPercent).toBe(33.33);
  });

  it('rejects invalid reports (negative bytes or counts, hit rate outside 0–1) and stores nothing; only machines report, only admins read', async () => {
    const machineId = `gpu-${randomUUID()}`;
    const token = await server.tokens.machine(machineId);
    expect((await server.request(ReportCacheStatsDocument, { input: input() }, { token })).body.data).toEqual({ reportCacheStats: true });
    const bad: [Partial<CacheStatsInput>, string | undefined][] = [
      [{ totalLoraCacheBytes: -1 }, undefined],
      [{ maxLoraCacheBytes: -8 * GiB }, undefined],
      [{ cacheHitRate24h: 1.01 }, 'input.cacheHitRate24h'],
      [{ cacheHitRate24h: -0.1 }, 'input.cacheHitRate24h'],
      [{ userLoraCount: -3 }, 'input.userLoraCount'],
      [{ evictions24h: -1 }, 'input.evictions24h'],
      [{ oldestLoraAgeDays: -2 }, 'input.oldestLoraAgeDays'],
    ];
    for (const [over, path] of bad) {
      const res = await server.request(
        ReportCacheStatsDocument,
        { input: input({ ...over, userLoraCount: over.userLoraCount ?? 99 }) },
        { token },
      );
      expectBadUserInput(res, path);
      expect(res.body.data?.reportCacheStats ?? null, JSON.stringify(over)).toBeNull();
    }
    const [latest] = await statsFor([machineId]);
    expect(latest).toMatchObject({ userLoraCount: 12, totalLoraCacheBytes: 3 * GiB, cacheHitRate24h: 0.75 });
    expect(await server.app.db.machine_cache_report.count({ where: { machine_id: machineId } })).toBe(1);

    const userToken = await server.tokens.user(newUserId());
    expectThrownCode(await server.request(ReportCacheStatsDocument, { input: input() }, { token: userToken }), 'FORBIDDEN');
    expectThrownCode(await server.request(LoraCacheStatsDocument, {}, { token: userToken }), 'FORBIDDEN');
    expectThrownCode(await server.request(LoraCacheStatsDocument, {}, { token }), 'FORBIDDEN');
  });
});
