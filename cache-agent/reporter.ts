import type { CacheEventType, LoraClient } from '@lora-vault/sdk';
import type { Logger } from 'pino';
import type { CacheEntry, CacheSettings, CacheStore } from './store.ts';
import { SHARED_LORA, USER_LORA } from './store.ts';

/**
 * What the agent tells the API, always off the request path: usage of user LoRAs, cache events
 * (DOWNLOADED, EVICTED, DOWNLOAD_FAILED) and the periodic stats. Failures are logged, never
 * thrown: a report lost to an API outage must not fail a job.
 */

export interface CacheStats {
  totalLoraCacheBytes: number;
  maxLoraCacheBytes: number;
  utilizationPercent: number;
  userLoraCount: number;
  sharedLoraCount: number;
  cacheHitRate24h: number;
  evictions24h: number;
  oldestLoraAgeDays: number;
}

const DAY_MS = 86_400_000;

/** The seed's figures, from the index alone. */
export function computeStats(store: CacheStore, settings: CacheSettings, now: Date): CacheStats {
  let total = 0;
  let users = 0;
  let shared = 0;
  let oldest = Number.POSITIVE_INFINITY;
  for (const row of store.cacheRows()) {
    total += row.sizeBytes;
    if (row.modelType === USER_LORA) users++;
    else if (row.modelType === SHARED_LORA) shared++;
    const since = row.downloadDateMs ?? row.lastUsedMs;
    if (since !== null && since < oldest) oldest = since;
  }
  const c = store.counters24h(now);
  const lookups = c.hits + c.misses;
  return {
    totalLoraCacheBytes: total,
    maxLoraCacheBytes: settings.maxCacheBytes,
    utilizationPercent: settings.maxCacheBytes > 0 ? Math.round((total / settings.maxCacheBytes) * 10_000) / 100 : 0,
    userLoraCount: users,
    sharedLoraCount: shared,
    cacheHitRate24h: lookups > 0 ? c.hits / lookups : 0,
    evictions24h: c.evictions,
    oldestLoraAgeDays: Number.isFinite(oldest) ? Math.max(0, (now.getTime() - oldest) / DAY_MS) : 0,
  };
}

export interface Reporter {
  usage(grant: string, loraIds: string[], workflowId: string | null, workflowName: string | null): void;
  event(event: {
    type: Extract<CacheEventType, 'DOWNLOADED' | 'EVICTED' | 'DOWNLOAD_FAILED'>;
    loraId?: string;
    sharedName?: string;
    reason?: string;
  }): void;
  evicted(entry: CacheEntry | null, reason: string): void;
  stats(stats: CacheStats): Promise<boolean>;
  /** Waits for reports in flight (at shutdown). */
  flush(): Promise<void>;
}

export function createReporter(client: LoraClient | null, logger: Logger): Reporter {
  const pending = new Set<Promise<unknown>>();
  const track = (what: string, work: (api: LoraClient) => Promise<unknown>) => {
    if (!client) return;
    const p = work(client)
      .catch((error: unknown) => logger.warn({ err: error }, `could not report ${what} to the API`))
      .finally(() => pending.delete(p));
    pending.add(p);
  };
  const reporter: Reporter = {
    usage(grant, loraIds, workflowId, workflowName) {
      if (loraIds.length === 0) return;
      track('usage', (api) => api.recordUsage({ grant, loraIds, workflowId, workflowName }));
    },
    event(event) {
      track(`a ${event.type} event`, (api) => api.reportCacheEvent({ input: { ...event, reason: event.reason?.slice(0, 500) ?? null } }));
    },
    evicted(entry, reason) {
      if (!entry) return;
      reporter.event({
        type: 'EVICTED',
        ...(entry.loraId ? { loraId: entry.loraId } : {}),
        ...(entry.sharedName ? { sharedName: entry.sharedName } : {}),
        reason,
      });
    },
    async stats(stats) {
      if (!client) return false;
      try {
        const { utilizationPercent: _derived, ...input } = stats;
        return await client.reportCacheStats({ input });
      } catch (error) {
        logger.warn({ err: error }, 'could not report cache stats to the API');
        return false;
      }
    },
    async flush() {
      await Promise.allSettled([...pending]);
    },
  };
  return reporter;
}
