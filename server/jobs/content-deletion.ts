import type { Logger } from 'pino';
import type { Db } from '../db/client.ts';
import type { BlobStore } from '../storage/blob-store.ts';

/**
 * The DELETE_CONTENT_BLOB job: the one deleter of stored content. The row goes first, and only
 * at ref_count 0 (an upload linking the same content meanwhile has raised it, and then nothing is
 * deleted); once the row is gone nothing can link to the base again (its path is never reused),
 * so the base and its snapshots are deleted. A retry after a failed blob delete finds no row and
 * deletes the blob again (404 = done). A path no row ever named (an upload's own blob that turned
 * out to duplicate stored content) is simply deleted.
 */
export async function deleteContentIfUnused(db: Db, blobs: BlobStore, blobPath: string, logger: Logger): Promise<'deleted' | 'in-use'> {
  const still = await db.$transaction(async (tx) => {
    await tx.$executeRaw`DELETE FROM lora_blob WHERE blob_path = ${blobPath} AND ref_count = 0`;
    return tx.lora_blob.findUnique({ where: { blob_path: blobPath }, select: { ref_count: true } });
  });
  if (still) {
    logger.info({ blobPath, refCount: still.ref_count }, 'content still referenced; kept');
    return 'in-use';
  }
  const outcome = await blobs.purge(blobPath);
  logger.info({ blobPath, outcome }, 'deleted stored content');
  return 'deleted';
}
