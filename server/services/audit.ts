import { actorOf, type Principal } from '../auth/principal.ts';
import type { Tx } from '../db/client.ts';

/**
 * The audit trail: every mutation that changes data or grants access writes one entry, in the
 * transaction of the change (read by admins through `auditLog` and GET /admin/audit.jsonl,
 * services/audit-log.ts; trimmed to AUDIT_RETENTION_DAYS by jobs/audit-retention.ts).
 */
export const AuditAction = {
  UPLOAD: 'lora.upload',
  UPDATE: 'lora.update',
  DELETE: 'lora.delete',
  /** The reconciler retired a READY LoRA that broke an invariant (deleted, or its blob gone). */
  REPAIR: 'lora.repair',
  DOWNLOAD_GRANTED: 'lora.download-granted',
  /** The owner (or an admin) got a download URL of their own LoRA (createLoraDownload). */
  OWNER_DOWNLOAD: 'lora.owner-download',
  /** A machine counted uses of a user's LoRAs (recordLoraUsage). */
  USAGE_RECORDED: 'lora.usage-recorded',
  SHARED_DOWNLOAD_GRANTED: 'shared-lora.download-granted',
  QUOTA_SET: 'quota.set',
  GRANT_CREATED: 'grant.create',
  ACCOUNT_DELETE: 'account.delete',
  ACCOUNT_DELETE_CANCEL: 'account.delete-cancel',
  ACCOUNT_PURGE: 'account.purge',
  /** The retention job removed entries older than AUDIT_RETENTION_DAYS. */
  AUDIT_RETENTION: 'audit.retention',
} as const;
export type AuditAction = (typeof AuditAction)[keyof typeof AuditAction];

export interface AuditEntry {
  action: AuditAction;
  userId?: string | null;
  loraId?: bigint | null;
  details?: Record<string, unknown>;
}

export async function audit(tx: Tx, actor: Principal, entry: AuditEntry): Promise<void> {
  const who = actorOf(actor);
  await tx.audit_log.create({
    data: {
      actor_role: who.role,
      actor_id: who.id,
      action: entry.action,
      user_id: entry.userId ?? null,
      lora_id: entry.loraId ?? null,
      details: (entry.details ?? {}) as object,
      request_id: actor.requestId ?? null,
    },
  });
}
