import type { Logger } from 'pino';
import type { Principal } from '../auth/principal.ts';
import type { Db } from '../db/client.ts';
import { AuditAction, audit } from '../services/audit.ts';
import { unlinkContent } from '../services/content-store.ts';
import type { BlobStore } from '../storage/blob-store.ts';
import type { JobQueue, PurgeAccountJob } from './queues.ts';

/**
 * The purge of a deleted LoRA account, once its window (ACCOUNT_PURGE_DAYS) has passed: run by
 * the `account.purge` job enqueued with the deletion, and by the reconciler for a purge overdue
 * (a lost job). Claims, plans, executes, logs:
 * 1. claim: `purge_started_at` is set on the deletion mark — only for the deletion the job names,
 *    not purged, and due — from then on an admin's cancel is refused (a blob may be gone);
 * 2. plan: the blobs only this user's rows name (stored content shared by sha256 is not one: its
 *    LoRAs' own snapshots go, and their references), the user's upload sessions' blobs, and every
 *    blob under `users/{user_id}/`;
 * 3. delete them (committed or staged; a blob already gone counts as done);
 * 4. one transaction: the user's LoRA `flat_file` rows (their `lora` and usage rows cascade), the
 *    quota row and upload claims go; audit entries about the user lose their details and keep
 *    the user id, action, actor and time; the mark records `purged_at` (it stays as the
 *    tombstone that keeps refusing uploads and grants); one `account.purge` entry.
 * A retry after a crash between the steps starts again at 1 (the claim is kept) and finishes.
 */

const PURGER: Principal = { role: 'service', subject: 'account-purge' };

export type PurgeOutcome = 'purged' | 'not-due' | 'nothing-to-do';

export async function purgeAccount(db: Db, blobs: BlobStore, jobs: JobQueue, job: PurgeAccountJob, logger: Logger): Promise<PurgeOutcome> {
  const claimed = await db.$executeRaw`
    UPDATE lora_account_deletion SET purge_started_at = COALESCE(purge_started_at, now())
    WHERE user_id = ${job.userId}::uuid AND deletion_id = ${job.deletionId}::uuid AND purged_at IS NULL AND purge_after <= now()`;
  if (claimed === 0) {
    const mark = await db.lora_account_deletion.findUnique({ where: { user_id: job.userId } });
    // cancelled, replaced by a newer deletion, or done: this job has nothing to do
    if (!mark || mark.deletion_id !== job.deletionId || mark.purged_at) return 'nothing-to-do';
    return 'not-due';
  }
  const rows = await db.lora.findMany({
    where: { user_id: job.userId },
    select: { file_id: true, blob_path: true, blob_snapshot: true, status: true },
  });
  const sessions = await db.upload_session.findMany({ where: { user_id: job.userId }, select: { id: true, blob_path: true } });
  // Content stored once (issue 17) may be another user's too: this user's LoRAs give up their
  // references in the transaction below and only their own snapshots go here; the base goes by
  // its content-deletion job when no LoRA names it. Blobs no content row names are the user's alone.
  // A completed resumable upload's session names its blob too: stored content when it came first.
  const named = [...rows.map((r) => r.blob_path), ...sessions.map((s) => s.blob_path)];
  const contents = new Set(
    (await db.lora_blob.findMany({ where: { blob_path: { in: named } }, select: { blob_path: true } })).map((c) => c.blob_path),
  );
  const paths = new Set(named.filter((p) => !contents.has(p)));
  for await (const blob of blobs.list(`users/${job.userId}/`, { includeUncommitted: true })) paths.add(blob.name);
  logger.info({ userId: job.userId, loras: rows.length, blobs: paths.size }, 'purging deleted LoRA account');
  for (const row of rows)
    if (contents.has(row.blob_path) && row.blob_snapshot) await blobs.deleteSnapshot(row.blob_path, row.blob_snapshot);
  for (const path of paths) await blobs.purge(path);
  await db.$transaction(async (tx) => {
    const ids = rows.map((r) => r.file_id);
    // READY and SUSPENDED LoRAs hold a reference (a deleted one gave it up when it was deleted)
    for (const row of rows)
      if (contents.has(row.blob_path) && (row.status === 'READY' || row.status === 'SUSPENDED'))
        await unlinkContent(tx, jobs, row.blob_path);
    const files = await tx.flat_file.deleteMany({ where: { id: { in: ids } } });
    await tx.upload_session.deleteMany({ where: { user_id: job.userId } });
    await tx.user_lora_quota.deleteMany({ where: { user_id: job.userId } });
    await tx.upload_claim.deleteMany({ where: { user_id: job.userId } });
    await tx.$executeRaw`UPDATE audit_log SET details = '{}'::jsonb WHERE user_id = ${job.userId}::uuid AND details <> '{}'::jsonb`;
    await tx.lora_account_deletion.update({ where: { user_id: job.userId }, data: { purged_at: new Date() } });
    await audit(tx, PURGER, {
      action: AuditAction.ACCOUNT_PURGE,
      userId: job.userId,
      details: { loras: files.count, blobs: paths.size, deletionId: job.deletionId },
    });
  });
  logger.info({ userId: job.userId, loras: rows.length, blobs: paths.size }, 'purged deleted LoRA account');
  return 'purged';
}

/** Deletions whose purge is overdue by more than `graceMs` (their job was lost): the reconciler runs them. */
export async function overduePurges(db: Db, graceMs: number, now = new Date()): Promise<PurgeAccountJob[]> {
  const marks = await db.lora_account_deletion.findMany({
    where: { purged_at: null, purge_after: { lt: new Date(now.getTime() - graceMs) } },
    select: { user_id: true, deletion_id: true },
    orderBy: { purge_after: 'asc' },
    take: 100,
  });
  return marks.map((m) => ({ userId: m.user_id, deletionId: m.deletion_id }));
}
