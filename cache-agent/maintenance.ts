import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, readdir, rename, rm, stat, statfs, unlink } from 'node:fs/promises';
import { basename, join, relative, sep } from 'node:path';
import type { Logger } from 'pino';
import { type CacheRow, type EvictionPlan, planAgeEviction, planSpaceEviction } from './eviction.ts';
import { type Layout, looksLikeSafetensors, PICKLE_EXTENSIONS, parseUserLoraPath } from './layout.ts';
import { processAlive } from './lock.ts';
import { normaliseSharedName } from './lora-refs.ts';
import type { CacheEntry, CacheSettings, CacheStore } from './store.ts';

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

export async function diskFreeBytes(path: string): Promise<number> {
  const s = await statfs(path);
  return Number(s.bavail) * Number(s.bsize);
}

async function sizeOf(path: string): Promise<number | null> {
  try {
    const s = await stat(path);
    return s.isFile() ? s.size : null;
  } catch {
    return null;
  }
}

async function* walk(dir: string): AsyncGenerator<string> {
  let names: import('node:fs').Dirent[];
  try {
    names = await readdir(dir, { withFileTypes: true });
  } catch {
    return;
  }
  for (const d of names) {
    const full = join(dir, d.name);
    if (d.isDirectory()) yield* walk(full);
    else if (d.isFile()) yield full;
  }
}

export interface CleanupReport {
  tempRemoved: number;
  rowsDropped: number;
  filesReRegistered: number;
  filesDropped: number;
  /** Safetensors files an older agent cached under a pickle extension (`.pt`, …), renamed `.safetensors`. */
  filesRenamed: number;
}

/**
 * At start-up: remove temp folders of dead processes, drop rows whose file is gone (or has the
 * wrong size), and re-register files that have no row (user files as unverified until the API
 * confirms their hash; files outside the layout are removed).
 */
export async function startupCleanup(store: CacheStore, layout: Layout, logger: Logger, now: Date): Promise<CleanupReport> {
  const report: CleanupReport = { tempRemoved: 0, rowsDropped: 0, filesReRegistered: 0, filesDropped: 0, filesRenamed: 0 };
  for (const name of await readdir(layout.tempRoot).catch(() => [] as string[])) {
    const pid = Number(/^(\d+)-/.exec(name)?.[1]);
    if (name === 'locks' || (pid && pid !== process.pid && processAlive(pid))) continue;
    if (join(layout.tempRoot, name) === layout.processTempDir) continue;
    await rm(join(layout.tempRoot, name), { recursive: true, force: true });
    report.tempRemoved++;
  }
  for (const entry of store.entries()) {
    if ((await sizeOf(entry.path)) !== entry.sizeBytes) {
      await store.forget(entry.path);
      report.rowsDropped++;
    }
  }
  for (const row of store.cacheRows()) {
    if (!store.findByPath(row.path) && (await sizeOf(row.path)) === null) {
      await store.forget(row.path);
      report.rowsDropped++;
    }
  }
  for (const [dir, source] of [
    [layout.usersDir, 'user'],
    [layout.sharedDir, 'shared'],
  ] as const) {
    for await (const path of walk(dir)) {
      if (store.findByPath(path)) continue;
      const registered = await reRegister(store, layout, path, source, now);
      if (registered) report.filesReRegistered++;
      else {
        await unlink(path).catch(() => {});
        report.filesDropped++;
      }
    }
  }
  report.filesRenamed = await renameMisnamedSafetensors(store, logger);
  if (report.tempRemoved + report.rowsDropped + report.filesReRegistered + report.filesDropped + report.filesRenamed > 0) {
    logger.info({ ...report }, 'start-up cleanup: the index now matches the files on disk');
  }
  return report;
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

async function reRegister(store: CacheStore, layout: Layout, path: string, source: 'user' | 'shared', now: Date): Promise<boolean> {
  const size = await sizeOf(path);
  if (size === null || size === 0) return false;
  const fileName = path.split(sep).pop() ?? path;
  if (source === 'user') {
    const ids = parseUserLoraPath(layout, path);
    if (!ids || store.findUser(ids.loraId)) return false;
    const sha256 = await sha256File(path);
    const entry = {
      path,
      source,
      loraId: ids.loraId,
      userId: ids.userId,
      sharedName: null,
      sha256,
      etag: null,
      sizeBytes: size,
      verified: false,
      fileName,
    };
    await store.register(entry, now);
    return true;
  }
  const name = normaliseSharedName(relative(layout.sharedDir, path).split(sep).join('/'));
  if (!name || store.findShared(name)) return false;
  const sha256 = await sha256File(path);
  const entry = {
    path,
    source,
    loraId: null,
    userId: null,
    sharedName: name,
    sha256,
    etag: null,
    sizeBytes: size,
    verified: true,
    fileName,
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
export async function executeEviction(
  plan: Pick<EvictionPlan, 'victims'>,
  reason: string,
  deps: { store: CacheStore; logger: Logger; now: Date; onEvicted?: (row: CacheRow, entry: CacheEntry | null) => void },
): Promise<EvictionResult> {
  const result: EvictionResult = { reason, evicted: [], bytesFreed: 0, skipped: [] };
  for (const victim of plan.victims) {
    const entry = deps.store.findByPath(victim.path);
    if (!(await deps.store.removeUnlessLeased(victim.path, deps.now, { eviction: true }))) {
      result.skipped.push(victim.path);
      continue;
    }
    await unlink(victim.path).catch((error: NodeJS.ErrnoException) => {
      if (error.code !== 'ENOENT') deps.logger.warn({ err: error, path: victim.path }, 'evicted row, but the file could not be removed');
    });
    result.evicted.push(victim);
    result.bytesFreed += victim.sizeBytes;
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

export function planForSpace(store: CacheStore, settings: CacheSettings, request: SpaceRequest, now: Date): EvictionPlan {
  const need = request.neededBytes + request.reservedBytes;
  // The common case — it fits — without reading and parsing every row.
  if (store.userLoraBytes() + need <= settings.maxCacheBytes && request.diskFree - need >= settings.minFreeBytes) {
    return { victims: [], bytesFreed: 0, fits: true, shortfallBytes: 0, reason: 'none-needed' };
  }
  return planSpaceEviction({
    rows: store.cacheRows(),
    neededBytes: need,
    maxCacheBytes: settings.maxCacheBytes,
    diskFreeBytes: request.diskFree,
    minFreeBytes: settings.minFreeBytes,
    leased: store.leasedPaths(now),
  });
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

/** Re-hashes every cached file against the index; anything wrong is removed. */
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
    await unlink(entry.path).catch(() => {});
    report.corrupt.push(entry.path);
    logger.warn({ path: entry.path }, 'verify: size or sha256 differs from the index; file removed');
  }
  return report;
}
