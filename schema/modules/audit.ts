import type { AuditPage } from '../../server/services/audit-log.ts';
import { builder } from '../builder.ts';

/** Admins read the audit trail (export: GET /admin/audit.jsonl, server/http/audit-export.ts). */

const AuditEntryRef = builder.prismaObject('audit_log', {
  name: 'AuditEntry',
  description: 'Who did what, when, from which principal and request.',
  fields: (t) => ({
    // BigInt ids serialized by hand: exposeID refuses BigInt
    id: t.id({ resolve: (row) => row.id.toString() }),
    at: t.expose('at', { type: 'DateTime' }),
    action: t.exposeString('action', {
      description: 'lora.upload, lora.delete, grant.create, account.delete, … (server/services/audit.ts)',
    }),
    userId: t.exposeID('user_id', { nullable: true, description: 'The user whose data or access it concerns' }),
    loraId: t.id({ nullable: true, resolve: (row) => row.lora_id?.toString() ?? null }),
    actorRole: t.exposeString('actor_role', { description: 'user, admin, machine or service' }),
    actorId: t.exposeString('actor_id', {
      nullable: true,
      description: "The principal: a user id, a machine id, an admin's or service's subject",
    }),
    requestId: t.exposeString('request_id', { nullable: true, description: 'x-request-id of the request; null for background jobs' }),
    details: t.expose('details', { type: 'JSON', description: 'What changed (emptied when the user’s account is purged)' }),
  }),
});

const AuditPageInfo = builder.objectRef<AuditPage['pageInfo']>('AuditPageInfo').implement({
  fields: (t) => ({
    endCursor: t.exposeString('endCursor', { nullable: true, description: 'Pass as `after` for the next page' }),
    hasNextPage: t.exposeBoolean('hasNextPage'),
  }),
});

const AuditLogPage = builder.objectRef<AuditPage>('AuditLogPage').implement({
  fields: (t) => ({
    entries: t.expose('entries', { type: [AuditEntryRef], description: 'Newest first' }),
    pageInfo: t.expose('pageInfo', { type: AuditPageInfo }),
  }),
});

const AuditLogFilter = builder.inputType('AuditLogFilter', {
  fields: (t) => ({
    userId: t.id(),
    action: t.string(),
    from: t.field({ type: 'DateTime', description: 'At or after' }),
    to: t.field({ type: 'DateTime', description: 'Before' }),
  }),
});

builder.queryField('auditLog', (t) =>
  t.field({
    type: AuditLogPage,
    description:
      'Admins: audit entries, newest first, `first` (1–200, default 50) after the cursor `after`. Bad arguments throw BAD_USER_INPUT.',
    authScopes: { admin: true },
    args: {
      filter: t.arg({ type: AuditLogFilter }),
      first: t.arg.int({ defaultValue: 50 }),
      after: t.arg.string(),
    },
    resolve: (_root, args, ctx) =>
      ctx.services.auditLog.page(ctx.principal, {
        filter: args.filter ? { ...args.filter, userId: args.filter.userId?.toString() } : null,
        first: args.first,
        after: args.after,
      }),
  }),
);
