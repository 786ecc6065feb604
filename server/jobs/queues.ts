import type { Tx } from '../db/client.ts';

/** Durable background jobs (pg-boss queues). One place for every queue name and payload. */
export const Queue = {
  /**
   * Delete a soft-deleted LoRA's own object: its snapshot of the shared base, or (LoRAs older
   * than issue 17) its own blob. Idempotent; a storage 404 counts as done. `deleteLora` does the
   * work at once and then cancels the job (state `cancelled` = done by deleteLora).
   */
  DELETE_LORA_BLOB: 'lora.delete-blob',
  /** Delete a stored content (lora_blob row, then its base blob) once no LoRA names it. The one deleter of bases. */
  DELETE_CONTENT_BLOB: 'lora.delete-content',
  /** Remove leftovers of interrupted uploads (scheduled; see jobs/reconciler.ts). */
  RECONCILE_UPLOADS: 'lora.reconcile-uploads',
  /** Purge a deleted account's blobs and rows once its window has passed (jobs/account-purge.ts). */
  PURGE_ACCOUNT: 'account.purge',
  /** Delete audit entries older than AUDIT_RETENTION_DAYS (scheduled daily; jobs/audit-retention.ts). */
  AUDIT_RETENTION: 'audit.retention',
} as const;

export interface DeleteLoraBlobJob {
  loraId: string;
  userId: string;
  blobPath: string;
  /** The LoRA's own snapshot of a shared base; absent for LoRAs with their own blob. */
  snapshot?: string | null;
}

export interface DeleteContentBlobJob {
  blobPath: string;
}

/** `deletionId` names one deleteUserLoraAccount: a job of a cancelled deletion finds no match and does nothing. */
export interface PurgeAccountJob {
  userId: string;
  deletionId: string;
}

export interface JobPayloads {
  [Queue.DELETE_LORA_BLOB]: DeleteLoraBlobJob;
  [Queue.DELETE_CONTENT_BLOB]: DeleteContentBlobJob;
  [Queue.RECONCILE_UPLOADS]: Record<string, never>;
  [Queue.PURGE_ACCOUNT]: PurgeAccountJob;
  [Queue.AUDIT_RETENTION]: Record<string, never>;
}

export interface EnqueueOptions {
  /** Not before this time (pg-boss `startAfter`). */
  startAfter?: Date;
}

export interface JobQueue {
  /** Enqueues a job inside the caller's Prisma transaction: it exists iff the transaction commits. Resolves with its id. */
  enqueue<Q extends keyof JobPayloads>(tx: Tx, queue: Q, payload: JobPayloads[Q], options?: EnqueueOptions): Promise<string | null>;
  /**
   * Does a committed DELETE_LORA_BLOB job's work at once, in this process, giving up after
   * `IMMEDIATE_DELETE_TIMEOUT_MS`; never throws. When it succeeds the queued job `jobId` is
   * cancelled (done: nobody deletes twice); otherwise the job stays as the durable fallback.
   * Resolves with whether the object is gone now.
   */
  deleteBlobNow(job: DeleteLoraBlobJob, jobId?: string | null): Promise<boolean>;
}

/** How long `deleteBlobNow` waits for storage (the caller's response waits for it). */
export const IMMEDIATE_DELETE_TIMEOUT_MS = 2_000;
