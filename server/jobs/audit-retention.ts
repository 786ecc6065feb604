import type { Logger } from 'pino';
import type { Principal } from '../auth/principal.ts';
import type { Db } from '../db/client.ts';
import { AuditAction, audit } from '../services/audit.ts';

/**
 * AUDIT_RETENTION_DAYS: entries older than that are deleted, oldest first, 10,000 per
 * transaction (each batch short, so the table is never locked for long), by the scheduled
 * `audit.retention` job (daily). A run that deleted anything says so in one entry of its own.
 */

const RETENTION: Principal = { role: 'service', subject: 'audit-retention' };
const BATCH = 10_000;

export async function enforceAuditRetention(db: Db, retentionDays: number, logger: Logger, now = new Date()): Promise<number> {
  const cutoff = new Date(now.getTime() - retentionDays * 86_400_000);
  let deleted = 0;
  for (;;) {
    const n = await db.$executeRaw`
      DELETE FROM audit_log WHERE id IN (SELECT id FROM audit_log WHERE at < ${cutoff} ORDER BY at LIMIT ${BATCH})`;
    deleted += n;
    if (n < BATCH) break;
  }
  if (deleted > 0) {
    await db.$transaction((tx) => audit(tx, RETENTION, { action: AuditAction.AUDIT_RETENTION, details: { deleted, before: cutoff } }));
    logger.info({ deleted, before: cutoff }, 'audit retention: old entries deleted');
  }
  return deleted;
}
