import { actorOf, type Principal } from '../auth/principal.ts';
import type { Tx } from '../db/client.ts';

/** The audit trail: uploads, downloads (grants used), updates, deletions, quota changes, grants. */
export const AuditAction = {
  UPLOAD: 'lora.upload',
  UPDATE: 'lora.update',
  DELETE: 'lora.delete',
  /** The reconciler retired a READY LoRA that broke an invariant (deleted, or its blob gone). */
  REPAIR: 'lora.repair',
  DOWNLOAD_GRANTED: 'lora.download-granted',
  SHARED_DOWNLOAD_GRANTED: 'shared-lora.download-granted',
  QUOTA_SET: 'quota.set',
  GRANT_CREATED: 'grant.create',
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
    },
  });
}
