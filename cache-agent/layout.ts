import { createHash, randomUUID } from 'node:crypto';
import { join, relative, sep } from 'node:path';

/**
 * Where files live under ComfyUI's LoRA folder. Every path is built from validated parts, so no
 * id, user id or name can escape the folder or collide with another LoRA's file:
 *
 *   users/{user_id}/{lora_id}_{slug}.{ext}   user LoRAs (the id prefix makes names unique; ext from
 *                                            the detected format, never the user's file name)
 *   shared/{name}                            the shared library (name checked by normaliseSharedName)
 *   .lora-cache-tmp/{pid}-{n}/…              temp downloads, one folder per process
 *   .lora-cache-tmp/locks/{key}.lock         cross-process download locks
 */

const USER_ID = /^[A-Za-z0-9][A-Za-z0-9-]{0,63}$/;
const LORA_ID = /^[1-9][0-9]{0,18}$/;
/** Extensions loaders open with a pickle loader (torch.load): never given to a safetensors file. */
export const PICKLE_EXTENSIONS = new Set(['pt', 'pth', 'ckpt', 'bin', 'pkl']);

/** The format the API detected from the bytes (LoraDownload.format). */
export type LoraFormat = 'SAFETENSORS' | 'PT';

export interface Layout {
  root: string;
  usersDir: string;
  sharedDir: string;
  tempRoot: string;
  locksDir: string;
  /** This process's temp folder (removed at start-up by the next process if we die). */
  processTempDir: string;
}

export function layoutFor(loraDir: string, pid = process.pid): Layout {
  const tempRoot = join(loraDir, '.lora-cache-tmp');
  return {
    root: loraDir,
    usersDir: join(loraDir, 'users'),
    sharedDir: join(loraDir, 'shared'),
    tempRoot,
    locksDir: join(tempRoot, 'locks'),
    processTempDir: join(tempRoot, `${pid}-${randomUUID().slice(0, 8)}`),
  };
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
  const path = join(layout.sharedDir, name);
  const rel = relative(layout.sharedDir, path);
  if (!rel || rel.startsWith('..') || rel.split(sep).includes('..')) throw new Error(`unsafe shared name ${JSON.stringify(name)}`);
  return path;
}

/** Parses `users/{user_id}/{lora_id}_….ext` back into its ids (start-up re-registration). */
export function parseUserLoraPath(layout: Layout, path: string): { userId: string; loraId: string } | null {
  const parts = relative(layout.usersDir, path).split(sep);
  if (parts.length !== 2) return null;
  const [userId, file] = parts as [string, string];
  const loraId = /^([1-9][0-9]{0,18})_/.exec(file)?.[1];
  return USER_ID.test(userId) && loraId ? { userId, loraId } : null;
}

export function lockKey(ref: { source: 'user'; id: string } | { source: 'shared'; name: string }): string {
  return ref.source === 'user' ? `user-${ref.id}` : `shared-${createHash('sha256').update(ref.name).digest('hex').slice(0, 32)}`;
}
