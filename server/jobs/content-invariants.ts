import type { Logger } from 'pino';
import type { Db } from '../db/client.ts';
import type { BlobStore } from '../storage/blob-store.ts';
import { deleteContentIfUnused } from './content-deletion.ts';

/**
 * Issue 17's invariants, checked by the reconciler on every run (plan, repair, log):
 * - each stored content's `ref_count` = the READY and SUSPENDED (account deleted, restorable) LoRAs naming its base (recomputed under the
 *   content row's lock when it drifted, e.g. after a crash between steps that never happens in
 *   one transaction, or a repair that retired a LoRA);
 * - a content at zero references older than `staleAfterMs` has no job left to delete it (one is
 *   enqueued with every drop to zero): deleted here, by the same code as the job;
 * - resumable upload sessions past `expires_at` still OPEN end EXPIRED (their reservation stops
 *   counting at `expires_at` already) and their blob is removed — only when this run ended them,
 *   so a completion that won the race keeps its blob. A COMPLETING one is being validated (a
 *   completion begun just before `expires_at` may read for minutes): it ends EXPIRED only past
 *   `expires_at` + `staleAfterMs` (UPLOAD_STALE_SECONDS, as an upload stuck in UPLOADING), the
 *   leftover of a crash.
 */

export interface ContentPlan {
  refDrift: { blobPath: string; refCount: number; readyCount: number }[];
  unreferenced: string[];
  expiredSessions: { id: string; blobPath: string }[];
  /** How long past `expires_at` a COMPLETING session is left to its completion (the stale time). */
  completingGraceMs: number;
}

export async function planContent(db: Db, cutoff: Date, now = new Date()): Promise<ContentPlan> {
  const drift = await db.$queryRaw<{ blob_path: string; ref_count: number; ready: bigint }[]>`
    SELECT b.blob_path, b.ref_count, COALESCE(r.n, 0)::bigint AS ready
    FROM lora_blob b
    LEFT JOIN (SELECT blob_path, count(*) AS n FROM lora WHERE status IN ('READY', 'SUSPENDED') GROUP BY blob_path) r ON r.blob_path = b.blob_path
    WHERE b.ref_count <> COALESCE(r.n, 0)`;
  const unreferenced = await db.lora_blob.findMany({
    where: { ref_count: 0, updated_at: { lt: cutoff } },
    select: { blob_path: true },
  });
  const completingGraceMs = Math.max(0, now.getTime() - cutoff.getTime());
  const expired = await db.upload_session.findMany({
    where: expiredSessions(now, completingGraceMs),
    select: { id: true, blob_path: true },
  });
  return {
    refDrift: drift.map((d) => ({ blobPath: d.blob_path, refCount: d.ref_count, readyCount: Number(d.ready) })),
    unreferenced: unreferenced.map((u) => u.blob_path),
    expiredSessions: expired.map((e) => ({ id: e.id, blobPath: e.blob_path })),
    completingGraceMs,
  };
}

/** OPEN past `expires_at`, or COMPLETING past `expires_at` + `graceMs`. */
function expiredSessions(now: Date, graceMs: number) {
  return {
    OR: [
      { state: 'OPEN' as const, expires_at: { lt: now } },
      { state: 'COMPLETING' as const, expires_at: { lt: new Date(now.getTime() - graceMs) } },
    ],
  };
}

export async function repairContent(db: Db, blobs: BlobStore, plan: ContentPlan, logger: Logger): Promise<void> {
  const zero: string[] = [...plan.unreferenced];
  for (const drift of plan.refDrift) {
    const [now] = await db.$queryRaw<{ ref_count: number }[]>`
      UPDATE lora_blob b SET ref_count = (SELECT count(*) FROM lora l WHERE l.blob_path = b.blob_path AND l.status IN ('READY', 'SUSPENDED')),
        updated_at = now()
      WHERE b.blob_path = ${drift.blobPath} RETURNING ref_count`;
    if (now?.ref_count === 0) zero.push(drift.blobPath);
  }
  for (const path of new Set(zero)) await deleteContentIfUnused(db, blobs, path, logger);
  let expired = 0;
  for (const session of plan.expiredSessions) {
    const { count } = await db.upload_session.updateMany({
      where: { id: session.id, ...expiredSessions(new Date(), plan.completingGraceMs) },
      data: { state: 'EXPIRED', updated_at: new Date() },
    });
    if (!count) continue;
    expired++;
    await blobs.purge(session.blobPath);
  }
  if (plan.refDrift.length || zero.length || expired) {
    logger.warn(
      { refDrift: plan.refDrift, unreferenced: zero, expiredSessions: plan.expiredSessions.map((s) => s.id) },
      'reconciler: stored content and upload sessions repaired',
    );
  }
}
