import { randomUUID } from 'node:crypto';
import { link, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { sha256File } from './maintenance.ts';
import type { CacheEntry } from './store.ts';

/**
 * Identical content kept once on a machine (issue 17): a user LoRA whose sha256 and size are those
 * of a verified file the agent already holds — another user's LoRA with the same bytes — becomes a
 * hard link to that file instead of a download. Paths stay per user (`lora-vault-users/{user}/…`),
 * the API still authorized the ref (its download details were asked for with the job's grant), and
 * the twin is hashed again before the link, so a file changed on disk since it was verified is
 * never shared (the ref then downloads as before).
 */

/** `dev:ino` of a file: what the index records so the planners count a linked file once. */
export async function fileIdOf(path: string): Promise<string | null> {
  const s = await stat(path, { bigint: true }).catch(() => null);
  return s?.isFile() ? `${s.dev}:${s.ino}` : null;
}

export interface LinkedTwin {
  /** The new link, in `tempDir`: the caller renames it into place (or removes it). */
  tempPath: string;
  fileId: string;
  /** The file it links to. */
  twinPath: string;
}

/**
 * Links the first twin whose bytes still hash to `sha256` into `tempDir`; null when none does
 * (gone, changed, on another filesystem…). A twin counts only if it is the same file (device,
 * inode, size, mtime) before hashing and after linking: one rewritten meanwhile is not used.
 */
export async function linkTwin(
  twins: readonly CacheEntry[],
  expected: { sha256: string; sizeBytes: number },
  tempDir: string,
  logger: Logger,
): Promise<LinkedTwin | null> {
  for (const twin of twins) {
    const before = await stat(twin.path, { bigint: true }).catch(() => null);
    if (!before?.isFile() || before.size !== BigInt(expected.sizeBytes)) continue;
    const hash = await sha256File(twin.path).catch(() => null);
    if (hash !== expected.sha256) {
      logger.warn({ path: twin.path }, 'a cached file no longer has the bytes it was verified with: not linked (verify repairs it)');
      continue;
    }
    const tempPath = join(tempDir, `link-${randomUUID()}`);
    try {
      await link(twin.path, tempPath);
    } catch (error) {
      logger.debug({ err: error, path: twin.path }, 'hard link refused; trying the next twin or downloading');
      continue;
    }
    const after = await stat(tempPath, { bigint: true }).catch(() => null);
    const same =
      after !== null &&
      after.dev === before.dev &&
      after.ino === before.ino &&
      after.size === before.size &&
      after.mtimeNs === before.mtimeNs;
    if (!same) {
      await unlink(tempPath).catch(() => {});
      continue;
    }
    return { tempPath, fileId: `${after.dev}:${after.ino}`, twinPath: twin.path };
  }
  return null;
}
