import type { Tx } from '../db/client.ts';

/** Durable background jobs (pg-boss queues). One place for every queue name and payload. */
export const Queue = {
  /** Delete a soft-deleted LoRA's blob. Idempotent; a storage 404 counts as done. */
  DELETE_LORA_BLOB: 'lora.delete-blob',
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
}

/** `deletionId` names one deleteUserLoraAccount: a job of a cancelled deletion finds no match and does nothing. */
export interface PurgeAccountJob {
  userId: string;
  deletionId: string;
}

export interface JobPayloads {
  [Queue.DELETE_LORA_BLOB]: DeleteLoraBlobJob;
  [Queue.RECONCILE_UPLOADS]: Record<string, never>;
  [Queue.PURGE_ACCOUNT]: PurgeAccountJob;
  [Queue.AUDIT_RETENTION]: Record<string, never>;
}

export interface EnqueueOptions {
  /** Not before this time (pg-boss `startAfter`). */
  startAfter?: Date;
}

export interface JobQueue {
  /** Enqueues a job inside the caller's Prisma transaction: it exists iff the transaction commits. */
  enqueue<Q extends keyof JobPayloads>(tx: Tx, queue: Q, payload: JobPayloads[Q], options?: EnqueueOptions): Promise<void>;
  /**
   * Does a committed DELETE_LORA_BLOB job's work at once, in this process, giving up after
   * `IMMEDIATE_DELETE_TIMEOUT_MS`; never throws. Its job stays queued as the durable fallback (a
   * blob already gone counts as done). Resolves with whether the blob is gone now.
   */
  deleteBlobNow(job: DeleteLoraBlobJob): Promise<boolean>;
}

/** How long `deleteBlobNow` waits for storage (the caller's response waits for it). */
export const IMMEDIATE_DELETE_TIMEOUT_MS = 2_000;
