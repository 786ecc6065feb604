import { randomUUID } from 'node:crypto';
import { mkdir, open, readFile, stat, unlink, utimes } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * Cross-process download locks: `{locksDir}/{key}.lock` created with O_EXCL, holding the owner's
 * pid. A lock only saves duplicate work — every download goes to its own temp file and is
 * renamed atomically, so two processes that both download still leave one correct file.
 * A lock whose owner is dead, or that was not refreshed for `staleMs`, is taken over.
 */

export interface DownloadLock {
  /** Keeps the lock fresh during a long download. */
  refresh(): Promise<void>;
  release(): Promise<void>;
}

export interface LockOptions {
  /** A lock untouched this long is considered abandoned. @default 120000 */
  staleMs?: number;
}

/** Whether a process with this pid runs (EPERM: it does, as another user). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Takes the lock, or returns null when another live process holds it. */
export async function tryLock(locksDir: string, key: string, options: LockOptions = {}): Promise<DownloadLock | null> {
  const path = join(locksDir, `${key}.lock`);
  await mkdir(locksDir, { recursive: true });
  for (let attempt = 0; attempt < 5; attempt++) {
    try {
      const handle = await open(path, 'wx');
      const token = randomUUID();
      await handle.writeFile(JSON.stringify({ pid: process.pid, token }));
      await handle.close();
      let released = false;
      return {
        refresh: async () => {
          if (!released) await utimes(path, new Date(), new Date()).catch(() => {});
        },
        release: async () => {
          if (released) return;
          released = true;
          // Only our own lock: after a takeover (we looked abandoned) the file is someone else's.
          const owner = await readFile(path, 'utf8').catch(() => '');
          if (owner.includes(token)) await unlink(path).catch(() => {});
        },
      };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      const state = await lockState(path, options.staleMs ?? 120_000);
      if (state === 'held') return null;
      if (state === 'stale') await unlink(path).catch(() => {});
    }
  }
  return null;
}

async function lockState(path: string, staleMs: number): Promise<'held' | 'stale' | 'gone'> {
  try {
    const [text, info] = await Promise.all([readFile(path, 'utf8'), stat(path)]);
    let pid = Number.NaN;
    try {
      pid = Number((JSON.parse(text) as { pid?: unknown }).pid);
    } catch {
      // Half-written by an owner that is creating it right now: judge by age alone.
      return Date.now() - info.mtimeMs > 5000 ? 'stale' : 'held';
    }
    if (!Number.isInteger(pid) || pid <= 0 || !processAlive(pid)) return 'stale';
    return Date.now() - info.mtimeMs > staleMs ? 'stale' : 'held';
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return 'gone';
    throw error;
  }
}

/** Whether a lock file is currently held by a live owner. */
export async function isLocked(locksDir: string, key: string, staleMs = 120_000): Promise<boolean> {
  return (await lockState(join(locksDir, `${key}.lock`), staleMs)) === 'held';
}
