import { RestError } from '@azure/storage-blob';
import type { Db, Tx } from '../db/client.ts';
import { type JobQueue, Queue } from '../jobs/queues.ts';
import { BlobChangedError, type BlobStore } from '../storage/blob-store.ts';

/**
 * Content stored once per sha256 (issue 17, docs/decisions.md "Content stored once"). A
 * `lora_blob` row is a base blob at a neutral path (`content/{uuid}.{ext}`) and the number of
 * READY and SUSPENDED LoRAs naming it. Every LoRA gets its own snapshot of the base: downloads read the
 * snapshot, and deleting a LoRA deletes its snapshot — the same storage work whether or not
 * anyone else holds the content, so nothing tells a user that somebody else does. The base goes
 * only when the last reference does, by the content-deletion job (the one deleter of bases).
 * A snapshot shows its base's Last-Modified and ETag as they were when it was taken, so the base
 * is touched right before (THREATS.md row 72): each LoRA's download shows its own link time.
 */

export interface StoredContent {
  blobPath: string;
  snapshot: string;
  /** The base's ETag as touched for this snapshot (what `lora_blob.etag` holds for it next). */
  etag: string;
}

export interface LinkInput {
  sha256: string;
  sizeBytes: number;
  /** The blob this upload wrote (committed, validated). */
  ownPath: string;
  /** Its ETag as committed (a snapshot is taken only while it still matches); unknown = any. */
  ownEtag?: string | undefined;
}

/** How many touch rounds one link waits through before it gives up (LinkRaceError). */
const LINK_ROUNDS = 64;

/** The stored content changed between `prepareLink` and `commitLink` (a concurrent upload or deletion): prepare again. */
export class LinkRaceError extends Error {
  override name = 'LinkRaceError';
}

/**
 * Before finalize's transaction (no storage call is made inside one): this LoRA's snapshot of
 * the stored content for `sha256` — the linkable base if there is one, else the upload's own
 * blob. Both outcomes do the same work: one read, one touch, one snapshot. The touch (only while
 * the base still has the ETag it was validated with, or that the last link's touch gave it) makes
 * the snapshot's Last-Modified and ETag this link's own; the base's new ETag is stored at once, so
 * the next link's condition follows it. A base that no longer matches (written through an upload
 * SAS afterwards) stops being linkable and the upload's own blob is used; one that another link
 * touched meanwhile is simply tried again.
 */
export async function prepareLink(db: Db, blobs: BlobStore, jobs: JobQueue, input: LinkInput): Promise<StoredContent> {
  // Links of one content touch its base one after another (each touch is conditional on the
  // last one's ETag): N uploads of the same file at once take up to N rounds, each a touch long.
  for (let attempt = 0; attempt < LINK_ROUNDS; attempt++) {
    if (attempt > 0) await new Promise((resolve) => setTimeout(resolve, Math.random() * Math.min(200, 5 * attempt)));
    const row = await db.lora_blob.findFirst({
      where: { container: blobs.container, sha256: input.sha256, linkable: true },
      select: { blob_path: true, etag: true },
    });
    const path = row?.blob_path ?? input.ownPath;
    let expected = row ? row.etag : input.ownEtag;
    try {
      const touched = await blobs.touch(path, expected || undefined);
      if (row) {
        await db.$executeRaw`UPDATE lora_blob SET etag = ${touched} WHERE blob_path = ${path} AND etag = ${row.etag}`;
        expected = touched;
      }
      return { blobPath: path, snapshot: (await blobs.snapshot(path, touched)).snapshot, etag: touched };
    } catch (error) {
      if (!row || path === input.ownPath) throw error;
      if (error instanceof BlobChangedError) {
        if (await touchedByAnotherLink(db, path, expected ?? '')) continue;
        await db.$transaction(async (tx) => {
          const [left] = await tx.$queryRaw<{ ref_count: number }[]>`
            UPDATE lora_blob SET linkable = false, updated_at = now()
            WHERE blob_path = ${path} AND etag = ${expected ?? ''} RETURNING ref_count`;
          if (left?.ref_count === 0) await jobs.enqueue(tx, Queue.DELETE_CONTENT_BLOB, { blobPath: path });
        });
      } else if (!(error instanceof RestError && error.statusCode === 404)) {
        throw error; // (404: its last reference went meanwhile; look again)
      }
    }
  }
  throw new LinkRaceError(`could not snapshot stored content ${input.sha256}`);
}

/**
 * After a 412 on a base: true when its stored ETag moved on from `expected` (another link touched
 * it and stores the new ETag right after its touch: looked at for up to ~1 s), false when it did
 * not (the base was written by someone else: not linkable any more; on a very slow database, a
 * false "not linkable" costs one more stored copy of the content, never a file).
 */
async function touchedByAnotherLink(db: Db, path: string, expected: string): Promise<boolean> {
  for (const wait of [0, 100, 300, 600]) {
    if (wait) await new Promise((resolve) => setTimeout(resolve, wait));
    const now = await db.lora_blob.findUnique({ where: { blob_path: path }, select: { etag: true, linkable: true } });
    if (!now?.linkable || now.etag !== expected) return true;
  }
  return false;
}

/**
 * Inside finalize's transaction (before the quota charge): one more reference on the content
 * `prepareLink` snapshotted — LinkRaceError when the linkable content for this sha256 is no longer
 * that one (the caller prepares again). When the content was stored before, this upload's own
 * blob is not needed: a content-deletion job for it is enqueued in the same transaction.
 */
export async function commitLink(tx: Tx, blobs: BlobStore, jobs: JobQueue, input: LinkInput, prepared: StoredContent): Promise<void> {
  const [row] = await tx.$queryRaw<{ blob_path: string }[]>`
    INSERT INTO lora_blob (blob_path, container, sha256, size_bytes, etag, ref_count)
    VALUES (${input.ownPath}, ${blobs.container}, ${input.sha256}, ${input.sizeBytes}, ${prepared.blobPath === input.ownPath ? prepared.etag : ''}, 1)
    ON CONFLICT (container, sha256) WHERE linkable
    DO UPDATE SET ref_count = lora_blob.ref_count + 1, updated_at = now()
    RETURNING blob_path`;
  if (row?.blob_path !== prepared.blobPath) throw new LinkRaceError(`content ${input.sha256} changed while linking`);
  if (prepared.blobPath !== input.ownPath) await jobs.enqueue(tx, Queue.DELETE_CONTENT_BLOB, { blobPath: input.ownPath });
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
