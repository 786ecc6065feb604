import { unlink } from 'node:fs/promises';
import { backoffDelay, type CacheEvent, type LoraClient } from '@lora-vault/sdk';
import type { Logger } from 'pino';
import type { Reporter } from './reporter.ts';
import type { CacheStore } from './store.ts';

/**
 * Keeps the cache honest about deletions: `LORA_DELETED` events from the `cacheEvents`
 * subscription evict at once (or as soon as the file's leases end), and after every (re)connect
 * the cached user LoRAs are reconciled with the API, which catches deletions missed while away.
 */

const RECONCILE_BATCH = 1000;
/** Between re-subscriptions once the SDK's own reconnects gave up (full jitter, the SDK's backoff). */
const RESUBSCRIBE_BACKOFF = { retries: Number.POSITIVE_INFINITY, baseDelayMs: 500, maxDelayMs: 30_000 };

export interface InvalidatorDeps {
  store: CacheStore;
  client: LoraClient | null;
  logger: Logger;
  reporter: Reporter;
  now: () => Date;
}

export class Invalidator {
  private running = false;
  private iterator: AsyncGenerator<CacheEvent, void, undefined> | null = null;
  private reconciling: Promise<void> | null = null;
  private again = false;
  /** Completed reconciliations (tests and health). */
  reconciliations = 0;

  constructor(private readonly deps: InvalidatorDeps) {}

  /** A LoRA is gone upstream: hide it now, remove the file once no lease holds it. */
  async deleted(loraId: string, reason: string): Promise<void> {
    const entry = await this.deps.store.markPendingDelete(loraId);
    if (entry) this.deps.logger.info({ loraId, path: entry.path, reason }, 'LoRA deleted upstream; evicting');
    await this.evictPending();
  }

  /** Evicts every pending deletion that no live lease holds. */
  async evictPending(): Promise<number> {
    const { store, logger, reporter } = this.deps;
    let evicted = 0;
    for (const entry of store.pendingDeletes()) {
      if (!(await store.removeUnlessLeased(entry.path, this.deps.now(), { eviction: true }))) continue;
      await unlink(entry.path).catch((error: NodeJS.ErrnoException) => {
        if (error.code !== 'ENOENT') logger.warn({ err: error, path: entry.path }, 'could not remove a deleted LoRA file');
      });
      evicted++;
      logger.info({ loraId: entry.loraId, path: entry.path }, 'evicted a deleted LoRA');
      reporter.evicted(entry, 'deleted');
    }
    return evicted;
  }

  /** Asks the API which cached user LoRAs are still valid; the rest are evicted. Serialized. */
  reconcile(): Promise<void> {
    if (this.reconciling) {
      this.again = true;
      return this.reconciling;
    }
    this.reconciling = (async () => {
      do {
        this.again = false;
        await this.reconcileOnce().catch((error: unknown) =>
          this.deps.logger.warn({ err: error }, 'reconcile with the API failed; will retry on the next connection'),
        );
      } while (this.again);
    })().finally(() => {
      this.reconciling = null;
    });
    return this.reconciling;
  }

  private async reconcileOnce(): Promise<void> {
    const { store, client, logger } = this.deps;
    if (!client) return;
    const users = store
      .entries()
      .flatMap((e) =>
        e.source === 'user' && e.loraId && e.sha256 && !e.pendingDelete
          ? [{ path: e.path, loraId: e.loraId, sha256: e.sha256, verified: e.verified }]
          : [],
      );
    let invalid = 0;
    for (let i = 0; i < users.length; i += RECONCILE_BATCH) {
      const batch = users.slice(i, i + RECONCILE_BATCH);
      const valid = new Set(await client.lorasStillValid({ loras: batch.map((e) => ({ id: e.loraId, sha256: e.sha256 })) }));
      for (const entry of batch) {
        if (valid.has(entry.loraId)) {
          if (!entry.verified) await store.markVerified(entry.path);
          continue;
        }
        invalid++;
        await store.markPendingDelete(entry.loraId);
      }
    }
    const evicted = await this.evictPending();
    this.reconciliations++;
    logger.info({ checked: users.length, invalid, evicted }, 'reconciled cached user LoRAs with the API');
  }

  /** Follows `cacheEvents` until stop(); re-subscribes with backoff when the connection gives up. */
  start(): void {
    const { client, logger } = this.deps;
    if (!client || this.running) return;
    this.running = true;
    void (async () => {
      for (let failures = 0; this.running; ) {
        try {
          this.iterator = client.cacheEvents();
          for await (const event of this.iterator) {
            failures = 0;
            if (event.type === 'LORA_DELETED' && event.loraId) await this.deleted(String(event.loraId), 'LORA_DELETED event');
          }
        } catch (error) {
          if (!this.running) break;
          failures++;
          logger.warn({ err: error, failures }, 'cache event subscription lost; re-subscribing');
        }
        if (this.running) await new Promise((r) => setTimeout(r, backoffDelay(failures, RESUBSCRIBE_BACKOFF)));
      }
    })();
  }

  async stop(): Promise<void> {
    this.running = false;
    await this.iterator?.return(undefined).catch(() => {});
    await this.reconciling;
  }
}
