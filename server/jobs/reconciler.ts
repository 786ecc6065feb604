import type { Logger } from 'pino';
import type { Db } from '../db/client.ts';
import type { BlobStore } from '../storage/blob-store.ts';

/**
 * Cleans what a crash left behind (ARCHITECTURE "Upload": any failure before READY leaves
 * nothing visible). Plans, then executes, then logs what it did:
 * - uploads stuck in UPLOADING (or FAILED) longer than `staleAfterMs` → blob deleted, rows removed;
 * - blobs under `users/` older than `staleAfterMs` that no READY or UPLOADING row names → deleted
 *   (rows DELETED are the blob-deletion job's; it deletes them too, and a 404 counts as done).
 */

export interface ReconcileOptions {
  /** @default 3 hours: longer than any upload of MAX_UPLOAD_BYTES takes */
  staleAfterMs?: number;
  /** Blobs listed per run at most. @default 100,000 */
  maxBlobs?: number;
  now?: Date;
}

export interface ReconcilePlan {
  staleUploads: { fileId: bigint; blobPath: string }[];
  orphanBlobs: string[];
}

export async function planReconcile(db: Db, blobs: BlobStore, options: ReconcileOptions = {}): Promise<ReconcilePlan> {
  const cutoff = new Date((options.now ?? new Date()).getTime() - (options.staleAfterMs ?? 3 * 3600_000));
  const stale = await db.lora.findMany({
    where: { status: { in: ['UPLOADING', 'FAILED'] }, updated_at: { lt: cutoff } },
    select: { file_id: true, blob_path: true },
  });
  const orphanBlobs: string[] = [];
  const maxBlobs = options.maxBlobs ?? 100_000;
  let seen = 0;
  const candidates: { name: string }[] = [];
  for await (const blob of blobs.loras.listBlobsFlat({ prefix: 'users/' })) {
    if (++seen > maxBlobs) break;
    const modified = blob.properties.lastModified;
    if (modified && modified < cutoff) candidates.push({ name: blob.name });
    if (candidates.length >= 1000) orphanBlobs.push(...(await orphansAmong(db, candidates.splice(0))));
  }
  if (candidates.length) orphanBlobs.push(...(await orphansAmong(db, candidates)));
  return { staleUploads: stale.map((s) => ({ fileId: s.file_id, blobPath: s.blob_path })), orphanBlobs };
}

async function orphansAmong(db: Db, candidates: { name: string }[]): Promise<string[]> {
  const live = await db.lora.findMany({
    where: { blob_path: { in: candidates.map((c) => c.name) }, status: { in: ['READY', 'UPLOADING'] } },
    select: { blob_path: true },
  });
  const keep = new Set(live.map((l) => l.blob_path));
  return candidates.map((c) => c.name).filter((name) => !keep.has(name));
}

export async function executeReconcile(db: Db, blobs: BlobStore, plan: ReconcilePlan, logger: Logger): Promise<void> {
  for (const upload of plan.staleUploads) {
    await blobs.delete(upload.blobPath);
    await db.flat_file.deleteMany({ where: { id: upload.fileId, lora: { status: { in: ['UPLOADING', 'FAILED'] } } } });
  }
  for (const path of plan.orphanBlobs) await blobs.delete(path);
  if (plan.staleUploads.length || plan.orphanBlobs.length) {
    logger.warn(
      { staleUploads: plan.staleUploads.map((u) => u.fileId.toString()), orphanBlobs: plan.orphanBlobs },
      'reconciler removed leftovers of interrupted uploads',
    );
  }
}
