import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Principal } from '../../server/auth/principal.ts';
import { newUserId } from '../testkit/seed.ts';
import { startTestServer, type TestServer } from '../testkit/server.ts';

/** The cache-stats service decides on its own (not the resolver): who may report, and what. */

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer();
});
afterAll(() => server?.stop());

const STATS = {
  totalLoraCacheBytes: 1_000,
  maxLoraCacheBytes: 4_000,
  userLoraCount: 1,
  sharedLoraCount: 0,
  cacheHitRate24h: 0.5,
  evictions24h: 0,
  oldestLoraAgeDays: 1,
};

describe('CacheStatsService.report', () => {
  it('refuses every role but a machine, and stores nothing for them', async () => {
    const machineId = `svc-check-${newUserId()}`;
    const stats = server.app.services.cacheStats;
    for (const principal of [
      { role: 'user', userId: newUserId() },
      { role: 'admin', subject: 'an-admin' },
      { role: 'service', subject: 'dispatcher' },
      { role: 'anonymous' },
    ] satisfies Principal[]) {
      await expect(stats.report(principal, STATS), principal.role).rejects.toMatchObject({ code: 'FORBIDDEN' });
    }
    await stats.report({ role: 'machine', machineId }, STATS);
    expect(await server.app.db.machine_cache_report.count({ where: { machine_id: machineId } })).toBe(1);
  });

  it('validates the input itself: a hit rate over 1 or a negative count is a ValidationError naming the field', async () => {
    const machine = { role: 'machine', machineId: `svc-check-${newUserId()}` } as const;
    const stats = server.app.services.cacheStats;
    await expect(stats.report(machine, { ...STATS, cacheHitRate24h: 1.5 })).rejects.toMatchObject({
      code: 'VALIDATION_FAILED',
      issues: [{ path: 'input.cacheHitRate24h' }],
    });
    await expect(stats.report(machine, { ...STATS, evictions24h: -1 })).rejects.toMatchObject({
      issues: [{ path: 'input.evictions24h' }],
    });
    await expect(stats.report(machine, 'not an object')).rejects.toMatchObject({ code: 'VALIDATION_FAILED' });
    expect(await server.app.db.machine_cache_report.count({ where: { machine_id: machine.machineId } })).toBe(0);
  });
});

describe('CacheStatsService.latest', () => {
  it("answers admins only, with the latest report per machine and only the columns asked for (Pothos's query)", async () => {
    const stats = server.app.services.cacheStats;
    const machineId = `svc-latest-${newUserId()}`;
    await stats.report({ role: 'machine', machineId }, STATS);
    await stats.report({ role: 'machine', machineId }, { ...STATS, userLoraCount: 7 });
    await expect(stats.latest({ role: 'machine', machineId }, machineId)).rejects.toMatchObject({ code: 'FORBIDDEN' });
    const admin = { role: 'admin', subject: 'an-admin' } as const;
    expect(await stats.latest(admin, machineId, { select: { machine_id: true, user_lora_count: true } })).toEqual([
      { machine_id: machineId, user_lora_count: 7 },
    ]);
    const all = await stats.latest(admin, undefined);
    expect(all.filter((r) => r.machine_id === machineId)).toHaveLength(1);
    expect(all.map((r) => r.machine_id)).toEqual([...all.map((r) => r.machine_id)].sort());
  });
});
