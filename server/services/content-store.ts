import type { Tx } from '../db/client.ts';
import { type JobQueue, Queue } from '../jobs/queues.ts';
import { BlobChangedError, type BlobStore } from '../storage/blob-store.ts';

/**
 * Content stored once per sha256 (issue 17, docs/decisions.md "Content stored once"). A
 * `lora_blob` row is a base blob at a neutral path (`content/{uuid}.{ext}`) and the number of
 * READY LoRAs naming it. Every LoRA gets its own snapshot of the base: downloads read the
 * snapshot, and deleting a LoRA deletes its snapshot — the same storage work whether or not
 * anyone else holds the content, so nothing tells a user that somebody else does. The base goes
 * only when the last reference does, by the content-deletion job (the one deleter of bases).
 */

export interface StoredContent {
  blobPath: string;
  snapshot: string;
}

export interface LinkInput {
  sha256: string;
  sizeBytes: number;
  /** The blob this upload wrote (committed, validated). */
  ownPath: string;
  /** Its ETag as committed (a snapshot is taken only while it still matches); unknown = any. */
  ownEtag?: string | undefined;
}

/**
 * Inside finalize's transaction (before the quota charge): the stored content for `sha256`, with
 * one more reference and a new snapshot for this LoRA. When the content was already stored, this
 * upload's own blob is not needed: a content-deletion job for it is enqueued in the same
 * transaction (nothing names it, so the job deletes it). Both outcomes do the same work here:
 * one upsert, one snapshot, one enqueue-or-not inside the transaction.
 */
export async function linkContent(tx: Tx, blobs: BlobStore, jobs: JobQueue, input: LinkInput): Promise<StoredContent> {
  for (let attempt = 0; attempt < 3; attempt++) {
    // Lock order: the row lock of the content first (the caller holds the LoRA row; the quota row comes last).
    const [row] = await tx.$queryRaw<{ blob_path: string; etag: string }[]>`
      INSERT INTO lora_blob (blob_path, sha256, size_bytes, etag, ref_count)
      VALUES (${input.ownPath}, ${input.sha256}, ${input.sizeBytes}, ${input.ownEtag ?? ''}, 1)
      ON CONFLICT (sha256) WHERE linkable
      DO UPDATE SET ref_count = lora_blob.ref_count + 1, updated_at = now()
      RETURNING blob_path, etag`;
    if (!row) throw new Error('lora_blob upsert returned nothing');
    const own = row.blob_path === input.ownPath;
    try {
      const taken = await blobs.snapshot(row.blob_path, row.etag || undefined);
      if (own && !row.etag) await tx.lora_blob.update({ where: { blob_path: row.blob_path }, data: { etag: taken.etag } });
      if (!own) await jobs.enqueue(tx, Queue.DELETE_CONTENT_BLOB, { blobPath: input.ownPath });
      return { blobPath: row.blob_path, snapshot: taken.snapshot };
    } catch (error) {
      if (!(error instanceof BlobChangedError) || own) throw error;
      // The stored base is not what was validated (written through an upload SAS after it was
      // validated): it stops being linkable (its LoRAs keep their own snapshots), and this
      // upload's blob becomes the content.
      const [left] = await tx.$queryRaw<{ ref_count: number }[]>`
        UPDATE lora_blob SET linkable = false, ref_count = ref_count - 1, updated_at = now()
        WHERE blob_path = ${row.blob_path} RETURNING ref_count`;
      if (left?.ref_count === 0) await jobs.enqueue(tx, Queue.DELETE_CONTENT_BLOB, { blobPath: row.blob_path });
    }
  }
  throw new Error(`could not store content ${input.sha256}`);
}

/**
 * Inside the delete's transaction: one reference fewer. At zero, a content-deletion job is
 * enqueued in the same transaction; the job deletes the row, then the base, only if the count is
 * still zero then (an upload of the same content meanwhile keeps it). Rows of LoRAs older than
 * issue 17 have no lora_blob row: false.
 */
export async function unlinkContent(tx: Tx, jobs: JobQueue, blobPath: string): Promise<boolean> {
  const [row] = await tx.$queryRaw<{ ref_count: number }[]>`
    UPDATE lora_blob SET ref_count = GREATEST(ref_count - 1, 0), updated_at = now()
    WHERE blob_path = ${blobPath} RETURNING ref_count`;
  if (!row) return false;
  if (row.ref_count === 0) await jobs.enqueue(tx, Queue.DELETE_CONTENT_BLOB, { blobPath });
  return true;
}
