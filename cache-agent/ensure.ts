import { mkdir, open, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname } from 'node:path';
import type { LoraClient } from '@lora-vault/sdk';
import type { Logger } from 'pino';
import type { AgentConfig } from './config.ts';
import { fileIdOf, linkTwin } from './content-links.ts';
import { type DownloadOptions, type DownloadTarget, downloadToTemp } from './downloader.ts';
import { AgentError } from './errors.ts';
import type { GrantVerifier } from './grant-verifier.ts';
import { type Layout, type LoraFormat, lockKey, sharedLoraPath, userLoraPath } from './layout.ts';
import { type DownloadLock, isLocked, tryLock } from './lock.ts';
import type { LoraRef } from './lora-refs.ts';
import { diskFreeBytes, executeEviction, planForSpace } from './maintenance.ts';
import type { Reporter } from './reporter.ts';
import { fromSdkError } from './sdk-errors.ts';
import { adoptSharedFile, placeSharedFile } from './shared-files.ts';
import type { CacheEntry, CacheStore } from './store.ts';
import { countDownload, countDownloadFailure, countLink, inAgentSpan } from './telemetry.ts';

/**
 * ensure(ref) → a local path: the hit path (index lookup, stat, touch) and the miss path (make
 * room, one download per LoRA across callers and processes, verify, rename, register).
 */

export interface EnsureOptions {
  /**
   * Protect the file from eviction until released or expired. It ends at min(now + ttlSeconds
   * (default LEASE_TTL_SECONDS, capped at LEASE_MAX_SECONDS), the job grant's exp). `grant` binds it
   * to a job grant (default: the user ref's grant) so its holder can release it with that grant.
   */
  lease?: { ttlSeconds?: number; holder?: string | null; grant?: string | null } | null;
  /** Record a use of a user LoRA with the API (prefetch records one batch instead). @default true */
  recordUsage?: boolean;
  workflowId?: string | null;
  workflowName?: string | null;
  onProgress?: (bytesDone: number, totalBytes: number) => void;
}

export interface EnsureResult {
  path: string;
  hit: boolean;
  sizeBytes: number;
  sha256: string | null;
  source: 'user' | 'shared';
  loraId: string | null;
  sharedName: string | null;
  lease: { leaseId: string; expiresAt: string } | null;
}

export interface CacheCoreDeps {
  config: AgentConfig;
  store: CacheStore;
  layout: Layout;
  client: LoraClient | null;
  logger: Logger;
  reporter: Reporter;
  /** Verifies every job grant (hits included) against the API's published keys. */
  grants: GrantVerifier;
  now: () => Date;
  /** Test and benchmark tuning of the downloader (part size, retry delays). */
  downloadTuning?: Partial<Pick<DownloadOptions, 'partBytes' | 'concurrency' | 'retries' | 'baseDelayMs' | 'maxDelayMs' | 'stallMs'>>;
}

/** How often a process waiting on another process's download looks again. */
const LOCK_POLL_MS = 150;

export class CacheCore {
  private readonly inflight = new Map<string, Promise<CacheEntry>>();
  private reservedBytes = 0;
  private stopping = false;
  /** Downloads this process started (tests and benchmarks count them). */
  readonly downloads = { started: 0 };

  constructor(private readonly deps: CacheCoreDeps) {}

  get inflightCount(): number {
    return this.inflight.size;
  }

  stop(): void {
    this.stopping = true;
  }

  async ensure(ref: LoraRef, options: EnsureOptions = {}): Promise<EnsureResult> {
    if (this.stopping) throw new AgentError('SHUTTING_DOWN', 'the agent is stopping');
    // Every grant is verified, once per ensure: the ref's (a user LoRA), and the lease's when it is another.
    const refGrant = ref.source === 'user' ? await this.deps.grants.verify(ref.grant) : null;
    const grantUser = refGrant?.sub ?? null;
    const leaseGrant = options.lease ? (options.lease.grant ?? (ref.source === 'user' ? ref.grant : null)) : null;
    const leaseGrantExp =
      leaseGrant === null
        ? null
        : ref.source === 'user' && leaseGrant === ref.grant
          ? (refGrant?.exp ?? null)
          : (await this.deps.grants.verify(leaseGrant)).exp;
    const cached = await this.hit(ref, grantUser);
    let entry: CacheEntry;
    let hit = true;
    if (cached) {
      entry = cached;
    } else {
      hit = false;
      const key = lockKey(ref);
      let pending = this.inflight.get(key);
      if (!pending) {
        pending = inAgentSpan('lora_cache.download', { 'lora.source': ref.source }, () => this.fetchIntoCache(ref, key, options)).finally(
          () => this.inflight.delete(key),
        );
        this.inflight.set(key, pending);
      }
      entry = await pending;
      if (ref.source === 'user' && entry.userId !== grantUser) throw notFound(ref.id);
    }
    // A hit's anonymous lease (/ensure's default) is buffered like its touch: written within a
    // second, or never if released first. A holder's lease (a job's, read by release-by-holder in
    // other processes) is written at once, once per job and file.
    const buffered = hit && !options.lease?.holder;
    const lease = options.lease ? await this.leaseFile(entry.path, { ...options.lease, grant: leaseGrant }, leaseGrantExp, buffered) : null;
    if (ref.source === 'user' && options.recordUsage !== false) {
      this.deps.reporter.usage(ref.grant, [ref.id], options.workflowId ?? null, options.workflowName ?? null);
    }
    return {
      path: entry.path,
      hit,
      sizeBytes: entry.sizeBytes,
      sha256: entry.sha256,
      source: entry.source,
      loraId: entry.loraId,
      sharedName: entry.sharedName,
      lease,
    };
  }

  /**
   * A lease on a file ensure() just answered with (the job registry's re-lease after a file moved:
   * one node load is one hit, not two). It ends at min(now + ttl, the cap, the grant's exp).
   */
  async leaseFile(
    path: string,
    lease: NonNullable<EnsureOptions['lease']>,
    knownGrantExp?: number | null,
    buffered = false,
  ): Promise<NonNullable<EnsureResult['lease']>> {
    const { config, store } = this.deps;
    // the grant's exp as ensure verified it, else verified here (INVALID_GRANT when it does not verify)
    const grantExp = knownGrantExp !== undefined ? knownGrantExp : lease.grant ? (await this.deps.grants.verify(lease.grant)).exp : null;
    const end = leaseEnd(this.deps.now(), lease.ttlSeconds ?? config.leaseTtlSeconds, config.leaseMaxSeconds, grantExp);
    const taken = await store.acquireLease(path, end, lease.holder ?? null, lease.grant ?? null, { buffered });
    return { leaseId: taken.leaseId, expiresAt: taken.expiresAt.toISOString() };
  }

  /** The hit path: index row, owner check, file present with the indexed size → touch. */
  private async hit(ref: LoraRef, grantUser: string | null): Promise<CacheEntry | null> {
    const { store } = this.deps;
    const entry = ref.source === 'user' ? store.findUser(ref.id) : store.findShared(ref.name);
    if (!entry) return null;
    if (entry.pendingDelete || (ref.source === 'user' && entry.userId !== grantUser))
      throw notFound(ref.source === 'user' ? ref.id : ref.name);
    const size = await stat(entry.path).then(
      (s) => s.size,
      () => null,
    );
    if (size !== entry.sizeBytes) {
      this.deps.logger.warn({ path: entry.path, size, expected: entry.sizeBytes }, 'cached file missing or changed; downloading again');
      await store.forget(entry.path);
      return null;
    }
    // Buffered (no SQLite on the hit path); a models row the Python side removed is added back by
    // the flush. An adopted file's models row (if any) is its writer's, never bumped or re-added.
    if (entry.owned) store.touch(entry.path, this.deps.now());
    return entry;
  }

  /** One download for `key` in this process; across processes a lock file avoids duplicates. */
  private async fetchIntoCache(ref: LoraRef, key: string, options: EnsureOptions): Promise<CacheEntry> {
    const { layout } = this.deps;
    for (;;) {
      const lock = await tryLock(layout.locksDir, key);
      if (lock) {
        try {
          // Another process may have finished between our miss and taking the lock.
          const done = this.lookup(ref);
          if (done) return done;
          return await this.download(ref, lock, options);
        } finally {
          await lock.release();
        }
      }
      while (await isLocked(layout.locksDir, key)) {
        if (this.stopping) throw new AgentError('SHUTTING_DOWN', 'the agent is stopping');
        await new Promise((r) => setTimeout(r, LOCK_POLL_MS));
      }
      const done = this.lookup(ref);
      if (done) return done;
    }
  }

  private lookup(ref: LoraRef): CacheEntry | null {
    const entry = ref.source === 'user' ? this.deps.store.findUser(ref.id) : this.deps.store.findShared(ref.name);
    return entry && !entry.pendingDelete ? entry : null;
  }

  private async download(ref: LoraRef, lock: DownloadLock, options: EnsureOptions): Promise<CacheEntry> {
    const { store, layout, logger, reporter, config } = this.deps;
    const client = this.deps.client;
    let details: Awaited<ReturnType<CacheCore['details']>>;
    try {
      if (!client)
        throw new AgentError('API_UNAVAILABLE', 'no API configured (LORA_VAULT_URL / LORA_VAULT_TOKEN): only cached LoRAs can be served');
      details = await this.details(client, ref);
    } catch (error) {
      // A shared name present in the loras folder is satisfied without the API (the fleet put it there).
      const local = ref.source === 'shared' ? await adoptSharedFile(store, layout, ref.name, null, this.deps.now()) : null;
      if (local) return local;
      throw error;
    }
    if (ref.source === 'shared') {
      const local = await adoptSharedFile(store, layout, ref.name, details.sizeBytes, this.deps.now());
      if (local) return local; // reused after the size check, not downloaded a second time
    }
    const finalPath =
      ref.source === 'user'
        ? // A user LoRA always has a format; were it missing, .safetensors is the side no loader unpickles.
          userLoraPath(layout, details.userId ?? '', ref.id, details.fileName, details.format ?? 'SAFETENSORS')
        : sharedLoraPath(layout, ref.name);
    store.countMiss(this.deps.now());
    if (ref.source === 'user' && details.sha256) {
      const linked = await this.linkIntoCache(ref, { ...details, sha256: details.sha256 }, finalPath);
      if (linked) return linked;
    }
    const started = Date.now();
    this.downloads.started++;
    this.reservedBytes += details.sizeBytes;
    const refresh = setInterval(() => void lock.refresh(), 30_000);
    try {
      await this.makeRoom(details.sizeBytes, ref.source === 'user' ? layout.usersDir : layout.loraRoot);
      const tempDir = ref.source === 'user' ? layout.processTempDir : layout.sharedProcessTempDir;
      await mkdir(tempDir, { recursive: true });
      let target: DownloadTarget = details;
      const result = await downloadToTemp({
        source: {
          current: async () => target,
          refresh: async () => {
            target = await this.details(client, ref);
            return target;
          },
        },
        sizeBytes: details.sizeBytes,
        sha256: details.sha256,
        tempDir,
        partBytes: config.download.partBytes,
        concurrency: config.download.concurrency,
        retries: config.download.retries,
        ...this.deps.downloadTuning,
        ...(options.onProgress ? { onProgress: options.onProgress } : {}),
      });
      try {
        await mkdir(dirname(finalPath), { recursive: true });
        if (ref.source === 'user') await rename(result.tempPath, finalPath);
        else if ((await placeSharedFile(result.tempPath, finalPath)) === 'exists') {
          // Another writer (the Python asset downloader) placed it meanwhile: theirs stays.
          const theirs = await adoptSharedFile(store, layout, ref.name, result.sizeBytes, this.deps.now());
          if (theirs) return theirs;
        }
        await fsyncDir(dirname(finalPath));
      } catch (error) {
        await rm(result.tempPath, { force: true });
        throw error;
      }
      const entry = placedEntry(ref, finalPath, details.userId, { sha256: result.sha256, sizeBytes: result.sizeBytes, etag: target.etag });
      await store.register({ ...entry, fileName: basename(finalPath), fileId: await fileIdOf(finalPath) }, this.deps.now());
      const seconds = (Date.now() - started) / 1000;
      countDownload(result, seconds);
      logger.info(
        {
          path: finalPath,
          bytes: result.sizeBytes,
          seconds,
          restarts: result.restarts,
          retries: result.retries,
          urlRefreshes: result.urlRefreshes,
        },
        `downloaded ${refLabel(ref)} (${(result.sizeBytes / 1e6 / Math.max(seconds, 0.001)).toFixed(1)} MB/s)`,
      );
      reporter.event({ type: 'DOWNLOADED', ...refIds(ref) });
      return entry;
    } catch (error) {
      const agentError =
        error instanceof AgentError ? error : new AgentError('DOWNLOAD_FAILED', (error as Error).message, { cause: error });
      logger.warn({ err: agentError, code: agentError.code, details: agentError.details }, `download of ${refLabel(ref)} failed`);
      countDownloadFailure(agentError.code);
      reporter.event({ type: 'DOWNLOAD_FAILED', ...refIds(ref), reason: `${agentError.code}: ${agentError.message}`.slice(0, 500) });
      throw agentError;
    } finally {
      clearInterval(refresh);
      this.reservedBytes -= details.sizeBytes;
    }
  }

  /**
   * A user LoRA whose bytes the machine already holds (another user's LoRA with the same sha256):
   * a hard link to that file under this user's path, no download (content-links.ts). Null: none usable.
   */
  private async linkIntoCache(
    ref: Extract<LoraRef, { source: 'user' }>,
    details: { sha256: string; sizeBytes: number; etag: string | null; userId: string | null },
    finalPath: string,
  ): Promise<CacheEntry | null> {
    const { store, layout, logger, reporter } = this.deps;
    const twins = store.twinsOf(details.sha256, details.sizeBytes);
    if (twins.length === 0) return null;
    await mkdir(layout.processTempDir, { recursive: true });
    const linked = await linkTwin(twins, details, layout.processTempDir, logger);
    if (!linked) return null;
    try {
      await mkdir(dirname(finalPath), { recursive: true });
      await rename(linked.tempPath, finalPath);
      await fsyncDir(dirname(finalPath));
    } catch (error) {
      await rm(linked.tempPath, { force: true });
      throw error;
    }
    const entry = placedEntry(ref, finalPath, details.userId, details);
    await store.register({ ...entry, fileName: basename(finalPath), fileId: linked.fileId }, this.deps.now());
    countLink(details.sizeBytes);
    logger.info(
      { path: finalPath, bytes: details.sizeBytes, twin: linked.twinPath },
      `linked ${refLabel(ref)} to identical content already cached`,
    );
    reporter.event({ type: 'DOWNLOADED', ...refIds(ref) });
    return entry;
  }

  private async details(
    client: LoraClient,
    ref: LoraRef,
  ): Promise<
    DownloadTarget & { sha256: string | null; sizeBytes: number; fileName: string; format: LoraFormat | null; userId: string | null }
  > {
    try {
      const d =
        ref.source === 'user'
          ? await client.getDownload({ id: ref.id, grant: ref.grant })
          : await client.getSharedDownload({ name: ref.name });
      return {
        url: d.url,
        etag: d.etag ?? null,
        expiresAt: d.expiresAt ? Date.parse(String(d.expiresAt)) : null,
        sha256: d.sha256 ?? null,
        sizeBytes: Number(d.sizeBytes),
        fileName: d.fileName,
        format: d.format ?? null,
        userId: d.userId ?? null,
      };
    } catch (error) {
      throw fromSdkError(error, refLabel(ref));
    }
  }

  /** Space eviction before a download: plan, then execute; CACHE_FULL when it cannot fit. */
  private async makeRoom(neededBytes: number, dir: string): Promise<void> {
    const { store, logger, reporter } = this.deps;
    const settings = store.settings();
    const now = this.deps.now();
    const diskFree = await diskFreeBytes(dir);
    // reservedBytes already includes this download.
    const plan = planForSpace(store, settings, { neededBytes, reservedBytes: this.reservedBytes - neededBytes, diskFree }, now);
    if (plan.victims.length && settings.evictionEnabled) {
      await executeEviction(plan, `space for a ${neededBytes}-byte download`, {
        store,
        logger,
        now,
        onEvicted: (_row, entry) => reporter.evicted(entry, 'space'),
      });
    }
    if (!plan.fits || (plan.victims.length > 0 && !settings.evictionEnabled)) {
      throw new AgentError(
        'CACHE_FULL',
        `cannot make room for ${neededBytes} bytes: ${plan.shortfallBytes} bytes short (the rest is protected, ignored or leased${settings.evictionEnabled ? '' : '; eviction is disabled'})`,
        {
          retryable: true,
          details: { neededBytes, shortfallBytes: plan.shortfallBytes || neededBytes, reason: plan.reason },
        },
      );
    }
  }
}

function notFound(what: string): AgentError {
  return new AgentError('LORA_NOT_FOUND', `LoRA ${what} not found`);
}

/** When a lease taken at `now` ends: never past the cap, nor past the job grant's exp (seconds). */
function leaseEnd(now: Date, ttlSeconds: number, maxSeconds: number, grantExp: number | null): Date {
  const capped = now.getTime() + Math.min(ttlSeconds, maxSeconds) * 1000;
  return new Date(grantExp === null ? capped : Math.min(capped, grantExp * 1000));
}

function refLabel(ref: LoraRef): string {
  return ref.source === 'user' ? `user LoRA ${ref.id}` : `shared LoRA ${ref.name}`;
}

function refIds(ref: LoraRef): { loraId?: string; sharedName?: string } {
  return ref.source === 'user' ? { loraId: ref.id } : { sharedName: ref.name };
}

async function fsyncDir(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** The index entry of a file the agent just put in place (downloaded or linked). */
function placedEntry(
  ref: LoraRef,
  path: string,
  userId: string | null,
  file: { sha256: string | null; sizeBytes: number; etag: string | null },
): CacheEntry {
  return {
    path,
    owned: true,
    source: ref.source,
    loraId: ref.source === 'user' ? ref.id : null,
    userId: ref.source === 'user' ? (userId?.toLowerCase() ?? null) : null,
    sharedName: ref.source === 'shared' ? ref.name : null,
    sha256: file.sha256,
    etag: file.etag,
    sizeBytes: file.sizeBytes,
    pendingDelete: false,
    verified: true,
  };
}
