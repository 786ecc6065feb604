import { randomUUID } from 'node:crypto';
import type { Principal } from '../auth/principal.ts';
import type { Db, Tx } from '../db/client.ts';
import { AccountDeletedError, RequestError, RequestErrorCode } from '../domain/errors.ts';
import { parseArgs, uuid } from '../domain/validation.ts';
import { CacheEventType, cacheEvent, type EventBus, Topic } from '../events/bus.ts';
import { type JobQueue, Queue } from '../jobs/queues.ts';
import { AuditAction, audit } from './audit.ts';
import type { QuotaService, QuotaView } from './quotas.ts';

/**
 * Deleting a user's LoRA account (seed: "on user account deletion, mark all LoRAs as hidden,
 * purge within 30 days"). `delete` — in one transaction — marks the account deleted
 * (`lora_account_deletion`), suspends every READY LoRA (hidden, SUSPENDED, so no list, download,
 * grant or reconcile confirms it), sets the quota to 0 and enqueues the purge for
 * `purge_after` (jobs/account-purge.ts); machines are told after the commit (LORA_DELETED per
 * LoRA, so agents evict at once, leases permitting). While the mark exists, uploads and job
 * grants for the user are refused (`assertActive`). `cancel` (admins, until the purge starts)
 * restores the suspended LoRAs and the quota. Blobs stay until the purge, so URLs handed out
 * before keep working for at most SAS_TTL_SECONDS.
 *
 * Locks: the user's `lora` rows first (by id), the quota row last, as upload finalize and
 * deleteLora do, so none of them can deadlock with a deletion; finalize checks the mark after
 * locking its row, so an upload in flight either is suspended with the rest or is refused.
 */

export type AccountStatus = 'ACTIVE' | 'DELETED' | 'PURGED';

export interface AccountDeletionView {
  userId: string;
  status: AccountStatus;
  requestedAt: Date | null;
  purgeAfter: Date | null;
  purgedAt: Date | null;
  /** LoRAs this call suspended (delete) or restored (cancel); 0 on a repeat. */
  changedLoras: number;
  quota: QuotaView;
}

type Mark = { deletion_id: string; requested_at: Date; purge_after: Date; purge_started_at: Date | null; purged_at: Date | null };

export class AccountService {
  constructor(
    private readonly db: Db,
    private readonly quotas: QuotaService,
    private readonly jobs: JobQueue,
    private readonly bus: EventBus,
    private readonly purgeDelayMs: number,
  ) {}

  /** Admins and the service role. Idempotent: a repeat changes nothing and keeps the first purge date. */
  async delete(principal: Principal, rawUserId: string): Promise<AccountDeletionView> {
    if (principal.role !== 'admin' && principal.role !== 'service')
      throw new RequestError(RequestErrorCode.FORBIDDEN, 'Only admins and services delete accounts');
    const userId = parseArgs(uuid, rawUserId, 'userId');
    const outcome = await this.db.$transaction(async (tx) => {
      const rows = await lockLoraRows(tx, userId);
      let mark: Mark | null = await tx.lora_account_deletion.findUnique({ where: { user_id: userId } });
      const created = mark === null;
      if (mark === null) {
        const now = Date.now();
        mark = await tx.lora_account_deletion.create({
          data: {
            user_id: userId,
            deletion_id: randomUUID(),
            requested_at: new Date(now),
            purge_after: new Date(now + this.purgeDelayMs),
            requested_by_role: principal.role,
            requested_by_id: principal.subject,
          },
        });
        await this.jobs.enqueue(tx, Queue.PURGE_ACCOUNT, { userId, deletionId: mark.deletion_id }, { startAfter: mark.purge_after });
      }
      const ready = rows.filter((r) => r.status === 'READY').map((r) => r.file_id);
      if (ready.length) await setVisibility(tx, ready, 'SUSPENDED');
      if (!created && ready.length === 0) return { mark, suspended: [] };
      await audit(tx, principal, {
        action: AuditAction.ACCOUNT_DELETE,
        userId,
        details: { suspendedLoras: ready.length, purgeAfter: mark.purge_after, deletionId: mark.deletion_id },
      });
      await this.quotas.recount(tx, userId); // last: the quota row is locked only for the update and the commit
      return { mark, suspended: ready };
    });
    for (const id of outcome.suspended) {
      await this.bus.publish(Topic.CACHE_EVENTS, cacheEvent(CacheEventType.LORA_DELETED, { loraId: id.toString(), userId }));
    }
    return this.view(userId, outcome.mark, outcome.suspended.length);
  }

  /**
   * Admins, until the purge starts (then ACCOUNT_DELETED): the mark goes, the suspended LoRAs are
   * READY again and counted in the quota. An account that is not deleted answers as it is.
   */
  async cancel(principal: Principal, rawUserId: string): Promise<AccountDeletionView> {
    if (principal.role !== 'admin') throw new RequestError(RequestErrorCode.FORBIDDEN, 'Only admins cancel account deletions');
    const userId = parseArgs(uuid, rawUserId, 'userId');
    const restored = await this.db.$transaction(async (tx) => {
      const rows = await lockLoraRows(tx, userId);
      const [mark] = await tx.$queryRaw<Mark[]>`
        SELECT deletion_id::text, requested_at, purge_after, purge_started_at, purged_at
        FROM lora_account_deletion WHERE user_id = ${userId}::uuid FOR UPDATE`;
      if (!mark) return [];
      if (mark.purge_started_at) throw new AccountDeletedError(userId, mark.purge_after, true);
      await tx.lora_account_deletion.delete({ where: { user_id: userId } });
      const suspended = rows.filter((r) => r.status === 'SUSPENDED').map((r) => r.file_id);
      if (suspended.length) await setVisibility(tx, suspended, 'READY');
      await audit(tx, principal, {
        action: AuditAction.ACCOUNT_DELETE_CANCEL,
        userId,
        details: { restoredLoras: suspended.length, deletionId: mark.deletion_id },
      });
      await this.quotas.recount(tx, userId);
      return suspended;
    });
    return this.view(userId, null, restored.length);
  }

  private async view(userId: string, known: Mark | null, changedLoras: number): Promise<AccountDeletionView> {
    const mark = known ?? (await this.db.lora_account_deletion.findUnique({ where: { user_id: userId } }));
    return {
      userId,
      status: !mark ? 'ACTIVE' : mark.purged_at ? 'PURGED' : 'DELETED',
      requestedAt: mark?.requested_at ?? null,
      purgeAfter: mark?.purge_after ?? null,
      purgedAt: mark?.purged_at ?? null,
      changedLoras,
      quota: await this.quotas.get({ role: 'user', userId }),
    };
  }
}

/**
 * Throws ACCOUNT_DELETED when the user's LoRA account is deleted. Upload finalize calls it in its
 * transaction after locking its row, so it sees a deletion that locked the row first.
 */
export async function assertAccountActive(db: Tx | Db, userId: string): Promise<void> {
  const mark = await db.lora_account_deletion.findUnique({ where: { user_id: userId } });
  if (mark) throw new AccountDeletedError(userId, mark.purge_after, mark.purge_started_at !== null);
}

/** Every `lora` row of the user, locked in id order (the lock order of a deletion; see above). */
async function lockLoraRows(tx: Tx, userId: string): Promise<{ file_id: bigint; status: string }[]> {
  return tx.$queryRaw`SELECT file_id, status::text AS status FROM lora WHERE user_id = ${userId}::uuid ORDER BY file_id FOR UPDATE`;
}

/** READY ⇄ SUSPENDED, with the platform's `flat_file.hidden` in step (docs/flat-file.md). */
async function setVisibility(tx: Tx, fileIds: bigint[], status: 'READY' | 'SUSPENDED'): Promise<void> {
  const now = new Date();
  await tx.lora.updateMany({ where: { file_id: { in: fileIds } }, data: { status, updated_at: now } });
  await tx.flat_file.updateMany({ where: { id: { in: fileIds } }, data: { hidden: status !== 'READY' } });
}
