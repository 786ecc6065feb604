import type { Logger } from 'pino';
import type { Principal } from '../auth/principal.ts';
import type { Db, Tx } from '../db/client.ts';
import { AuditAction, audit } from '../services/audit.ts';
import type { BlobStore } from '../storage/blob-store.ts';

/**
 * The storage invariants, checked by the reconciler on every run: READY ⇒ not deleted ⇒ blob
 * committed, and each user's quota counters = the sum / count of that user's READY rows.
 * Plans, then repairs, then logs what it found and did:
 * - a READY row with `deleted_at` (a delete that lost the race with finalize): the delete,
 *   which was answered as a success, wins — DELETED, hidden, quota recomputed; the blob goes
 *   with the delete's job or, failing that, as an orphan;
 * - a READY row whose blob is gone (confirmed by a HEAD): unusable, so DELETED and hidden with
 *   an audited `lora.repair` (the user sees it disappear rather than fail every download),
 *   quota recomputed — unless many are (see `missingBlobBrake`): then only reported;
 * - drifted quota counters: recomputed from the READY rows under the quota row lock.
 * Every status change to or from READY takes the user's quota row lock, so counters computed
 * under that lock are exact; the plan is re-checked under the locks before anything changes.
 */

export interface InvariantPlan {
  deletedButReady: { fileId: bigint; userId: string }[];
  readyWithoutBlob: { fileId: bigint; userId: string; blobPath: string }[];
  quotaDrift: { userId: string; usedBytes: number; loraCount: number; readyBytes: number; readyCount: number }[];
  /** READY rows the blob check looked at. */
  readyChecked: number;
  /** The blob check was skipped: more blobs than `maxBlobs` (no row can be judged missing). */
  blobCheckSkipped: boolean;
}

/** The committed blobs under `users/` as the reconciler listed them once, started at `listedFrom`. */
export interface BlobListing {
  committed: ReadonlySet<string>;
  listedFrom: Date;
  /** False when the listing stopped at its limit: then no row can be judged missing. */
  complete: boolean;
}

const RECONCILER: Principal = { role: 'service', subject: 'reconciler' };
const PAGE = 1000;
/** More missing blobs than this many, and than this share of the READY rows, stops the repair. */
const MISSING_BLOB_BRAKE_MIN = 10;
const MISSING_BLOB_BRAKE_RATIO = 0.01;

export async function planInvariants(db: Db, blobs: BlobStore, listing: BlobListing): Promise<InvariantPlan> {
  const deleted = await db.lora.findMany({
    where: { status: 'READY', deleted_at: { not: null } },
    select: { file_id: true, user_id: true },
  });
  const { missing, checked, skipped } = await readyRowsWithoutBlob(db, blobs, listing);
  const drift = await db.$queryRaw<{ user_id: string; used_bytes: bigint; lora_count: number; ready_bytes: bigint; ready_count: bigint }[]>`
    SELECT q.user_id::text AS user_id, q.used_bytes, q.lora_count,
           COALESCE(r.bytes, 0)::bigint AS ready_bytes, COALESCE(r.n, 0)::bigint AS ready_count
    FROM user_lora_quota q
    LEFT JOIN (SELECT user_id, sum(size_bytes) AS bytes, count(*) AS n FROM lora WHERE status = 'READY' GROUP BY user_id) r
      ON r.user_id = q.user_id
    WHERE q.used_bytes <> COALESCE(r.bytes, 0) OR q.lora_count <> COALESCE(r.n, 0)
    UNION ALL
    SELECT r.user_id::text, 0, 0, r.bytes::bigint, r.n::bigint
    FROM (SELECT user_id, sum(size_bytes) AS bytes, count(*) AS n FROM lora WHERE status = 'READY' GROUP BY user_id) r
    WHERE NOT EXISTS (SELECT 1 FROM user_lora_quota q WHERE q.user_id = r.user_id)`;
  return {
    deletedButReady: deleted.map((r) => ({ fileId: r.file_id, userId: r.user_id })),
    readyWithoutBlob: missing,
    quotaDrift: drift.map((d) => ({
      userId: d.user_id,
      usedBytes: Number(d.used_bytes),
      loraCount: Number(d.lora_count),
      readyBytes: Number(d.ready_bytes),
      readyCount: Number(d.ready_count),
    })),
    readyChecked: checked,
    blobCheckSkipped: skipped,
  };
}

/**
 * READY rows whose blob is not in storage. The listing started first; a row READY since before
 * then had its blob committed before then (finalize commits, then readies), so its absence from
 * the listing means the blob is gone — confirmed with a HEAD before it counts.
 */
async function readyRowsWithoutBlob(
  db: Db,
  blobs: BlobStore,
  { committed: names, listedFrom, complete }: BlobListing,
): Promise<{ missing: InvariantPlan['readyWithoutBlob']; checked: number; skipped: boolean }> {
  if (!complete) return { missing: [], checked: 0, skipped: true };
  const missing: InvariantPlan['readyWithoutBlob'] = [];
  let checked = 0;
  for (let after = -1n; ; ) {
    const page = await db.lora.findMany({
      where: { status: 'READY', file_id: { gt: after }, created_at: { lt: listedFrom } },
      select: { file_id: true, user_id: true, blob_path: true },
      orderBy: { file_id: 'asc' },
      take: PAGE,
    });
    checked += page.length;
    for (const row of page) {
      if (!names.has(row.blob_path) && !(await blobs.exists(row.blob_path))) {
        missing.push({ fileId: row.file_id, userId: row.user_id, blobPath: row.blob_path });
      }
    }
    const last = page.at(-1);
    if (!last || page.length < PAGE) return { missing, checked, skipped: false };
    after = last.file_id;
  }
}

function invariantPlanIsEmpty(plan: InvariantPlan): boolean {
  return !plan.deletedButReady.length && !plan.readyWithoutBlob.length && !plan.quotaDrift.length;
}

export async function repairInvariants(db: Db, blobs: BlobStore, plan: InvariantPlan, logger: Logger): Promise<void> {
  if (plan.blobCheckSkipped) logger.warn('reconciler: too many blobs to check that every READY LoRA has its blob; skipped');
  if (invariantPlanIsEmpty(plan)) return;
  const recomputed = new Set<string>();
  for (const row of plan.deletedButReady) {
    if (await retire(db, row.fileId, 'deleted-but-ready')) recomputed.add(row.userId);
  }
  const brake = missingBlobBrake(plan);
  if (brake) {
    logger.error({ readyWithoutBlob: plan.readyWithoutBlob.length, readyChecked: plan.readyChecked }, brake);
  } else {
    for (const row of plan.readyWithoutBlob) {
      if (await blobs.exists(row.blobPath)) continue;
      if (await retire(db, row.fileId, 'blob-missing')) recomputed.add(row.userId);
    }
  }
  for (const drift of plan.quotaDrift) {
    if (recomputed.has(drift.userId)) continue;
    await db.$transaction((tx) => recomputeQuota(tx, drift.userId));
  }
  logger.error(
    {
      deletedButReady: plan.deletedButReady.map((r) => r.fileId.toString()),
      readyWithoutBlob: plan.readyWithoutBlob.map((r) => r.fileId.toString()),
      quotaDrift: plan.quotaDrift,
      counts: {
        deletedButReady: plan.deletedButReady.length,
        readyWithoutBlob: plan.readyWithoutBlob.length,
        quotaDrift: plan.quotaDrift.length,
      },
    },
    'reconciler found broken storage invariants and repaired them',
  );
}

/**
 * Many READY LoRAs without blobs at once means the storage is not the one the database
 * describes (another container or account, a restore): retiring them would hide everyone's
 * LoRAs, and the orphan sweep would then delete their blobs once the storage is put back.
 */
function missingBlobBrake(plan: InvariantPlan): string | undefined {
  const limit = Math.max(MISSING_BLOB_BRAKE_MIN, plan.readyChecked * MISSING_BLOB_BRAKE_RATIO);
  if (plan.readyWithoutBlob.length <= limit) return undefined;
  return 'reconciler: too many READY LoRAs without a blob to be a fault of a few; is this the right storage? Nothing retired';
}

/** READY → DELETED (hidden, audited, quota recomputed) if the row still is what the plan saw. */
async function retire(db: Db, fileId: bigint, reason: 'deleted-but-ready' | 'blob-missing'): Promise<boolean> {
  return db.$transaction(async (tx) => {
    const [row] = await tx.$queryRaw<{ user_id: string; deleted_at: Date | null; size_bytes: bigint; blob_path: string }[]>`
      SELECT user_id::text AS user_id, deleted_at, size_bytes, blob_path FROM lora
      WHERE file_id = ${fileId} AND status = 'READY' FOR UPDATE`;
    if (!row || (reason === 'deleted-but-ready' && !row.deleted_at)) return false;
    const now = new Date();
    await tx.lora.update({ where: { file_id: fileId }, data: { status: 'DELETED', deleted_at: row.deleted_at ?? now, updated_at: now } });
    await tx.flat_file.update({ where: { id: fileId }, data: { hidden: true } });
    // one reference fewer on its stored content (at zero, repairContent deletes it on a later run)
    await tx.$executeRaw`
      UPDATE lora_blob SET ref_count = GREATEST(ref_count - 1, 0), updated_at = now() WHERE blob_path = ${row.blob_path}`;
    await audit(tx, RECONCILER, {
      action: AuditAction.REPAIR,
      userId: row.user_id,
      loraId: fileId,
      details: { reason, sizeBytes: Number(row.size_bytes) },
    });
    await recomputeQuota(tx, row.user_id);
    return true;
  });
}

/** Sets the user's counters to the sum / count of their READY rows, under the quota row lock. */
async function recomputeQuota(tx: Tx, userId: string): Promise<void> {
  await tx.$executeRaw`INSERT INTO user_lora_quota (user_id) VALUES (${userId}::uuid) ON CONFLICT (user_id) DO NOTHING`;
  await tx.$queryRaw`SELECT 1 FROM user_lora_quota WHERE user_id = ${userId}::uuid FOR UPDATE`;
  await tx.$executeRaw`
    UPDATE user_lora_quota q
    SET used_bytes = r.bytes, lora_count = r.n, updated_at = now()
    FROM (SELECT COALESCE(sum(size_bytes), 0)::bigint AS bytes, count(*)::int AS n
          FROM lora WHERE user_id = ${userId}::uuid AND status = 'READY') r
    WHERE q.user_id = ${userId}::uuid`;
}
