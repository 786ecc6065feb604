import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, readdir, realpath, rename, rm, stat, statfs, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import type { Logger } from 'pino';
import { type CacheRow, type EvictionPlan, planAgeEviction, planSpaceEviction } from './eviction.ts';
import { type Layout, looksLikeSafetensors, PICKLE_EXTENSIONS, parseUserLoraPath } from './layout.ts';
import { migrateLegacyLayout, USERS_DIR_MARKER, walkFiles } from './layout-setup.ts';
import { processAlive } from './lock.ts';
import type { CacheEntry, CacheSettings, CacheStore } from './store.ts';
import { inAgentSpan } from './telemetry.ts';

/**
 * The destructive and repairing work on the cache folder: start-up cleanup, eviction (plan with
 * the pure planners, then execute and log), and full verification. Files on disk are the truth;
 * the index follows them.
 */

export async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 4 * 1024 * 1024 })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** Free bytes on the filesystem of `path` (or of its nearest existing parent: a folder not made yet). */
export async function diskFreeBytes(path: string): Promise<number> {
  const s = await statfs(path).catch((error: NodeJS.ErrnoException) => {
    if (error.code !== 'ENOENT' || dirname(path) === path) throw error;
    return null;
  });
  return s ? Number(s.bavail) * Number(s.bsize) : diskFreeBytes(dirname(path));
}

async function sizeOf(path: string): Promise<number | null> {
  try {
    const s = await stat(path);
    return s.isFile() ? s.size : null;
  } catch {
    return null;
  }
}

export interface CleanupReport {
  tempRemoved: number;
  rowsDropped: number;
  filesReRegistered: number;
  filesDropped: number;
  /** Safetensors files an older agent cached under a pickle extension (`.pt`, …), renamed `.safetensors`. */
  filesRenamed: number;
  /** Entries whose path was respelled as its real path (an index written through a symlinked COMFYUI_DIR). */
  pathsResolved: number;
  /** Files moved out of the folders agents before issue 12 used (layout-setup.ts). */
  filesMigrated: number;
}

/**
 * At start-up: remove temp folders of dead processes, respell indexed paths as real paths, drop
 * the agent's rows whose file is gone (or has the wrong size), move files out of the old layout,
 * and re-register files in the users folder that have no row (as unverified until the API
 * confirms their hash). Only the agent's own things are deleted: files in its users folder that
 * are not the same file (device + inode) as an indexed one, and rows of entries it owns — never a
 * file in ComfyUI's loras folder, never another writer's `models` row.
 */
export async function startupCleanup(store: CacheStore, layout: Layout, logger: Logger, now: Date): Promise<CleanupReport> {
  const report: CleanupReport = {
    tempRemoved: 0,
    rowsDropped: 0,
    filesReRegistered: 0,
    filesDropped: 0,
    filesRenamed: 0,
    pathsResolved: 0,
    filesMigrated: 0,
  };
  for (const [root, own] of [
    [layout.tempRoot, layout.processTempDir],
    [layout.sharedTempRoot, layout.sharedProcessTempDir],
  ] as const) {
    for (const name of await readdir(root).catch(() => [] as string[])) {
      const pid = Number(/^(\d+)-/.exec(name)?.[1]);
      if (name === 'locks' || (pid && pid !== process.pid && processAlive(pid))) continue;
      if (join(root, name) === own) continue;
      await rm(join(root, name), { recursive: true, force: true });
      report.tempRemoved++;
    }
  }
  report.pathsResolved = await resolveEntryPaths(store, logger);
  for (const entry of store.entries()) {
    if ((await sizeOf(entry.path)) !== entry.sizeBytes) {
      await store.forget(entry.path);
      report.rowsDropped++;
    }
  }
  report.filesMigrated = await migrateLegacyLayout(store, layout, logger);
  let indexed: Set<string> | null = null;
  for await (const path of walkFiles(layout.usersDir, new Set([layout.tempRoot, join(layout.usersDir, USERS_DIR_MARKER)]))) {
    if (store.findByPath(path)) continue;
    // The same file as an indexed one under another spelling (bind mount, hard link): never deleted.
    indexed ??= await identities(store.entries().map((e) => e.path));
    const id = await identityOf(path);
    if (id && indexed.has(id)) {
      logger.warn({ path }, 'start-up cleanup: a file with no row of its own is an indexed file under another path; left');
      continue;
    }
    const registered = await reRegister(store, layout, path, now);
    if (registered) report.filesReRegistered++;
    else {
      await unlink(path).catch(() => {});
      report.filesDropped++;
    }
  }
  report.filesRenamed = await renameMisnamedSafetensors(store, logger);
  if (Object.values(report).some((n) => n > 0)) {
    logger.info({ ...report }, 'start-up cleanup: the index now matches the files on disk');
  }
  return report;
}

/** `dev:ino` of a file, or null. */
async function identityOf(path: string): Promise<string | null> {
  const s = await stat(path, { bigint: true }).catch(() => null);
  return s?.isFile() ? `${s.dev}:${s.ino}` : null;
}

async function identities(paths: string[]): Promise<Set<string>> {
  const ids = new Set<string>();
  for (const path of paths) {
    const id = await identityOf(path);
    if (id) ids.add(id);
  }
  return ids;
}

/**
 * Entries written under a symlinked spelling (COMFYUI_DIR given through a link) are moved to the
 * file's real path, the one ComfyUI and the folders now use; two entries for the same file keep
 * the real one.
 */
async function resolveEntryPaths(store: CacheStore, logger: Logger): Promise<number> {
  let resolved = 0;
  for (const entry of store.entries()) {
    const real = await realpath(entry.path).catch(() => null);
    if (real === null || real === entry.path) continue;
    if (store.findByPath(real)) await store.forget(entry.path);
    else await store.movePath(entry.path, real, basename(real));
    resolved++;
  }
  if (resolved) logger.info({ resolved }, 'start-up cleanup: indexed paths respelled as real paths');
  return resolved;
}

/**
 * Agents before issue 10 named user files after the uploaded name, so a safetensors file (maybe a
 * safetensors/pickle polyglot) uploaded as `x.pt` sits under `….pt`, where a loader choosing
 * torch.load by extension would unpickle it. Such files are renamed `.safetensors` in place (file
 * first, then rows and leases; a crash in between is repaired by the next start-up like any file
 * without a row). Leased ones too: the old path is the danger. Files named `.safetensors` whose
 * bytes are a pickle are left: no safetensors loader runs code.
 */
async function renameMisnamedSafetensors(store: CacheStore, logger: Logger): Promise<number> {
  let renamed = 0;
  for (const entry of store.entries()) {
    const ext = /\.([A-Za-z0-9]+)$/.exec(entry.path)?.[1]?.toLowerCase();
    if (entry.source !== 'user' || !ext || !PICKLE_EXTENSIONS.has(ext) || !looksLikeSafetensors(await readHead(entry.path))) continue;
    const to = `${entry.path.slice(0, -ext.length)}safetensors`;
    await rename(entry.path, to);
    await store.movePath(entry.path, to, basename(to));
    logger.warn({ from: entry.path, to }, 'renamed a safetensors file cached under a pickle extension');
    renamed++;
  }
  return renamed;
}

async function readHead(path: string): Promise<Buffer> {
  const handle = await open(path, 'r');
  try {
    const { buffer, bytesRead } = await handle.read(Buffer.alloc(9), 0, 9, 0);
    return buffer.subarray(0, bytesRead);
  } finally {
    await handle.close();
  }
}

/** A file in the users folder without a row: registered as unverified, or false (then removed). */
async function reRegister(store: CacheStore, layout: Layout, path: string, now: Date): Promise<boolean> {
  const size = await sizeOf(path);
  if (size === null || size === 0) return false;
  const ids = parseUserLoraPath(layout, path);
  if (!ids || store.findUser(ids.loraId)) return false;
  const entry = {
    path,
    source: 'user' as const,
    loraId: ids.loraId,
    userId: ids.userId,
    sharedName: null,
    sha256: await sha256File(path),
    etag: null,
    sizeBytes: size,
    verified: false,
    fileName: basename(path),
  };
  await store.register(entry, now);
  return true;
}

export interface EvictionResult {
  reason: string;
  evicted: CacheRow[];
  bytesFreed: number;
  /** Victims a lease taken after planning kept in place. */
  skipped: string[];
}

/** Executes a plan: rows first (re-checking leases in the same transaction), then the file; logs what it did. */
export function executeEviction(
  plan: Pick<EvictionPlan, 'victims'>,
  reason: string,
  deps: { store: CacheStore; logger: Logger; now: Date; onEvicted?: (row: CacheRow, entry: CacheEntry | null) => void },
): Promise<EvictionResult> {
  return inAgentSpan('lora_cache.evict', { 'lora_cache.evict.reason': reason, 'lora_cache.evict.planned': plan.victims.length }, (span) =>
    evictPlanned(plan, reason, deps).then((result) => {
      span.setAttributes({ 'lora_cache.evict.evicted': result.evicted.length, 'lora_cache.evict.bytes_freed': result.bytesFreed });
      return result;
    }),
  );
}

async function evictPlanned(
  plan: Pick<EvictionPlan, 'victims'>,
  reason: string,
  deps: Parameters<typeof executeEviction>[2],
): Promise<EvictionResult> {
  const result: EvictionResult = { reason, evicted: [], bytesFreed: 0, skipped: [] };
  for (const victim of plan.victims) {
    const entry = deps.store.findByPath(victim.path);
    if (!(await deps.store.removeUnlessLeased(victim.path, deps.now, { eviction: true }))) {
      result.skipped.push(victim.path);
      continue;
    }
    // A file with other hard links (identical content of another user) frees its bytes with its last link.
    const links = (await stat(victim.path).catch(() => null))?.nlink ?? 1;
    const removed = await unlink(victim.path).then(
      () => true,
      (error: NodeJS.ErrnoException) => {
        if (error.code !== 'ENOENT') deps.logger.warn({ err: error, path: victim.path }, 'evicted row, but the file could not be removed');
        return false;
      },
    );
    result.evicted.push(victim);
    if (removed && links <= 1) result.bytesFreed += victim.sizeBytes;
    deps.onEvicted?.(victim, entry);
  }
  if (result.evicted.length || result.skipped.length) {
    deps.logger.info(
      { reason, evicted: result.evicted.map((v) => v.path), bytesFreed: result.bytesFreed, skipped: result.skipped },
      `evicted ${result.evicted.length} LoRA(s), ${result.bytesFreed} bytes freed (${reason})`,
    );
  }
  return result;
}

export interface SpaceRequest {
  neededBytes: number;
  /** Bytes other downloads in this process are about to write. */
  reservedBytes: number;
  diskFree: number;
}

/**
 * Space eviction for a download. Hard limits (a download fails CACHE_FULL only on these): the cap
 * `lora_cache_max_gb`, and the disk holding the file above `lora_min_free_hard_gb` (default 0).
 * `min_free_space_gb` is advisory, as on the Python side: below it, least recently used user LoRAs
 * are evicted towards it — at most the download's own size more than the hard limits need, so a
 * disk filled by other models never empties the cache (and never fails a download).
 */
export function planForSpace(store: CacheStore, settings: CacheSettings, request: SpaceRequest, now: Date): EvictionPlan {
  const need = request.neededBytes + request.reservedBytes;
  const floor = Math.max(settings.minFreeBytes, settings.minFreeHardBytes);
  // The common case — it fits — without reading and parsing every row.
  if (store.userLoraBytes() + need <= settings.maxCacheBytes && request.diskFree - need >= floor) {
    return { victims: [], bytesFreed: 0, fits: true, shortfallBytes: 0, reason: 'none-needed' };
  }
  const base = { rows: store.cacheRows(), neededBytes: need, maxCacheBytes: settings.maxCacheBytes, leased: store.leasedPaths(now) };
  const required = planSpaceEviction({ ...base, diskFreeBytes: request.diskFree, minFreeBytes: settings.minFreeHardBytes });
  const advisoryShort = settings.minFreeBytes + need - request.diskFree;
  if (!required.fits || !settings.evictionEnabled || advisoryShort <= 0) return required;
  const wish = Math.min(advisoryShort, need);
  const preferred = planSpaceEviction({
    ...base,
    diskFreeBytes: settings.minFreeBytes + need - wish,
    minFreeBytes: settings.minFreeBytes,
  });
  return preferred.fits && preferred.bytesFreed > required.bytesFreed ? preferred : required;
}

export function planForAge(store: CacheStore, settings: CacheSettings, now: Date): ReturnType<typeof planAgeEviction> {
  return planAgeEviction({ rows: store.cacheRows(), now: now.getTime(), maxAgeDays: settings.maxAgeDays, leased: store.leasedPaths(now) });
}

export interface VerifyReport {
  checked: number;
  ok: number;
  /** Files whose size or sha256 differs from the index: removed (downloaded again on next use). */
  corrupt: string[];
  /** Rows whose file is gone: dropped. */
  missing: string[];
}

/** Re-hashes every cached file against the index; anything wrong is removed (adopted files: only forgotten). */
export async function verifyAll(store: CacheStore, logger: Logger): Promise<VerifyReport> {
  const report: VerifyReport = { checked: 0, ok: 0, corrupt: [], missing: [] };
  for (const entry of store.entries()) {
    report.checked++;
    const size = await sizeOf(entry.path);
    if (size === null) {
      await store.forget(entry.path);
      report.missing.push(entry.path);
      continue;
    }
    if (size === entry.sizeBytes && (!entry.sha256 || (await sha256File(entry.path)) === entry.sha256)) {
      report.ok++;
      continue;
    }
    await store.forget(entry.path);
    // An adopted file is someone else's: the agent forgets it, and never deletes it.
    if (entry.owned) await unlink(entry.path).catch(() => {});
    report.corrupt.push(entry.path);
    logger.warn({ path: entry.path }, 'verify: size or sha256 differs from the index; file removed');
  }
  return report;
}
