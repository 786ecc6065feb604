import { link, mkdir, stat, unlink } from 'node:fs/promises';
import { basename, dirname } from 'node:path';
import { AgentError } from './errors.ts';
import { type Layout, sharedLoraPath } from './layout.ts';
import type { CacheEntry, CacheStore } from './store.ts';

/**
 * Shared LoRAs live where the fleet keeps them, `{loras folder}/{name}`, beside files the Python
 * asset downloader (and operators) put there. The agent never overwrites such a file and never
 * takes it over: a file already at the name is adopted — indexed with `owned = 0`, its `models` row
 * (if any) left to its writer, never evicted or deleted by the agent.
 */

/**
 * Adopts the file at the shared name, if there is one. `expectedSize` is the library's size (null
 * when the API cannot say: the local file is taken as it is, like ComfyUI would load it). A file of
 * another size is not the library's LoRA, and it is not ours to replace: DOWNLOAD_FAILED.
 */
export async function adoptSharedFile(
  store: CacheStore,
  layout: Layout,
  name: string,
  expectedSize: number | null,
  now: Date,
): Promise<CacheEntry | null> {
  const path = sharedLoraPath(layout, name);
  const s = await stat(path).catch(() => null);
  if (!s?.isFile()) return null;
  if (expectedSize !== null && s.size !== expectedSize) {
    throw new AgentError(
      'DOWNLOAD_FAILED',
      `${path} is already there with ${s.size} bytes, but the shared library's ${name} has ${expectedSize}: it is left as it is`,
      { details: { path, localSize: s.size, expectedSize } },
    );
  }
  const entry: CacheEntry = {
    path,
    owned: false,
    source: 'shared',
    loraId: null,
    userId: null,
    sharedName: name,
    sha256: null,
    etag: null,
    sizeBytes: s.size,
    pendingDelete: false,
    verified: true,
  };
  await store.register({ ...entry, fileName: basename(path) }, now);
  return entry;
}

/**
 * Puts a verified temp file at the shared name with link(2), which fails instead of overwriting a
 * file another writer placed meanwhile ('exists'; the temp file is removed either way).
 */
export async function placeSharedFile(tempPath: string, dest: string): Promise<'placed' | 'exists'> {
  await mkdir(dirname(dest), { recursive: true });
  try {
    await link(tempPath, dest);
    return 'placed';
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return 'exists';
    throw error;
  } finally {
    await unlink(tempPath).catch(() => {});
  }
}
