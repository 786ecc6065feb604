import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { createLoraClient, type LoraClient } from '@lora-vault/sdk';
import { Cron } from 'croner';
import { type Logger, pino } from 'pino';
import WebSocket from 'ws';
import { CacheCore, type CacheCoreDeps, type EnsureOptions, type EnsureResult, type LoraRef } from './agent.ts';
import type { AgentConfig, SettingOverrides } from './config.ts';
import { AgentError } from './errors.ts';
import type { EvictionPlan } from './eviction.ts';
import { type AgentHttpServer, startHttpInterface } from './http.ts';
import { Invalidator } from './invalidation.ts';
import { checkUsersDirIsolated, layoutFor, realPathLoose } from './layout.ts';
import { claimUsersDir } from './layout-setup.ts';
import {
  type CleanupReport,
  diskFreeBytes,
  executeEviction,
  planForAge,
  planForSpace,
  startupCleanup,
  type VerifyReport,
  verifyAll,
} from './maintenance.ts';
import { type CacheStats, computeStats, createReporter } from './reporter.ts';
import { type CacheStore, openStore } from './store.ts';
import { scanWorkflow, type WorkflowLoraRef } from './workflow.ts';

/**
 * The agent, built from its config: `buildAgent(config) → { start, stop, … }`. Nothing runs at
 * import; `start()` cleans up, evicts by age, subscribes, schedules and (optionally) listens.
 */

export interface AgentOptions {
  logger?: Logger;
  /** The clock (tests move it). @default () => new Date() */
  now?: () => Date;
  /** An API client; @default one built from config.api (null when unconfigured: cache-only mode). */
  client?: LoraClient | null;
  downloadTuning?: CacheCoreDeps['downloadTuning'];
}

export interface StartOptions {
  /** Serve the local HTTP interface. @default true */
  listen?: boolean;
  /** Follow cacheEvents and reconcile. @default true */
  subscribe?: boolean;
  /** Daily age eviction, minute stats, lease sweeps. @default true */
  schedule?: boolean;
  /**
   * Start-up cleanup (temp leftovers, rows without files, files without rows) and age eviction.
   * The daemon does it; one-shot CLI commands (`stats`, `evict --dry-run`, …) must change nothing
   * they were not asked to. @default true
   */
  maintain?: boolean;
}

export interface PrefetchItem {
  ref: WorkflowLoraRef;
  result?: EnsureResult;
  error?: ReturnType<AgentError['toJSON']>;
}

export interface PrefetchResult {
  format: 'api' | 'nodes';
  items: PrefetchItem[];
  problems: { nodeId: string; message: string }[];
}

export interface EvictReport {
  dryRun: boolean;
  age: { victims: string[]; bytesFreed: number };
  overCap: { victims: string[]; bytesFreed: number; fits: boolean };
}

export type Agent = ReturnType<typeof buildAgent>;

export function buildAgent(config: AgentConfig, options: AgentOptions = {}) {
  const logger = options.logger ?? pino({ level: config.logLevel, base: { machineId: config.machineId } });
  const now = options.now ?? (() => new Date());
  // Real paths, as ComfyUI's folder_paths uses: a symlinked COMFYUI_DIR names the same files.
  const layout = layoutFor({ loraDir: realPathLoose(config.loraDir), usersDir: realPathLoose(config.usersDir) });
  checkUsersDirIsolated(layout, [layout.loraRoot, realPathLoose(join(config.comfyDir, 'output/loras'))]);
  const store = openStore(config.dbPath, {
    create: config.createDb,
    busyTimeoutMs: config.dbBusyTimeoutMs,
    onCorrupt: (movedTo, error) =>
      logger.error({ err: error, movedTo }, 'model_cache.db was corrupt: moved aside, rebuilding the index from the files on disk'),
  });
  applyOverrides(store, config.overrides);
  let invalidator: Invalidator | null = null;
  const client =
    options.client !== undefined
      ? options.client
      : config.api.url && config.api.token
        ? createLoraClient({
            url: config.api.url,
            token: config.api.token,
            webSocketImpl: WebSocket,
            wsRetryAttempts: 10,
            onConnected: () => void invalidator?.reconcile(),
          })
        : null;
  const ownsClient = options.client === undefined;
  const reporter = createReporter(client, logger);
  const core = new CacheCore({
    config,
    store,
    layout,
    client,
    logger,
    reporter,
    now,
    ...(options.downloadTuning ? { downloadTuning: options.downloadTuning } : {}),
  });
  invalidator = new Invalidator({ store, client, logger, reporter, now });
  const timers: NodeJS.Timeout[] = [];
  let cron: Cron | null = null;
  let http: AgentHttpServer | null = null;
  let cleanup: CleanupReport | null = null;

  async function evictByAge(): Promise<number> {
    const settings = store.settings();
    if (!settings.evictionEnabled) return 0;
    const t = now();
    const plan = planForAge(store, settings, t);
    const result = await executeEviction(plan, `unused for ${settings.maxAgeDays} days`, {
      store,
      logger,
      now: t,
      onEvicted: (_r, e) => reporter.evicted(e, 'age'),
    });
    return result.evicted.length;
  }

  async function evict(dryRun: boolean): Promise<EvictReport> {
    const settings = store.settings();
    const t = now();
    const age = planForAge(store, settings, t);
    const overCap: EvictionPlan = planForSpace(
      store,
      settings,
      { neededBytes: 0, reservedBytes: 0, diskFree: await diskFreeBytes(layout.usersDir) },
      t,
    );
    const report: EvictReport = {
      dryRun,
      age: { victims: age.victims.map((v) => v.path), bytesFreed: age.bytesFreed },
      overCap: { victims: overCap.victims.map((v) => v.path), bytesFreed: overCap.bytesFreed, fits: overCap.fits },
    };
    if (!dryRun) {
      await executeEviction(age, 'age (manual)', { store, logger, now: t, onEvicted: (_r, e) => reporter.evicted(e, 'age') });
      await executeEviction(
        planForSpace(store, settings, { neededBytes: 0, reservedBytes: 0, diskFree: await diskFreeBytes(layout.usersDir) }, t),
        'over the cap (manual)',
        {
          store,
          logger,
          now: t,
          onEvicted: (_r, e) => reporter.evicted(e, 'space'),
        },
      );
    }
    return report;
  }

  async function prefetch(
    workflow: unknown,
    grant: string | null,
    opts: Omit<EnsureOptions, 'recordUsage' | 'onProgress'> = {},
  ): Promise<PrefetchResult> {
    const scan = scanWorkflow(workflow);
    const items: PrefetchItem[] = scan.refs.map((ref) => ({ ref }));
    const queue = [...items];
    const worker = async () => {
      for (let item = queue.shift(); item; item = queue.shift()) {
        try {
          if (item.ref.source === 'user' && !grant)
            throw new AgentError('INVALID_GRANT', 'the workflow references user LoRAs: a job grant is required');
          const ref: LoraRef =
            item.ref.source === 'user'
              ? { source: 'user', id: item.ref.id, grant: grant as string }
              : { source: 'shared', name: item.ref.name };
          const lease = opts.lease ? { ...opts.lease, grant: opts.lease.grant ?? grant } : opts.lease;
          item.result = await core.ensure(ref, { ...opts, lease, recordUsage: false });
        } catch (error) {
          item.error = (error instanceof AgentError ? error : new AgentError('DOWNLOAD_FAILED', (error as Error).message)).toJSON();
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(config.prefetchConcurrency, items.length) }, worker));
    const used = items.flatMap((i) => (i.result && i.ref.source === 'user' ? [i.ref.id] : []));
    if (grant) reporter.usage(grant, used, opts.workflowId ?? null, opts.workflowName ?? null);
    return { format: scan.format, items, problems: scan.problems };
  }

  /** By the lease's token, or by holder with the job grant the leases were taken with. */
  async function release(by: { leaseId: string } | { holder: string; grant: string }): Promise<{ released: number }> {
    const paths = await store.releaseLeases(by);
    if ('leaseId' in by && paths.length === 0)
      throw new AgentError('LEASE_NOT_FOUND', `no lease ${by.leaseId} (released already, or expired)`);
    await invalidator?.evictPending();
    return { released: paths.length };
  }

  function stats(): CacheStats & { inflightDownloads: number; leasedFiles: number } {
    const t = now();
    return { ...computeStats(store, store.settings(), t), inflightDownloads: core.inflightCount, leasedFiles: store.leasedPaths(t).size };
  }

  async function reportStats(): Promise<boolean> {
    return reporter.stats(computeStats(store, store.settings(), now()));
  }

  async function sweep(): Promise<void> {
    await store.prune(now());
    await invalidator?.evictPending();
  }

  const agent = {
    config,
    store,
    layout,
    core,
    client,
    get invalidator(): Invalidator {
      return invalidator as Invalidator;
    },
    ensure: (ref: LoraRef, opts?: EnsureOptions) => core.ensure(ref, opts),
    prefetch,
    release,
    stats,
    reportStats,
    evict,
    evictByAge,
    sweep,
    verify: (): Promise<VerifyReport> => verifyAll(store, logger),
    health: () => ({ ok: true, api: client ? 'configured' : 'none', reconciliations: invalidator?.reconciliations ?? 0, cleanup }),
    /** The local interface's address once started (`http://127.0.0.1:port` or the socket path). */
    get address(): string | null {
      return http?.address ?? null;
    },

    async start(startOptions: StartOptions = {}): Promise<void> {
      await claimUsersDir(layout);
      await mkdir(layout.locksDir, { recursive: true });
      const future = store.futureRows(now());
      if (future > 0) {
        logger.warn(
          { rows: future, tz: process.env.TZ ?? null },
          `model_cache.db holds ${future} row(s) dated in the future: the Python nodes write naive local times in another time zone; run both with the same TZ`,
        );
      }
      if (startOptions.maintain !== false) {
        cleanup = await startupCleanup(store, layout, logger, now());
        // Leases an older agent granted without a cap (e.g. 7 days) end within the cap too.
        await store.capLeases(new Date(now().getTime() + config.leaseMaxSeconds * 1000));
        await evictByAge();
      }
      timers.push(setInterval(() => store.flushTouches(), 1000));
      if (startOptions.subscribe !== false) invalidator?.start();
      if (startOptions.schedule !== false) {
        cron = new Cron(config.ageEvictionCron, { protect: true }, async () => {
          await evictByAge().catch((error) => logger.error({ err: error }, 'age eviction failed'));
        });
        timers.push(setInterval(() => void sweep().catch((error) => logger.warn({ err: error }, 'lease sweep failed')), 30_000));
        if (config.statsIntervalSeconds > 0 && client) {
          timers.push(setInterval(() => void reportStats(), config.statsIntervalSeconds * 1000));
          void reportStats();
        }
      }
      if (startOptions.listen !== false) http = await startHttpInterface(agent, config.listen, logger);
      logger.info(
        { loraDir: layout.loraRoot, usersDir: layout.usersDir, db: config.dbPath, address: http?.address ?? null, api: config.api.url },
        'cache agent started',
      );
    },

    async stop(): Promise<void> {
      core.stop();
      cron?.stop();
      for (const t of timers) clearInterval(t);
      await http?.close();
      await invalidator?.stop();
      await reporter.close();
      if (ownsClient) await client?.close();
      await rm(layout.processTempDir, { recursive: true, force: true });
      await rm(layout.sharedProcessTempDir, { recursive: true, force: true });
      store.close();
    },
  };
  return agent;
}

function applyOverrides(store: CacheStore, overrides: SettingOverrides): void {
  const values: Record<string, string> = {};
  if (overrides.maxCacheGb !== undefined) values.lora_cache_max_gb = String(overrides.maxCacheGb);
  if (overrides.maxAgeDays !== undefined) values.lora_max_age_days = String(overrides.maxAgeDays);
  if (overrides.evictionEnabled !== undefined) values.lora_eviction_enabled = String(overrides.evictionEnabled);
  if (overrides.minFreeSpaceGb !== undefined) values.min_free_space_gb = String(overrides.minFreeSpaceGb);
  if (overrides.minFreeHardGb !== undefined) values.lora_min_free_hard_gb = String(overrides.minFreeHardGb);
  if (Object.keys(values).length) store.putSettings(values);
}
