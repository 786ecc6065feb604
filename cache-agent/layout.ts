import { createHash, randomUUID } from 'node:crypto';
import { realpathSync } from 'node:fs';
import { basename, dirname, join, relative, sep } from 'node:path';
import { AgentError } from './errors.ts';

/**
 * Where files live. Every path is built from validated parts, so no id, user id or name can escape
 * its folder or collide with another LoRA's file. All folders are real paths (symlinks resolved, as
 * ComfyUI's folder_paths does), so one file never has two spellings.
 *
 * User LoRAs live OUTSIDE every folder ComfyUI lists for `loras` (its stock loader must not see them):
 *   {usersDir}/{user_id}/{lora_id}_{slug}.{ext}   default $COMFYUI_DIR/models/lora-vault-users; ext from
 *                                                 the detected format, never the user's file name
 *   {usersDir}/.tmp/{pid}-{n}/…                   temp downloads of user LoRAs, one folder per process
 *   {usersDir}/.tmp/locks/{key}.lock              cross-process download locks
 * Shared LoRAs live where the fleet keeps them, in ComfyUI's loras folder:
 *   {loraRoot}/{name}                             subfolders of the name kept (normaliseSharedName)
 *   {loraRoot}/.lora-cache-tmp/{pid}-{n}/….part   temp downloads of shared LoRAs (never listed: .part)
 * Left by agents before issue 12, migrated at start-up (layout-migration.ts):
 *   {loraRoot}/users/…, {loraRoot}/shared/…
 */

const USER_ID = /^[A-Za-z0-9][A-Za-z0-9-]{0,63}$/;
const LORA_ID = /^[1-9][0-9]{0,18}$/;
/** Extensions loaders open with a pickle loader (torch.load): never given to a safetensors file. */
export const PICKLE_EXTENSIONS = new Set(['pt', 'pth', 'ckpt', 'bin', 'pkl']);

/** The format the API detected from the bytes (LoraDownload.format). */
export type LoraFormat = 'SAFETENSORS' | 'PT';

export interface Layout {
  /** ComfyUI's `loras` folder (LORA_DIR): shared LoRAs at `{loraRoot}/{name}`. */
  loraRoot: string;
  /** User LoRAs (USER_LORA_DIR), outside every `loras` folder. */
  usersDir: string;
  /** Temp downloads of user LoRAs and the download locks (inside usersDir: same filesystem). */
  tempRoot: string;
  locksDir: string;
  /** This process's temp folder for user LoRAs (removed at start-up by the next process if we die). */
  processTempDir: string;
  /** Temp downloads of shared LoRAs, on the loras folder's filesystem (`.part` files, never listed). */
  sharedTempRoot: string;
  sharedProcessTempDir: string;
  /** Where agents before issue 12 put user and shared LoRAs (inside ComfyUI's loras folder). */
  legacyUsersDir: string;
  legacySharedDir: string;
}

export function layoutFor(dirs: { loraDir: string; usersDir: string }, pid = process.pid): Layout {
  const tempRoot = join(dirs.usersDir, '.tmp');
  const sharedTempRoot = join(dirs.loraDir, '.lora-cache-tmp');
  const processDir = `${pid}-${randomUUID().slice(0, 8)}`;
  return {
    loraRoot: dirs.loraDir,
    usersDir: dirs.usersDir,
    tempRoot,
    locksDir: join(tempRoot, 'locks'),
    processTempDir: join(tempRoot, processDir),
    sharedTempRoot,
    sharedProcessTempDir: join(sharedTempRoot, processDir),
    legacyUsersDir: join(dirs.loraDir, 'users'),
    legacySharedDir: join(dirs.loraDir, 'shared'),
  };
}

/**
 * `path` with symlinks resolved as far as it exists (ComfyUI's base path is a realpath, and a
 * COMFYUI_DIR given through a symlink must name the same files); the missing rest is appended.
 */
export function realPathLoose(path: string): string {
  try {
    return realpathSync(path);
  } catch {
    const parent = dirname(path);
    return parent === path ? path : join(realPathLoose(parent), basename(path));
  }
}

/** Whether `inner` is `outer` or lies below it (both real paths). */
export function isWithin(outer: string, inner: string): boolean {
  const rel = relative(outer, inner);
  return rel === '' || (!rel.startsWith(`..${sep}`) && rel !== '..' && !rel.startsWith(sep));
}

/**
 * Refuses a users folder that ComfyUI would list as LoRAs: inside (or around) any `loras` root the
 * agent knows of — LORA_DIR, and `output/loras`, which ComfyUI always adds. Folders registered in
 * extra_model_paths.yaml are the node's start-up check (it asks ComfyUI itself).
 */
export function checkUsersDirIsolated(layout: Layout, loraRoots: string[]): void {
  for (const root of loraRoots) {
    if (isWithin(root, layout.usersDir) || isWithin(layout.usersDir, root)) {
      throw new Error(
        `USER_LORA_DIR ${layout.usersDir} must not lie inside (or contain) the LoRA folder ${root}: ComfyUI's stock loader would list every user's LoRAs`,
      );
    }
  }
}

/** A readable, safe file-name stem: ASCII letters, digits, `.`, `_`, `-`; at most 80 characters. */
export function slug(fileName: string): string {
  const stem = fileName.replace(/\.[A-Za-z0-9]{1,12}$/, '');
  const cleaned = stem
    .normalize('NFKD')
    .replace(/[^A-Za-z0-9._-]+/g, '-')
    .replace(/^[.-]+|[.-]+$/g, '')
    .slice(0, 80);
  return cleaned || 'lora';
}

/** `.safetensors` for SAFETENSORS, `.pt` for PT: a polyglot uploaded as `x.pt` is cached as `….safetensors`. */
export function formatExtension(format: LoraFormat): 'safetensors' | 'pt' {
  return format === 'PT' ? 'pt' : 'safetensors';
}

export function userLoraPath(layout: Layout, userId: string, loraId: string, fileName: string, format: LoraFormat): string {
  if (!USER_ID.test(userId)) throw new Error(`unsafe user id ${JSON.stringify(userId)}`);
  if (!LORA_ID.test(loraId)) throw new Error(`unsafe LoRA id ${JSON.stringify(loraId)}`);
  return join(layout.usersDir, userId.toLowerCase(), `${loraId}_${slug(fileName)}.${formatExtension(format)}`);
}

/** Whether `head` (≥ 9 bytes) opens a safetensors file: the same test the API decides the format by (sniff.ts). */
export function looksLikeSafetensors(head: Buffer): boolean {
  return head.length >= 9 && head.readBigUInt64LE(0) >= 2n && head[8] === 0x7b;
}

/** `name` must already be normalised (normaliseSharedName); this re-checks it stays inside. */
export function sharedLoraPath(layout: Layout, name: string): string {
  const path = join(layout.loraRoot, name);
  const rel = relative(layout.loraRoot, path);
  if (!rel || rel.startsWith('..') || rel.split(sep).includes('..')) throw new Error(`unsafe shared name ${JSON.stringify(name)}`);
  if (rel.split(sep)[0] === basename(layout.sharedTempRoot))
    throw new AgentError('INVALID_REQUEST', `${JSON.stringify(name)} is inside the agent's temp folder, not a shared LoRA`);
  return path;
}

/** Parses `{usersDir}/{user_id}/{lora_id}_….ext` back into its ids (start-up re-registration). */
export function parseUserLoraPath(layout: Layout, path: string, usersDir = layout.usersDir): { userId: string; loraId: string } | null {
  const parts = relative(usersDir, path).split(sep);
  if (parts.length !== 2) return null;
  const [userId, file] = parts as [string, string];
  const loraId = /^([1-9][0-9]{0,18})_/.exec(file)?.[1];
  return USER_ID.test(userId) && loraId ? { userId, loraId } : null;
}

export function lockKey(ref: { source: 'user'; id: string } | { source: 'shared'; name: string }): string {
  return ref.source === 'user' ? `user-${ref.id}` : `shared-${createHash('sha256').update(ref.name).digest('hex').slice(0, 32)}`;
}
