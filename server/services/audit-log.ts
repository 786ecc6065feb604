import { z } from 'zod';
import type { Principal } from '../auth/principal.ts';
import type { Db } from '../db/client.ts';
import type { audit_log, Prisma } from '../db/generated/client.ts';
import { RequestError, RequestErrorCode, ValidationError } from '../domain/errors.ts';
import { parseArgs, uuid } from '../domain/validation.ts';

/**
 * Admins read the audit trail: `auditLog` pages newest first by an opaque cursor (the entry id,
 * so pages never shift while new entries arrive), and the JSON-lines export reads oldest first
 * in batches by the same key (keyset pagination: memory bounded by one batch, no transaction or
 * server-side cursor held open for the length of a download).
 */

export type AuditRow = audit_log;

export interface AuditFilter {
  userId?: string | null;
  action?: string | null;
  /** Entries at or after this time. */
  from?: Date | null;
  /** Entries before this time. */
  to?: Date | null;
}

export interface AuditPage {
  entries: AuditRow[];
  pageInfo: { endCursor: string | null; hasNextPage: boolean };
}

export const AUDIT_PAGE_MAX = 200;
const EXPORT_BATCH = 1000;

export const auditFilter = z.object({
  userId: uuid.nullish(),
  action: z.string().trim().min(1).max(100).nullish(),
  from: z.date().nullish(),
  to: z.date().nullish(),
});

const pageArgs = z.object({
  filter: auditFilter.nullish(),
  first: z.number().int().min(1, 'at least 1').max(AUDIT_PAGE_MAX, `at most ${AUDIT_PAGE_MAX}`).nullish(),
  after: z.string().max(100).nullish(),
});

/** The cursor of an entry: opaque to clients (base64url of its id). */
export function auditCursor(id: bigint): string {
  return Buffer.from(`audit:${id}`).toString('base64url');
}

function cursorId(cursor: string): bigint {
  const match = /^audit:(\d{1,19})$/.exec(Buffer.from(cursor, 'base64url').toString());
  if (!match?.[1]) throw new ValidationError([{ path: 'after', message: 'not a cursor of auditLog' }]);
  return BigInt(match[1]);
}

function whereOf(filter: AuditFilter | null | undefined): Prisma.audit_logWhereInput {
  return {
    ...(filter?.userId ? { user_id: filter.userId } : {}),
    ...(filter?.action ? { action: filter.action } : {}),
    ...(filter?.from || filter?.to
      ? { at: { ...(filter.from ? { gte: filter.from } : {}), ...(filter.to ? { lt: filter.to } : {}) } }
      : {}),
  };
}

function assertAdmin(principal: Principal): void {
  if (principal.role !== 'admin') throw new RequestError(RequestErrorCode.FORBIDDEN, 'Only admins read the audit log');
}

export class AuditLogService {
  constructor(private readonly db: Db) {}

  async page(
    principal: Principal,
    input: { filter?: AuditFilter | null; first?: number | null; after?: string | null },
  ): Promise<AuditPage> {
    assertAdmin(principal);
    const args = parseArgs(pageArgs, input);
    const first = args.first ?? 50;
    const before = args.after ? cursorId(args.after) : null;
    const rows = await this.db.audit_log.findMany({
      where: { ...whereOf(args.filter), ...(before !== null ? { id: { lt: before } } : {}) },
      orderBy: { id: 'desc' },
      take: first + 1,
    });
    const entries = rows.slice(0, first);
    const last = entries.at(-1);
    return { entries, pageInfo: { endCursor: last ? auditCursor(last.id) : null, hasNextPage: rows.length > first } };
  }

  /** Every entry matching `filter`, oldest first, read `batchSize` at a time. */
  async *export(principal: Principal, filter: AuditFilter, batchSize = EXPORT_BATCH): AsyncGenerator<AuditRow[]> {
    assertAdmin(principal);
    const where = whereOf(parseArgs(auditFilter, filter, 'filter'));
    let after = -1n;
    for (;;) {
      const rows = await this.db.audit_log.findMany({ where: { ...where, id: { gt: after } }, orderBy: { id: 'asc' }, take: batchSize });
      if (rows.length === 0) return;
      yield rows;
      after = (rows.at(-1) as AuditRow).id;
      if (rows.length < batchSize) return;
    }
  }
}

/** One entry as the export writes it (the fields of the GraphQL `AuditEntry`). */
export function auditEntryJson(row: AuditRow): Record<string, unknown> {
  return {
    id: row.id.toString(),
    at: row.at.toISOString(),
    action: row.action,
    userId: row.user_id,
    loraId: row.lora_id?.toString() ?? null,
    actorRole: row.actor_role,
    actorId: row.actor_id,
    requestId: row.request_id,
    details: row.details,
  };
}
