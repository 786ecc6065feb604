import type { Logger } from 'pino';
import type { Db } from '../db/client.ts';
import { type BlobStore, CONTENT_PREFIX } from '../storage/blob-store.ts';
import { overduePurges, purgeAccount } from './account-purge.ts';
import { type ContentPlan, planContent, repairContent } from './content-invariants.ts';
import { type InvariantPlan, planInvariants, repairInvariants } from './invariants.ts';
import type { JobQueue, PurgeAccountJob } from './queues.ts';
import { purgeEndedSessions } from './session-retention.ts';

/**
 * Cleans what a crash left behind (README "Uploading a LoRA": any failure before READY leaves
 * nothing visible). Plans, then executes, then logs what it did:
 * - uploads stuck in UPLOADING (or FAILED) longer than `staleAfterMs` → blob deleted, rows removed;
 * - deleted accounts whose purge is overdue by more than `staleAfterMs` (the purge job was lost)
 *   → purged now (jobs/account-purge.ts); so after the retention window, blobs of a deleted
 *   account are either purged or — written later, or missed — orphans of the next sweep;
 * - blobs under `users/` older than `staleAfterMs` that no READY, UPLOADING or SUSPENDED (an
 *   account deletion's, kept for a cancel until the purge) row names → deleted
 *   (rows DELETED are the blob-deletion job's; it deletes them too, and a 404 counts as done);
 *   among them, blobs with only staged (uncommitted) blocks — a failed upload whose own cleanup
 *   did not run — have their blocks discarded. A live upload's staging blob is named by its
 *   UPLOADING row, so it is touched only once that row is stale too;
 * - the storage invariants (READY ⇒ not deleted ⇒ blob; quota = READY rows): see invariants.ts;
 * - stored content (issue 17: blobs under `content/` are swept too; a lora_blob row or a live
 *   upload session keeps its blob), reference counts and expired upload sessions: content-invariants.ts;
 * - upload sessions ended longer ago than `sessionRetentionMs` → rows deleted (session-retention.ts).
 */

export interface ReconcileOptions {
  /** @default 3 hours: longer than any upload of MAX_UPLOAD_BYTES takes */
  staleAfterMs?: number;
  /** UPLOAD_SESSION_RETENTION_DAYS: ended upload sessions are kept this long. @default 7 days */
  sessionRetentionMs?: number;
  /** Blobs listed per run at most. @default 100,000 */
  maxBlobs?: number;
  now?: Date;
}

export interface ReconcilePlan {
  staleUploads: { fileId: bigint; blobPath: string }[];
  /** Committed blobs no live row names. */
  orphanBlobs: string[];
  /** Blobs of staged blocks only that no live row names, with the bytes staged. */
  stagedLeftovers: { path: string; bytes: number }[];
  invariants: InvariantPlan;
  /** Account deletions past their window whose purge has not run. */
  overduePurges: PurgeAccountJob[];
  /** Stored content (reference counts) and expired resumable upload sessions (content-invariants.ts). */
  content: ContentPlan;
  /** Upload sessions that ended before this are deleted (after `content` expired the overdue ones). */
  endedSessionsBefore: Date;
}

export async function planReconcile(db: Db, blobs: BlobStore, options: ReconcileOptions = {}): Promise<ReconcilePlan> {
  const staleAfterMs = options.staleAfterMs ?? 3 * 3600_000;
  const cutoff = new Date((options.now ?? new Date()).getTime() - staleAfterMs);
  const stale = await db.lora.findMany({
    where: { status: { in: ['UPLOADING', 'FAILED'] }, updated_at: { lt: cutoff } },
    select: { file_id: true, blob_path: true },
  });
  const orphanBlobs: string[] = [];
  const maxBlobs = options.maxBlobs ?? 100_000;
  let seen = 0;
  const candidates: { name: string }[] = [];
  // One listing serves the orphan sweep and the invariant check (READY ⇒ blob committed).
  const listing = { committed: new Set<string>(), listedFrom: new Date(), complete: true };
  const empty = new Set<string>(); // staged-only blobs are listed with length 0
  for await (const blob of listAll(blobs, ['users/', CONTENT_PREFIX])) {
    if (++seen > maxBlobs) {
      listing.complete = false;
      break;
    }
    if (blob.sizeBytes > 0) listing.committed.add(blob.name);
    else empty.add(blob.name);
    const modified = blob.lastModified;
    if (modified && modified < cutoff) candidates.push({ name: blob.name });
    if (candidates.length >= 1000) orphanBlobs.push(...(await orphansAmong(db, candidates.splice(0))));
  }
  if (candidates.length) orphanBlobs.push(...(await orphansAmong(db, candidates)));
  const stagedLeftovers: ReconcilePlan['stagedLeftovers'] = [];
  const committedOrphans: string[] = [];
  for (const path of orphanBlobs) {
    const staged = empty.has(path) ? await stagedOnly(blobs, path) : undefined;
    if (staged === undefined) committedOrphans.push(path);
    else stagedLeftovers.push({ path, bytes: staged });
  }
  return {
    staleUploads: stale.map((s) => ({ fileId: s.file_id, blobPath: s.blob_path })),
    orphanBlobs: committedOrphans,
    stagedLeftovers,
    invariants: await planInvariants(db, blobs, listing),
    overduePurges: await overduePurges(db, staleAfterMs, options.now),
    content: await planContent(db, cutoff, options.now),
    endedSessionsBefore: new Date((options.now ?? new Date()).getTime() - (options.sessionRetentionMs ?? 7 * 86_400_000)),
  };
}

async function* listAll(blobs: BlobStore, prefixes: string[]) {
  for (const prefix of prefixes) yield* blobs.list(prefix, { includeUncommitted: true });
}

/** The bytes staged when the blob has uncommitted blocks and no committed content, else undefined. */
async function stagedOnly(blobs: BlobStore, path: string): Promise<number | undefined> {
  // undefined blocks: gone meanwhile, or not a block blob; the plain delete deals with it
  const blocks = await blobs.blocks(path);
  return blocks && blocks.committedBlocks === 0 && blocks.stagedBlocks > 0 ? blocks.stagedBytes : undefined;
}

async function orphansAmong(db: Db, candidates: { name: string }[]): Promise<string[]> {
  const names = candidates.map((c) => c.name);
  const [live, contents, sessions] = await Promise.all([
    db.lora.findMany({
      where: { blob_path: { in: names }, status: { in: ['READY', 'UPLOADING', 'SUSPENDED'] } },
      select: { blob_path: true },
    }),
    // stored content is the content-deletion job's (and repairContent's), whatever names it
    db.lora_blob.findMany({ where: { blob_path: { in: names } }, select: { blob_path: true } }),
    db.upload_session.findMany({ where: { blob_path: { in: names }, state: { in: ['OPEN', 'COMPLETING'] } }, select: { blob_path: true } }),
  ]);
  const keep = new Set([...live, ...contents, ...sessions].map((l) => l.blob_path));
  return candidates.map((c) => c.name).filter((name) => !keep.has(name));
}

export async function executeReconcile(db: Db, blobs: BlobStore, jobs: JobQueue, plan: ReconcilePlan, logger: Logger): Promise<void> {
  for (const job of plan.overduePurges) {
    logger.error({ userId: job.userId }, 'account purge overdue (its job was lost): purging now');
    await purgeAccount(db, blobs, jobs, job, logger);
  }
  for (const upload of plan.staleUploads) {
    // The rows first, and only while still not READY: an upload finishing right now keeps its blob.
    const removed = await db.flat_file.deleteMany({ where: { id: upload.fileId, lora: { status: { in: ['UPLOADING', 'FAILED'] } } } });
    if (removed.count) await blobs.purge(upload.blobPath);
  }
  for (const path of plan.orphanBlobs) await blobs.delete(path);
  for (const leftover of plan.stagedLeftovers) await blobs.discardStaged(leftover.path);
  if (plan.staleUploads.length || plan.orphanBlobs.length || plan.stagedLeftovers.length) {
    logger.warn(
      {
        staleUploads: plan.staleUploads.map((u) => u.fileId.toString()),
        orphanBlobs: plan.orphanBlobs,
        stagedLeftovers: plan.stagedLeftovers.map((l) => l.path),
        counts: {
          staleUploads: plan.staleUploads.length,
          orphanBlobs: plan.orphanBlobs.length,
          stagedLeftovers: plan.stagedLeftovers.length,
          stagedBytes: plan.stagedLeftovers.reduce((sum, l) => sum + l.bytes, 0),
        },
      },
      'reconciler removed leftovers of interrupted uploads',
    );
  }
  await repairInvariants(db, blobs, plan.invariants, logger);
  await repairContent(db, blobs, plan.content, logger);
  await purgeEndedSessions(db, plan.endedSessionsBefore, logger);
}
