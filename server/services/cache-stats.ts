import { z } from 'zod';
import type { Principal } from '../auth/principal.ts';
import type { Db } from '../db/client.ts';
import { type machine_cache_report, Prisma } from '../db/generated/client.ts';
import { RequestError, RequestErrorCode } from '../domain/errors.ts';
import { parseArgs } from '../domain/validation.ts';

/** Machines' cache figures: stored as history, read as the latest report per machine. */

const count = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const statsInput = z.object({
  totalLoraCacheBytes: count,
  maxLoraCacheBytes: count,
  userLoraCount: count,
  sharedLoraCount: count,
  cacheHitRate24h: z.number().min(0).max(1),
  evictions24h: count,
  oldestLoraAgeDays: z.number().min(0).max(100_000),
});

/** A Prisma selection of report columns; Pothos builds it from the GraphQL selection. */
export interface ReportQuery {
  select?: Prisma.machine_cache_reportSelect;
}

export class CacheStatsService {
  constructor(private readonly db: Db) {}

  /** A machine reports its own cache figures (the machine id comes from its token); validated here. */
  async report(principal: Principal, input: unknown): Promise<void> {
    if (principal.role !== 'machine') throw new RequestError(RequestErrorCode.FORBIDDEN, 'Only machines report cache stats');
    const s = parseArgs(statsInput, input, 'input');
    await this.db.machine_cache_report.create({
      data: {
        machine_id: principal.machineId,
        total_lora_cache_bytes: BigInt(s.totalLoraCacheBytes),
        max_lora_cache_bytes: BigInt(s.maxLoraCacheBytes),
        user_lora_count: s.userLoraCount,
        shared_lora_count: s.sharedLoraCount,
        cache_hit_rate_24h: s.cacheHitRate24h,
        evictions_24h: s.evictions24h,
        oldest_lora_age_days: s.oldestLoraAgeDays,
      },
    });
  }

  /**
   * Admins: the latest report of every machine (or of one), machine ids ascending. Two statements:
   * the latest report ids (DISTINCT ON over the (machine_id, reported_at DESC) index; Prisma's
   * `distinct` would read the whole history and pick in memory), then those rows with only the
   * columns `query` selects.
   */
  async latest(principal: Principal, machineId: string | null | undefined, query: ReportQuery = {}): Promise<machine_cache_report[]> {
    if (principal.role !== 'admin') throw new RequestError(RequestErrorCode.FORBIDDEN, "Only admins read machines' cache stats");
    const latest = await this.db.$queryRaw<{ id: bigint }[]>`
      SELECT DISTINCT ON (machine_id) id FROM machine_cache_report
      ${machineId ? Prisma.sql`WHERE machine_id = ${machineId}` : Prisma.empty}
      ORDER BY machine_id, reported_at DESC, id DESC`;
    if (latest.length === 0) return [];
    return this.db.machine_cache_report.findMany({
      ...query,
      where: { id: { in: latest.map((r) => r.id) } },
      orderBy: { machine_id: 'asc' },
    });
  }
}

/** Used / max as a percentage with two decimals; 0 when the machine reports no cap. */
export function cacheUtilizationPercent(totalBytes: bigint, maxBytes: bigint): number {
  const total = Number(totalBytes);
  const max = Number(maxBytes);
  return max > 0 ? Math.round((total / max) * 10_000) / 100 : 0;
}
