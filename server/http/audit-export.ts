import { once } from 'node:events';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { z } from 'zod';
import { InvalidTokenError, type TokenVerifier } from '../auth/tokens.ts';
import { RequestErrorCode } from '../domain/errors.ts';
import { type AuditLogService, type AuditRow, auditEntryJson } from '../services/audit-log.ts';
import { bearerToken } from './auth-plugin.ts';

/**
 * GET /admin/audit.jsonl?from=&to=&userId=&action= — the audit trail as JSON lines (one entry per
 * line, oldest first, the fields of the GraphQL `AuditEntry`), for an admin bearer token. Streamed
 * batch by batch from the service's keyset reader, waiting for the socket to drain, and stopped
 * when the client goes away: memory does not grow with the log. Refusals are JSON like the
 * GraphQL errors: 401 without a valid token, 403 for other roles, 400 for bad parameters, 405
 * for other methods.
 */

export const AUDIT_EXPORT_PATH = '/admin/audit.jsonl';

const dateTime = z.iso.datetime({ offset: true }).transform((v) => new Date(v));
const params = z.object({
  from: dateTime.optional(),
  to: dateTime.optional(),
  userId: z.string().optional(),
  action: z.string().optional(),
});

function refuse(res: ServerResponse, status: number, code: string, message: string, extra: Record<string, unknown> = {}): void {
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8' });
  res.end(JSON.stringify({ errors: [{ message, extensions: { code, ...extra } }] }));
}

export function createAuditExportHandler(deps: { verify: TokenVerifier; auditLog: AuditLogService; logger: Logger }) {
  return async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    if (req.method !== 'GET') {
      res.setHeader('allow', 'GET');
      return refuse(res, 405, RequestErrorCode.BAD_USER_INPUT, 'Use GET');
    }
    const token = bearerToken(req.headers.authorization ?? null);
    let principal: Awaited<ReturnType<TokenVerifier>>;
    try {
      if (!token) return refuse(res, 401, RequestErrorCode.UNAUTHENTICATED, 'Authentication required');
      principal = await deps.verify(token);
    } catch (error) {
      if (error instanceof InvalidTokenError) return refuse(res, 401, RequestErrorCode.UNAUTHENTICATED, 'Invalid or expired token');
      throw error;
    }
    if (principal.role !== 'admin') return refuse(res, 403, RequestErrorCode.FORBIDDEN, 'Only admins export the audit log');
    const query = Object.fromEntries(new URL(req.url ?? '/', 'http://localhost').searchParams);
    const parsed = params.safeParse(query);
    if (!parsed.success) {
      const issues = parsed.error.issues.map((i) => ({ path: i.path.join('.'), message: i.message }));
      return refuse(res, 400, RequestErrorCode.BAD_USER_INPUT, 'Bad export parameters', { issues });
    }
    const batches = deps.auditLog.export(principal, parsed.data);
    let first: IteratorResult<AuditRow[]>;
    try {
      first = await batches.next(); // a bad filter is refused before the 200 goes out
    } catch (error) {
      const issues = (error as { issues?: unknown }).issues;
      if (issues) return refuse(res, 400, RequestErrorCode.BAD_USER_INPUT, 'Bad export parameters', { issues });
      throw error;
    }
    res.writeHead(200, {
      'content-type': 'application/x-ndjson; charset=utf-8',
      'content-disposition': 'attachment; filename="audit.jsonl"',
      'cache-control': 'no-store',
    });
    let gone = false;
    res.once('close', () => {
      gone = true;
    });
    try {
      for (let batch = first; !batch.done && !gone; batch = await batches.next()) {
        const text = `${batch.value.map((row) => JSON.stringify(auditEntryJson(row))).join('\n')}\n`;
        if (!res.write(text) && !gone) await Promise.race([once(res, 'drain'), once(res, 'close')]);
      }
      if (!gone) res.end();
    } catch (error) {
      deps.logger.error({ err: error }, 'audit export failed mid-stream');
      res.destroy(error as Error); // the client sees a cut stream, never a complete-looking file
    } finally {
      await batches.return(undefined);
    }
  };
}
