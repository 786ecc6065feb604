import PgBoss from 'pg-boss';
import type { Logger } from 'pino';
import type { Db, Tx } from '../db/client.ts';
import type { BlobStore } from '../storage/blob-store.ts';
import { countBlobDeletion, countReconcileFindings, traceJob } from '../telemetry/job-telemetry.ts';
import { type PurgeOutcome, purgeAccount } from './account-purge.ts';
import { enforceAuditRetention } from './audit-retention.ts';
import { deleteContentIfUnused } from './content-deletion.ts';
import {
  type DeleteContentBlobJob,
  type DeleteLoraBlobJob,
  type EnqueueOptions,
  IMMEDIATE_DELETE_TIMEOUT_MS,
  type JobPayloads,
  type JobQueue,
  type PurgeAccountJob,
  Queue,
} from './queues.ts';
import { executeReconcile, planReconcile, type ReconcilePlan } from './reconciler.ts';

/**
 * pg-boss 10 in the application database (schema `pgboss`). Producers enqueue inside their
 * own transaction (JobQueue); workers run in every replica with JOBS_ENABLED (pg-boss hands each
 * job to one of them). Retries back off exponentially: 5 s, 10 s, 20 s … up to `retryLimit`.
 * Blob deletions are fetched in batches of DELETE_BATCH_SIZE and run concurrently, back to back
 * while the queue is full: a burst of 1,000 drains in seconds, not 1,000 polling intervals.
 */

export interface JobRunnerOptions {
  databaseUrl: string;
  db: Db;
  blobs: BlobStore;
  logger: Logger;
  /** Run workers in this process. @default true */
  workers?: boolean;
  /** How often idle workers poll. @default 2 s (pg-boss's minimum is 0.5 s) */
  pollingIntervalSeconds?: number;
  /** Cron of the upload reconciler. @default every 15 minutes */
  reconcileCron?: string;
  /** Uploads older than this are leftovers. @default 3 hours */
  uploadStaleAfterMs?: number;
  /** UPLOAD_SESSION_RETENTION_DAYS in ms. @default 7 days */
  uploadSessionRetentionMs?: number;
  /** AUDIT_RETENTION_DAYS. @default 365 */
  auditRetentionDays?: number;
  /** Cron of the audit retention job. @default daily at 03:17 */
  auditRetentionCron?: string;
}

export interface JobRunner extends JobQueue {
  /** Runs the upload reconciler at once (it also runs on a schedule). */
  reconcileNow(): Promise<ReconcilePlan>;
  /** Runs the audit retention at once (it also runs daily); resolves with the entries deleted. */
  auditRetentionNow(): Promise<number>;
  /** Runs one account purge at once (what the `account.purge` job does when due). */
  purgeAccountNow(job: PurgeAccountJob): Promise<PurgeOutcome>;
  start(): Promise<void>;
  stop(): Promise<void>;
  boss: PgBoss;
}

const QUEUE_OPTIONS = { retryLimit: 10, retryDelay: 5, retryBackoff: true, expireInSeconds: 300 } as const;

/** Blob-deletion jobs fetched (and deleted concurrently) per round; a full round fetches again at once. */
const DELETE_BATCH_SIZE = 50;

export function createJobRunner(options: JobRunnerOptions): JobRunner {
  const { logger, blobs } = options;
  const boss = new PgBoss({ connectionString: options.databaseUrl, schema: 'pgboss', max: 4 });
  boss.on('error', (error) => logger.error({ err: error }, 'job queue error'));

  async function deleteBlob(job: DeleteLoraBlobJob, signal?: AbortSignal): Promise<void> {
    const outcome = job.snapshot
      ? await blobs.deleteSnapshot(job.blobPath, job.snapshot, signal)
      : await blobs.delete(job.blobPath, signal);
    logger.info({ loraId: job.loraId, blobPath: job.blobPath, snapshot: job.snapshot ?? null, outcome }, 'deleted LoRA blob');
  }

  /**
   * One batch of blob-deletion jobs, all at once. A job that fails is failed alone (pg-boss
   * retries it with backoff); the others complete. A full batch means more are waiting: the
   * worker fetches again at once instead of after the polling interval.
   */
  let deleteWorkerId: string | undefined;
  async function deleteBlobBatch(jobs: PgBoss.Job<DeleteLoraBlobJob>[]): Promise<void> {
    const results = await Promise.allSettled(jobs.map((job) => traceJob(Queue.DELETE_LORA_BLOB, job.id, () => deleteBlob(job.data))));
    const failed = jobs.filter((_, i) => results[i]?.status === 'rejected');
    for (const r of results) countBlobDeletion(r.status === 'fulfilled' ? 'done' : 'failed');
    for (const [i, result] of results.entries()) {
      if (result.status === 'rejected')
        logger.warn({ err: result.reason, loraId: jobs[i]?.data.loraId }, 'blob deletion failed; will retry');
    }
    if (failed.length > 0)
      await boss.fail(
        Queue.DELETE_LORA_BLOB,
        failed.map((job) => job.id),
      );
    if (jobs.length === DELETE_BATCH_SIZE && deleteWorkerId) boss.notifyWorker(deleteWorkerId);
  }

  async function reconcileNow(): Promise<ReconcilePlan> {
    const plan = await planReconcile(options.db, blobs, {
      staleAfterMs: options.uploadStaleAfterMs,
      sessionRetentionMs: options.uploadSessionRetentionMs,
    });
    await executeReconcile(options.db, blobs, runner, plan, logger);
    countReconcileFindings(plan);
    return plan;
  }

  // (runner: the object returned below; these run only after it exists)
  const purgeAccountNow = (job: PurgeAccountJob) => purgeAccount(options.db, blobs, runner, job, logger);
  const auditRetentionNow = () => enforceAuditRetention(options.db, options.auditRetentionDays ?? 365, logger);

  const runner: JobRunner = {
    boss,
    reconcileNow,
    purgeAccountNow,
    auditRetentionNow,
    async start() {
      await boss.start();
      // pg-boss 10 creates queues without a lock: replicas starting together can deadlock (40P01)
      await retryOnDeadlock(() => boss.createQueue(Queue.DELETE_LORA_BLOB, { name: Queue.DELETE_LORA_BLOB, ...QUEUE_OPTIONS }));
      await retryOnDeadlock(() => boss.createQueue(Queue.DELETE_CONTENT_BLOB, { name: Queue.DELETE_CONTENT_BLOB, ...QUEUE_OPTIONS }));
      await retryOnDeadlock(() =>
        boss.createQueue(Queue.RECONCILE_UPLOADS, { name: Queue.RECONCILE_UPLOADS, policy: 'singleton', retryLimit: 0 }),
      );
      await boss.schedule(Queue.RECONCILE_UPLOADS, options.reconcileCron ?? '*/15 * * * *');
      await retryOnDeadlock(() => boss.createQueue(Queue.PURGE_ACCOUNT, { name: Queue.PURGE_ACCOUNT, ...QUEUE_OPTIONS }));
      await retryOnDeadlock(() =>
        boss.createQueue(Queue.AUDIT_RETENTION, { name: Queue.AUDIT_RETENTION, policy: 'singleton', retryLimit: 2 }),
      );
      await boss.schedule(Queue.AUDIT_RETENTION, options.auditRetentionCron ?? '17 3 * * *');
      if (options.workers ?? true) {
        await boss.work(Queue.RECONCILE_UPLOADS, { pollingIntervalSeconds: options.pollingIntervalSeconds ?? 2 }, async ([job]) => {
          await traceJob(Queue.RECONCILE_UPLOADS, job?.id, reconcileNow);
        });
        await boss.work<PurgeAccountJob>(
          Queue.PURGE_ACCOUNT,
          { pollingIntervalSeconds: options.pollingIntervalSeconds ?? 2 },
          async ([job]) => {
            if (!job) return;
            // not due yet (clock skew): fail, so pg-boss retries it with backoff
            if ((await purgeAccountNow(job.data)) === 'not-due') throw new Error(`purge of ${job.data.userId} is not due yet`);
          },
        );
        await boss.work(Queue.AUDIT_RETENTION, { pollingIntervalSeconds: options.pollingIntervalSeconds ?? 2 }, async () => {
          await auditRetentionNow();
        });
        await boss.work<DeleteContentBlobJob>(
          Queue.DELETE_CONTENT_BLOB,
          { pollingIntervalSeconds: options.pollingIntervalSeconds ?? 2, batchSize: 1 },
          async ([job]) => {
            if (job) await deleteContentIfUnused(options.db, blobs, job.data.blobPath, logger);
          },
        );
        deleteWorkerId = await boss.work<DeleteLoraBlobJob>(
          Queue.DELETE_LORA_BLOB,
          { pollingIntervalSeconds: options.pollingIntervalSeconds ?? 2, batchSize: DELETE_BATCH_SIZE },
          deleteBlobBatch,
        );
      }
    },
    async stop() {
      await boss.stop({ graceful: true, timeout: 10_000, wait: true });
    },
    async deleteBlobNow(job: DeleteLoraBlobJob, jobId?: string | null) {
      try {
        await deleteBlob(job, AbortSignal.timeout(IMMEDIATE_DELETE_TIMEOUT_MS));
        // done: the queued fallback need not run (a worker that took it already meets a 404, harmlessly)
        if (jobId) await boss.cancel(Queue.DELETE_LORA_BLOB, jobId).catch(() => {});
        return true;
      } catch (error) {
        logger.warn({ err: error, loraId: job.loraId }, 'immediate blob deletion failed; the queued job will retry');
        return false;
      }
    },
    async enqueue<Q extends keyof JobPayloads>(tx: Tx, queue: Q, payload: JobPayloads[Q], enqueue: EnqueueOptions = {}) {
      return boss.send(queue, payload as object, {
        ...QUEUE_OPTIONS,
        ...(enqueue.startAfter ? { startAfter: enqueue.startAfter } : {}),
        db: {
          executeSql: async (text: string, values: unknown[]) => ({
            rows: await tx.$queryRawUnsafe<unknown[]>(text, ...values),
          }),
        },
      });
    },
  };
  return runner;
}

async function retryOnDeadlock<T>(operation: () => Promise<T>, attempts = 5): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await operation();
    } catch (error) {
      if ((error as { code?: string }).code !== '40P01' || attempt >= attempts) throw error;
      await new Promise((resolve) => setTimeout(resolve, 50 * attempt + Math.random() * 100));
    }
  }
}
