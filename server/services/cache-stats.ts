import { z } from 'zod';
import type { Principal } from '../auth/principal.ts';
import type { Db } from '../db/client.ts';
import { RequestError, RequestErrorCode } from '../domain/errors.ts';
import { parseArgs } from '../domain/validation.ts';

/** Machines' cache figures: stored as history, read as the latest report per machine. */

export interface CacheStatsInput {
  totalLoraCacheBytes: number;
  maxLoraCacheBytes: number;
  userLoraCount: number;
  sharedLoraCount: number;
  cacheHitRate24h: number;
  evictions24h: number;
  oldestLoraAgeDays: number;
}

export interface MachineCacheStats extends CacheStatsInput {
  machineId: string;
  utilizationPercent: number;
  reportedAt: Date;
}

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

interface ReportRow {
  machine_id: string;
  reported_at: Date;
  total_lora_cache_bytes: bigint;
  max_lora_cache_bytes: bigint;
  user_lora_count: number;
  shared_lora_count: number;
  cache_hit_rate_24h: number;
  evictions_24h: number;
  oldest_lora_age_days: number;
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

  async latest(machineId?: string | null): Promise<MachineCacheStats[]> {
    const rows = machineId
      ? await this.db.$queryRaw<ReportRow[]>`
          SELECT * FROM machine_cache_report WHERE machine_id = ${machineId}
          ORDER BY reported_at DESC, id DESC LIMIT 1`
      : await this.db.$queryRaw<ReportRow[]>`
          SELECT DISTINCT ON (machine_id) * FROM machine_cache_report
          ORDER BY machine_id, reported_at DESC, id DESC`;
    return rows.map((r) => {
      const total = Number(r.total_lora_cache_bytes);
      const max = Number(r.max_lora_cache_bytes);
      return {
        machineId: r.machine_id,
        totalLoraCacheBytes: total,
        maxLoraCacheBytes: max,
        utilizationPercent: max > 0 ? Math.round((total / max) * 10_000) / 100 : 0,
        userLoraCount: r.user_lora_count,
        sharedLoraCount: r.shared_lora_count,
        cacheHitRate24h: r.cache_hit_rate_24h,
        evictions24h: r.evictions_24h,
        oldestLoraAgeDays: r.oldest_lora_age_days,
        reportedAt: r.reported_at,
      };
    });
  }
}
