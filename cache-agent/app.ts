import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { createLoraClient, type LoraClient } from '@lora-vault/sdk';
import { Cron } from 'croner';
import { type Logger, pino } from 'pino';
import WebSocket from 'ws';
import type { AgentConfig, SettingOverrides } from './config.ts';
import { CacheCore, type CacheCoreDeps, type EnsureOptions, type EnsureResult } from './ensure.ts';
import { AgentError } from './errors.ts';
import { type EvictDeps, type EvictReport, evictByAge, evictNow } from './evict.ts';
import { GrantVerifier } from './grant-verifier.ts';
import { Invalidator } from './invalidation.ts';
import { JobRegistry } from './jobs.ts';
import { checkUsersDirIsolated, layoutFor, realPathLoose } from './layout.ts';
import { claimUsersDir } from './layout-setup.ts';
import { type LocalInterface, type LocalInterfaceHandlers, startLocalInterface } from './local-interface.ts';
import type { LoraRef } from './lora-refs.ts';
import { type CleanupReport, diskFreeBytes, startupCleanup, type VerifyReport, verifyAll } from './maintenance.ts';
import { type PrefetchOptions, type PrefetchResult, prefetchWorkflow } from './prefetch.ts';
import { type CacheStats, computeStats, createReporter } from './reporter.ts';
import { type CacheStore, openStore } from './store.ts';
import { countingEvictions, observeCache, tracedEnsure, traceHeaders } from './telemetry.ts';
import type { AgentTelemetry } from './telemetry-sdk.ts';

/**
 * The wiring: `buildAgent(config) → { start, stop, … }` puts the agent's parts together and does
 * no work of its own. Nothing runs at import, and building touches nothing on disk (the one-shot
 * CLI commands promise to change only what they are asked to). `start()` opens the index
 * (`model_cache.db`, writing the environment's setting overrides), cleans up, evicts by age,
 * subscribes, schedules and (optionally) listens.
 *
 * Where the work is: ensure.ts (hit, miss, download), prefetch.ts, evict.ts, invalidation.ts
 * (deletions upstream), reporter.ts (usage, events, stats), maintenance.ts (start-up cleanup,
 * verify), local-interface.ts (HTTP for ComfyUI nodes and job runners), main.ts (the CLI).
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

/** The parts that exist once `start()` has opened the index. */
interface Running {
  store: CacheStore;
  core: CacheCore;
  invalidator: Invalidator;
  /** core.ensure, traced and counted (telemetry.ts): what every caller uses. */
  ensure: CacheCore['ensure'];
}

export type Agent = ReturnType<typeof buildAgent>;

export function buildAgent(config: AgentConfig, options: AgentOptions = {}) {
  const logger = options.logger ?? pino({ level: config.logLevel, base: { machineId: config.machineId } });
  const now = options.now ?? (() => new Date());
  // Real paths, as ComfyUI's folder_paths uses: a symlinked COMFYUI_DIR names the same files.
  const layout = layoutFor({ loraDir: realPathLoose(config.loraDir), usersDir: realPathLoose(config.usersDir) });
  checkUsersDirIsolated(layout, [layout.loraRoot, realPathLoose(join(config.comfyDir, 'output/loras'))]);
  let running: Running | null = null;
  const client =
    options.client !== undefined
      ? options.client
      : config.api.url && config.api.token
        ? createLoraClient({
            url: config.api.url,
            token: config.api.token,
            webSocketImpl: WebSocket,
            wsRetryAttempts: 10,
            contextHeaders: traceHeaders, // one trace from /ensure to the API's SAS issue
            onConnected: () => void running?.invalidator.reconcile(),
          })
        : null;
  const ownsClient = options.client === undefined;
  const reporter = countingEvictions(createReporter(client, logger));
  const grants = new GrantVerifier({ source: client, logger, now, ...config.grantKeys });
  const timers: NodeJS.Timeout[] = [];
  let cron: Cron | null = null;
  let localInterface: LocalInterface | null = null;
  let cleanup: CleanupReport | null = null;
  let gauges: ReturnType<typeof observeCache> | null = null;
  let telemetry: AgentTelemetry | null = null;

  function parts(): Running {
    if (!running) throw new Error('the cache agent is not started: call start() first');
    return running;
  }
  const evictDeps = (): EvictDeps => ({ store: parts().store, layout, logger, reporter, now });

  /** For in-process callers (the CLI, tests); the local interface calls the core's ensure itself. */
  function ensure(ref: LoraRef, opts?: EnsureOptions): Promise<EnsureResult> {
    return parts().ensure(ref, opts);
  }

  function prefetch(workflow: unknown, grant: string | null, opts: PrefetchOptions = {}): Promise<PrefetchResult> {
    return prefetchWorkflow({ ensure: parts().ensure, reporter, concurrency: config.prefetchConcurrency }, workflow, grant, opts);
  }

  /** By the lease's token, or by holder with the job grant the leases were taken with. */
  async function release(by: Parameters<CacheStore['releaseLeases']>[0]): Promise<{ released: number }> {
    const { store, invalidator } = parts();
    const paths = await store.releaseLeases(by);
    if ('leaseId' in by && paths.length === 0)
      throw new AgentError('LEASE_NOT_FOUND', `no lease ${by.leaseId} (released already, or expired)`);
    await invalidator.evictPending();
    return { released: paths.length };
  }

  function stats(): CacheStats & { inflightDownloads: number; leasedFiles: number } {
    const { store, core } = parts();
    const t = now();
    return { ...computeStats(store, store.settings(), t), inflightDownloads: core.inflightCount, leasedFiles: store.leasedPaths(t).size };
  }

  async function reportStats(): Promise<boolean> {
    const { store } = parts();
    return reporter.stats(computeStats(store, store.settings(), now()));
  }

  async function sweep(): Promise<void> {
    const { store, invalidator } = parts();
    await store.prune(now());
    await invalidator.evictPending();
  }

  function health() {
    return { ok: true, api: client ? 'configured' : 'none', reconciliations: running?.invalidator.reconciliations ?? 0, cleanup };
  }

  return {
    config,
    layout,
    client,
    /** Verifies job grants against the API's keys (keyFetches counts fetches of the key set). */
    grants,
    /** The index (after start). */
    get store(): CacheStore {
      return parts().store;
    },
    /** ensure's hit / miss / download core (after start). */
    get core(): CacheCore {
      return parts().core;
    },
    get invalidator(): Invalidator {
      return parts().invalidator;
    },
    ensure,
    prefetch,
    release,
    stats,
    reportStats,
    evict: (dryRun: boolean): Promise<EvictReport> => evictNow(evictDeps(), dryRun),
    evictByAge: (): Promise<number> => evictByAge(evictDeps()),
    sweep,
    verify: (): Promise<VerifyReport> => verifyAll(parts().store, logger),
    health,
    /** The local interface's address once started (`http://127.0.0.1:port` or the socket path). */
    get address(): string | null {
      return localInterface?.address ?? null;
    },

    async start(startOptions: StartOptions = {}): Promise<void> {
      if (running) throw new Error('the cache agent is started already');
      // The daemon only (README "Observability"): one-shot CLI commands do not load the SDK (~1 s of CPU).
      if (startOptions.listen !== false) telemetry = (await import('./telemetry-sdk.ts')).startAgentTelemetry(config);
      const store = openStore(config.dbPath, {
        create: config.createDb,
        busyTimeoutMs: config.dbBusyTimeoutMs,
        onCorrupt: (movedTo, error) =>
          logger.error({ err: error, movedTo }, 'model_cache.db was corrupt: moved aside, rebuilding the index from the files on disk'),
      });
      const core = new CacheCore({
        config,
        store,
        layout,
        client,
        logger,
        reporter,
        grants,
        now,
        ...(options.downloadTuning ? { downloadTuning: options.downloadTuning } : {}),
      });
      const invalidator = new Invalidator({ store, client, logger, reporter, now });
      running = { store, core, invalidator, ensure: tracedEnsure(core.ensure.bind(core)) };
      applyOverrides(store, config.overrides);
      await claimUsersDir(layout);
      await mkdir(layout.locksDir, { recursive: true });
      if (startOptions.maintain !== false) {
        // The daemon's start only (one-shot commands skip it): it parses every row's timestamp.
        const future = store.futureRows(now());
        if (future > 0) {
          logger.warn(
            { rows: future, tz: process.env.TZ ?? null },
            `model_cache.db holds ${future} row(s) dated in the future: the Python nodes write naive local times in another time zone; run both with the same TZ`,
          );
        }
        cleanup = await startupCleanup(store, layout, logger, now());
        // Leases an older agent granted without a cap (e.g. 7 days) end within the cap too.
        await store.capLeases(new Date(now().getTime() + config.leaseMaxSeconds * 1000));
        await evictByAge(evictDeps());
      }
      timers.push(setInterval(() => store.flushTouches(), 1000));
      if (startOptions.subscribe !== false) invalidator.start();
      if (startOptions.schedule !== false) {
        cron = new Cron(config.ageEvictionCron, { protect: true }, async () => {
          await evictByAge(evictDeps()).catch((error) => logger.error({ err: error }, 'age eviction failed'));
        });
        timers.push(setInterval(() => void sweep().catch((error) => logger.warn({ err: error }, 'lease sweep failed')), 30_000));
        if (config.statsIntervalSeconds > 0 && client) {
          timers.push(setInterval(() => void reportStats(), config.statsIntervalSeconds * 1000));
          void reportStats();
        }
      }
      gauges = observeCache(async () => {
        const settings = store.settings();
        const t = now();
        return {
          usedBytes: computeStats(store, settings, t).totalLoraCacheBytes,
          capBytes: settings.maxCacheBytes,
          diskFreeBytes: await diskFreeBytes(layout.usersDir),
          diskFloorBytes: settings.minFreeBytes,
          leases: store.leasedPaths(t).size,
        };
      });
      if (startOptions.listen !== false) {
        const { ensure, core } = running;
        const verifyGrant = (grant: string) => grants.verify(grant);
        const leaseFile = (path: string, lease: Parameters<CacheCore['leaseFile']>[1]) => core.leaseFile(path, lease);
        const jobs = new JobRegistry({ config, ensure, prefetch, release, verifyGrant, leaseFile }, logger);
        const prometheus = config.telemetry.metricsEnabled ? () => telemetry?.prometheus ?? null : null;
        const handlers: LocalInterfaceHandlers = { health, stats, ensure, prefetch, release, jobs, prometheus };
        localInterface = await startLocalInterface(handlers, config.listen, config.allowedHosts, logger);
      }
      logger.info(
        {
          loraDir: layout.loraRoot,
          usersDir: layout.usersDir,
          db: config.dbPath,
          address: localInterface?.address ?? null,
          api: config.api.url,
        },
        'cache agent started',
      );
    },

    async stop(): Promise<void> {
      gauges?.stop();
      running?.core.stop();
      cron?.stop();
      for (const t of timers) clearInterval(t);
      await localInterface?.close();
      await running?.invalidator.stop();
      await reporter.close();
      if (ownsClient) await client?.close();
      await rm(layout.processTempDir, { recursive: true, force: true });
      await rm(layout.sharedProcessTempDir, { recursive: true, force: true });
      running?.store.close();
    },
  };
}

/** Environment values of the settings the Python nodes share override (and rewrite) the table. */
function applyOverrides(store: CacheStore, overrides: SettingOverrides): void {
  const values: Record<string, string> = {};
  if (overrides.maxCacheGb !== undefined) values.lora_cache_max_gb = String(overrides.maxCacheGb);
  if (overrides.maxAgeDays !== undefined) values.lora_max_age_days = String(overrides.maxAgeDays);
  if (overrides.evictionEnabled !== undefined) values.lora_eviction_enabled = String(overrides.evictionEnabled);
  if (overrides.minFreeSpaceGb !== undefined) values.min_free_space_gb = String(overrides.minFreeSpaceGb);
  if (overrides.minFreeHardGb !== undefined) values.lora_min_free_hard_gb = String(overrides.minFreeHardGb);
  if (Object.keys(values).length) store.putSettings(values);
}
