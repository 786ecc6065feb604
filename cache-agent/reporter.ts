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
  /** Queues a use of user LoRAs by a job; sent in batches (see createReporter). */
  usage(grant: string, loraIds: string[], workflowId: string | null, workflowName: string | null): void;
  event(event: {
    type: Extract<CacheEventType, 'DOWNLOADED' | 'EVICTED' | 'DOWNLOAD_FAILED'>;
    loraId?: string;
    sharedName?: string;
    reason?: string;
  }): void;
  evicted(entry: CacheEntry | null, reason: string): void;
  stats(stats: CacheStats): Promise<boolean>;
  /** Sends queued usage now and waits for every report in flight (at shutdown). */
  flush(): Promise<void>;
  /** Stops the batching timer (after a final flush). */
  close(): Promise<void>;
}

export interface ReporterOptions {
  /** How long usage waits to be batched. @default 1000 */
  usageBatchMs?: number;
  /** Job grants remembered for deduplication. @default 10000 */
  rememberGrants?: number;
}

/**
 * Usage counts one use per job (grant) and LoRA, however often the job ensures it: the hit path
 * only adds to an in-memory batch, which one request at a time sends (one `recordLoraUsage` per
 * job and workflow). Everything else is sent at once, fire-and-forget.
 */
export function createReporter(client: LoraClient | null, logger: Logger, options: ReporterOptions = {}): Reporter {
  const pending = new Set<Promise<unknown>>();
  const track = (what: string, work: (api: LoraClient) => Promise<unknown>) => {
    if (!client) return;
    const p = work(client)
      .catch((error: unknown) => logger.warn({ err: error }, `could not report ${what} to the API`))
      .finally(() => pending.delete(p));
    pending.add(p);
  };
  /** grant → LoRA ids already counted for that job (oldest grants forgotten first). */
  const counted = new Map<string, Set<string>>();
  /** `grant \0 workflowId \0 workflowName` → LoRA ids waiting to be sent. */
  const queued = new Map<string, { grant: string; workflowId: string | null; workflowName: string | null; ids: Set<string> }>();
  let sending: Promise<void> | null = null;
  const timer = client ? setInterval(() => void sendUsage(), options.usageBatchMs ?? 1000) : null;
  timer?.unref();

  function sendUsage(): Promise<void> {
    if (sending || queued.size === 0 || !client) return sending ?? Promise.resolve();
    const api = client;
    const batches = [...queued.values()];
    queued.clear();
    sending = (async () => {
      for (const b of batches) {
        try {
          await api.recordUsage({ grant: b.grant, loraIds: [...b.ids], workflowId: b.workflowId, workflowName: b.workflowName });
        } catch (error) {
          logger.warn({ err: error, loraIds: [...b.ids] }, 'could not report LoRA usage to the API');
        }
      }
    })().finally(() => {
      sending = null;
    });
    return sending;
  }

  const reporter: Reporter = {
    usage(grant, loraIds, workflowId, workflowName) {
      if (!client) return;
      let seen = counted.get(grant);
      if (!seen) {
        seen = new Set();
        counted.set(grant, seen);
        if (counted.size > (options.rememberGrants ?? 10_000)) counted.delete(counted.keys().next().value as string);
      }
      const fresh = loraIds.filter((id) => !seen.has(id));
      if (fresh.length === 0) return;
      for (const id of fresh) seen.add(id);
      const key = `${grant}\0${workflowId ?? ''}\0${workflowName ?? ''}`;
      let batch = queued.get(key);
      if (!batch) {
        batch = { grant, workflowId, workflowName, ids: new Set() };
        queued.set(key, batch);
      }
      for (const id of fresh) batch.ids.add(id);
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
      await sending;
      await sendUsage();
      await Promise.allSettled([...pending]);
    },
    async close() {
      await reporter.flush();
      if (timer) clearInterval(timer);
    },
  };
  return reporter;
}
