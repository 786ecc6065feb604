import { createHash, randomUUID } from 'node:crypto';
import type { App } from '../../server/app.ts';
import type { LoraView } from '../../server/domain/lora.ts';
import { smallSd15Lora } from './safetensors.ts';

/**
 * Test-only seeding, faster than an upload: writes a real blob and real rows through the same
 * registry the upload pipeline uses (begin → blob → finalize, quota charged), without streaming
 * or validating a file. Tests of the upload path itself upload through the API.
 */

export interface SeedLoraOptions {
  name?: string;
  fileName?: string;
  tags?: string[];
  bytes?: Buffer;
  baseModel?: string | null;
  rank?: number | null;
  /** Test data shaping after creation (ordering tests). */
  createdAt?: Date;
  lastUsedAt?: Date | null;
  usageCount?: number;
}

export function newUserId(): string {
  return randomUUID();
}

/** A new user of `server`: its id and a bearer token for it. */
export async function newUser(server: { tokens: { user(userId: string): Promise<string> } }): Promise<{ id: string; token: string }> {
  const id = newUserId();
  return { id, token: await server.tokens.user(id) };
}

export async function seedLora(app: App, userId: string, options: SeedLoraOptions = {}): Promise<LoraView> {
  const bytes = options.bytes ?? smallSd15Lora();
  const name = options.name ?? `lora-${randomUUID().slice(0, 8)}`;
  const { registry } = app.services;
  const { fileId, blobPath } = await registry.begin({
    userId,
    name,
    fileName: options.fileName ?? `${name}.safetensors`,
    format: 'SAFETENSORS',
    tags: options.tags ?? [],
  });
  await app.blobs.put(blobPath, bytes);
  let view = await registry.finalize(
    { role: 'user', userId },
    {
      fileId,
      sizeBytes: bytes.length,
      sha256: createHash('sha256').update(bytes).digest('hex'),
      baseModel: options.baseModel === undefined ? 'SD1' : options.baseModel,
      baseModelSource: options.baseModel === null ? null : 'METADATA',
      rank: options.rank === undefined ? 4 : options.rank,
      alpha: 2,
      metadata: { networkModule: 'networks.lora', tensorCount: 3, triggerWords: [] },
      uploadSource: 'api',
    },
  );
  if (options.createdAt || options.lastUsedAt !== undefined || options.usageCount !== undefined) {
    await app.db.lora.update({
      where: { file_id: fileId },
      data: {
        ...(options.createdAt ? { created_at: options.createdAt } : {}),
        ...(options.lastUsedAt !== undefined ? { last_used_at: options.lastUsedAt } : {}),
        ...(options.usageCount !== undefined ? { usage_count: options.usageCount } : {}),
      },
    });
    view = {
      ...view,
      createdAt: options.createdAt ?? view.createdAt,
      lastUsedAt: options.lastUsedAt ?? view.lastUsedAt,
      usageCount: options.usageCount ?? view.usageCount,
    };
  }
  return view;
}

/** Polls `check` until it returns a value other than undefined/false, or fails after `timeoutMs`. */
export async function eventually<T>(check: () => Promise<T | undefined | false>, timeoutMs = 15_000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
