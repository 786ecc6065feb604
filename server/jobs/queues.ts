import type { Tx } from '../db/client.ts';

/** Durable background jobs (pg-boss queues). One place for every queue name and payload. */
export const Queue = {
  /** Delete a soft-deleted LoRA's blob. Idempotent; a storage 404 counts as done. */
  DELETE_LORA_BLOB: 'lora.delete-blob',
  /** Remove leftovers of interrupted uploads (scheduled; see jobs/reconciler.ts). */
  RECONCILE_UPLOADS: 'lora.reconcile-uploads',
} as const;

export interface DeleteLoraBlobJob {
  loraId: string;
  userId: string;
  blobPath: string;
}

export interface JobPayloads {
  [Queue.DELETE_LORA_BLOB]: DeleteLoraBlobJob;
  [Queue.RECONCILE_UPLOADS]: Record<string, never>;
}

export interface JobQueue {
  /** Enqueues a job inside the caller's Prisma transaction: it exists iff the transaction commits. */
  enqueue<Q extends keyof JobPayloads>(tx: Tx, queue: Q, payload: JobPayloads[Q]): Promise<void>;
  /**
   * Does a committed DELETE_LORA_BLOB job's work at once, in this process, giving up after
   * `IMMEDIATE_DELETE_TIMEOUT_MS`; never throws. Its job stays queued as the durable fallback (a
   * blob already gone counts as done). Resolves with whether the blob is gone now.
   */
  deleteBlobNow(job: DeleteLoraBlobJob): Promise<boolean>;
}

/** How long `deleteBlobNow` waits for storage (the caller's response waits for it). */
export const IMMEDIATE_DELETE_TIMEOUT_MS = 2_000;
