import { copyFile, link, mkdir, readdir, rename, rmdir, stat, unlink, writeFile } from 'node:fs/promises';
import { basename, dirname, join, relative } from 'node:path';
import type { Logger } from 'pino';
import { type Layout, parseUserLoraPath, sharedLoraPath } from './layout.ts';
import type { CacheStore } from './store.ts';

/**
 * The folders' start-up work (issue 12): claim the users folder, and move what agents before
 * issue 12 left inside ComfyUI's `loras` folder to where it belongs now:
 *
 * - `models/loras/users/{uid}/…` → `{usersDir}/{uid}/…` (moved with their rows and leases: the cache
 *   stays warm, and ComfyUI's stock loader stops listing them). A file there that another writer's
 *   `models` row claims is left alone.
 * - `models/loras/shared/{name}` the agent wrote → `models/loras/{name}`, where the fleet's loader
 *   finds it — unless a file is already there: with the same size it is adopted (ours, now
 *   redundant, is removed); with another size both stay and a warning names them.
 * Files under `shared/` the agent did not write are never touched.
 */

/** The marker that says a folder is the agent's users folder (whatever is in it may be cleaned up). */
export const USERS_DIR_MARKER = '.lora-vault-users';

/**
 * Creates the users folder with its marker. An existing non-empty folder without the marker (a
 * mistyped USER_LORA_DIR pointing at someone else's files) is refused: start-up cleanup removes
 * unknown files there.
 */
export async function claimUsersDir(layout: Layout): Promise<void> {
  await mkdir(layout.usersDir, { recursive: true });
  const marker = join(layout.usersDir, USERS_DIR_MARKER);
  if (await exists(marker)) return;
  const present = (await readdir(layout.usersDir)).filter((n) => n !== '.tmp');
  if (present.length > 0) {
    throw new Error(
      `USER_LORA_DIR ${layout.usersDir} holds files the agent did not put there (${present.slice(0, 3).join(', ')}…); ` +
        'point it at an empty or new folder',
    );
  }
  await writeFile(marker, 'lora-vault cache agent: user LoRAs. Never list this folder in extra_model_paths.yaml.\n');
}

export async function migrateLegacyLayout(store: CacheStore, layout: Layout, logger: Logger): Promise<number> {
  let moved = 0;
  for await (const path of walkFiles(layout.legacyUsersDir)) {
    const entry = store.findByPath(path);
    if (entry ? !entry.owned : store.foreignModelType(path) !== null || !parseUserLoraPath(layout, path, layout.legacyUsersDir)) {
      continue; // someone else's file, or not one of ours: left where it is
    }
    const to = join(layout.usersDir, relative(layout.legacyUsersDir, path));
    if (await exists(to)) {
      logger.warn({ from: path, to }, 'migration: a user LoRA is already at the new place; the old copy is left');
      continue;
    }
    await mkdir(dirname(to), { recursive: true });
    await moveFile(path, to);
    if (entry) await store.movePath(path, to, basename(to));
    moved++;
  }
  for (const entry of store.entries()) {
    if (entry.source !== 'shared' || !entry.owned || !entry.sharedName || dirname(entry.path) === entry.path) continue;
    if (relative(layout.legacySharedDir, entry.path).startsWith('..')) continue;
    const to = sharedLoraPath(layout, entry.sharedName);
    await mkdir(dirname(to), { recursive: true });
    try {
      await link(entry.path, to); // never overwrites a file the fleet put there
      await unlink(entry.path);
      await store.movePath(entry.path, to, basename(to));
      moved++;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') {
        logger.warn({ err: error, from: entry.path, to }, 'migration: could not move a shared LoRA; left where it is');
        continue;
      }
      const theirs = await stat(to).catch(() => null);
      if (theirs?.isFile() && theirs.size === entry.sizeBytes) {
        await store.forget(entry.path);
        await unlink(entry.path).catch(() => {});
        await store.register({ ...entry, path: to, sha256: null, etag: null, owned: false, fileName: basename(to) }, new Date());
        logger.info({ removed: entry.path, adopted: to }, 'migration: the shared LoRA is already in the loras folder; adopted it');
        moved++;
      } else {
        logger.warn({ ours: entry.path, theirs: to }, 'migration: another file of a different size has the shared LoRA name; both left');
      }
    }
  }
  await removeEmptyDirs(layout.legacyUsersDir);
  await removeEmptyDirs(layout.legacySharedDir);
  if (moved) logger.info({ moved }, 'migration: LoRAs moved out of the folders agents before issue 12 used');
  return moved;
}

/** rename, or copy + remove across filesystems (the users folder may sit on another disk). */
async function moveFile(from: string, to: string): Promise<void> {
  try {
    await rename(from, to);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EXDEV') throw error;
    await copyFile(from, to);
    await unlink(from);
  }
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

export async function* walkFiles(dir: string, skip: ReadonlySet<string> = new Set()): AsyncGenerator<string> {
  let names: import('node:fs').Dirent[];
  try {
    names = await readdir(dir, { withFileTypes: true });
  } catch {
    return;
  }
  for (const d of names) {
    const full = join(dir, d.name);
    if (skip.has(full)) continue;
    if (d.isDirectory()) yield* walkFiles(full, skip);
    else if (d.isFile()) yield full;
  }
}

/** Removes `dir` and its empty subfolders, bottom-up; never a file. */
async function removeEmptyDirs(dir: string): Promise<void> {
  let names: import('node:fs').Dirent[];
  try {
    names = await readdir(dir, { withFileTypes: true });
  } catch {
    return;
  }
  for (const d of names) if (d.isDirectory()) await removeEmptyDirs(join(dir, d.name));
  await rmdir(dir).catch(() => {});
}
