import { request } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuditLogDocument, type AuditLogQuery, type AuditLogQueryVariables } from '../../sdk/index.ts';
import { codes, dataOf, expectRefused } from '../testkit/graphql-assertions.ts';
import { newUserId } from '../testkit/seed.ts';
import { startTestServer, type TestServer } from '../testkit/server.ts';

/**
 * §5 of issue 13: admins read the audit log (`auditLog`: filters, cursor pages) and export it
 * (GET /admin/audit.jsonl, streamed); a daily job keeps AUDIT_RETENTION_DAYS. Other suites write
 * entries concurrently into the same table, so each test filters on users of its own.
 */

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer();
});
afterAll(async () => {
  await server?.stop();
});

const DAY = 86_400_000;

/** `count` entries for `userId`, one a minute back from `newest`, actions alternating. */
async function plant(userId: string, count: number, newest = new Date()): Promise<void> {
  await server.app.db.$executeRaw`
    INSERT INTO audit_log (at, actor_role, actor_id, action, user_id, details, request_id)
    SELECT ${newest}::timestamptz - (${count} - g) * interval '1 minute', 'admin', 'planter',
           CASE WHEN g % 2 = 0 THEN 'lora.update' ELSE 'lora.delete' END, ${userId}::uuid,
           jsonb_build_object('n', g), 'req-' || g
    FROM generate_series(1, ${count}) AS g`;
}

async function auditLog(variables: AuditLogQueryVariables, token?: string) {
  return server.request(AuditLogDocument, variables, { token: token ?? (await server.tokens.admin()) });
}

async function allPages(variables: AuditLogQueryVariables): Promise<AuditLogQuery['auditLog']['entries']> {
  const out: AuditLogQuery['auditLog']['entries'] = [];
  let after: string | null = null;
  for (let page = 0; page < 100; page++) {
    const { entries, pageInfo }: AuditLogQuery['auditLog'] = dataOf(await auditLog({ ...variables, after })).auditLog;
    out.push(...entries);
    if (!pageInfo.hasNextPage) return out;
    after = pageInfo.endCursor ?? null;
  }
  throw new Error('too many pages');
}

function exportUrl(query: Record<string, string>): string {
  return `${server.url}/admin/audit.jsonl?${new URLSearchParams(query)}`;
}

/** GET over node:http: status, headers and the body as received, with how many chunks it came in. */
function get(url: string, token?: string): Promise<{ status: number; headers: Record<string, unknown>; body: string; chunks: number }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { headers: token ? { authorization: `Bearer ${token}` } : {} }, (res) => {
      let body = '';
      let chunks = 0;
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        body += chunk;
        chunks++;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body, chunks }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

describe('auditLog (admins)', () => {
  it('pages newest first by cursor: every entry once, then hasNextPage false', async () => {
    const userId = newUserId();
    await plant(userId, 25);
    const first = dataOf(await auditLog({ filter: { userId }, first: 10 })).auditLog;
    expect(first.entries).toHaveLength(10);
    expect(first.pageInfo.hasNextPage).toBe(true);
    const entries = await allPages({ filter: { userId }, first: 10 });
    expect(entries).toHaveLength(25);
    expect(new Set(entries.map((e) => e.id)).size).toBe(25);
    const ids = entries.map((e) => BigInt(e.id));
    expect(ids).toEqual([...ids].sort((a, b) => (a > b ? -1 : 1))); // newest first
    expect(entries[0]).toMatchObject({ userId, actorRole: 'admin', actorId: 'planter', requestId: 'req-25', details: { n: 25 } });

    // new entries arriving meanwhile do not shift a page that was already cut
    await plant(userId, 3, new Date(Date.now() + 60_000));
    const next = dataOf(await auditLog({ filter: { userId }, first: 10, after: first.pageInfo.endCursor })).auditLog;
    expect(next.entries.map((e) => e.id)).toEqual(entries.slice(10, 20).map((e) => e.id));
  });

  it('filters by user, action and time range (from inclusive, to exclusive)', async () => {
    const userId = newUserId();
    const newest = new Date(Date.now() - DAY);
    await plant(userId, 20, newest);
    expect(await allPages({ filter: { userId, action: 'lora.update' }, first: 200 })).toHaveLength(10);
    const from = new Date(newest.getTime() - 4 * 60_000).toISOString(); // the newest 5 entries
    const inRange = await allPages({ filter: { userId, from }, first: 200 });
    expect(inRange.map((e) => e.details)).toEqual([{ n: 20 }, { n: 19 }, { n: 18 }, { n: 17 }, { n: 16 }]);
    const to = new Date(newest.getTime() - 18 * 60_000).toISOString();
    expect((await allPages({ filter: { userId, to }, first: 200 })).map((e) => e.details)).toEqual([{ n: 1 }]);
    expect(await allPages({ filter: { userId: newUserId() }, first: 200 })).toEqual([]);
  });

  it('refuses other roles and bad arguments', async () => {
    for (const token of [await server.tokens.user(newUserId()), await server.tokens.machine(), await server.tokens.service()]) {
      expectRefused(await auditLog({ first: 1 }, token), 'FORBIDDEN');
    }
    expectRefused(await server.request(AuditLogDocument, { first: 1 }, {}), 'UNAUTHENTICATED');
    expect(codes(await auditLog({ first: 201 }))).toEqual(['BAD_USER_INPUT']);
    expect(codes(await auditLog({ first: 1, after: 'bm90LWEtY3Vyc29y' }))).toEqual(['BAD_USER_INPUT']);
    expect(codes(await auditLog({ filter: { userId: 'nope' } }))).toEqual(['BAD_USER_INPUT']);
  });
});

describe('GET /admin/audit.jsonl', () => {
  it('streams every matching entry, oldest first, as JSON lines for an admin', async () => {
    const userId = newUserId();
    await plant(userId, 2500);
    const res = await get(exportUrl({ userId }), await server.tokens.admin());
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toBe('application/x-ndjson; charset=utf-8');
    expect(res.headers['transfer-encoding']).toBe('chunked'); // written batch by batch, not as one body
    const lines = res.body
      .trimEnd()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(lines).toHaveLength(2500);
    expect(lines.map((l) => l.details.n)).toEqual(Array.from({ length: 2500 }, (_, i) => i + 1));
    expect(lines[0]).toEqual({
      id: expect.any(String),
      at: expect.any(String),
      action: 'lora.delete',
      userId,
      loraId: null,
      actorRole: 'admin',
      actorId: 'planter',
      requestId: 'req-1',
      details: { n: 1 },
    });
    // read from a keyset cursor in batches (memory bounded by one batch), not loaded whole
    const batches: number[] = [];
    for await (const batch of server.app.services.auditLog.export({ role: 'admin', subject: 't' }, { userId })) batches.push(batch.length);
    expect(batches).toEqual([1000, 1000, 500]);
    // the same entries as auditLog serves
    const viaGraphql = await allPages({ filter: { userId, action: 'lora.update' }, first: 200 });
    const exported = (await get(exportUrl({ userId, action: 'lora.update' }), await server.tokens.admin())).body.trimEnd().split('\n');
    expect(exported.map((l) => JSON.parse(l).id)).toEqual(viaGraphql.map((e) => e.id).reverse());
  });

  it('time range and an empty result', async () => {
    const userId = newUserId();
    const newest = new Date(Date.now() - 2 * DAY);
    await plant(userId, 10, newest);
    const from = new Date(newest.getTime() - 2 * 60_000).toISOString();
    const res = await get(exportUrl({ userId, from }), await server.tokens.admin());
    expect(
      res.body
        .trimEnd()
        .split('\n')
        .map((l) => JSON.parse(l).details.n),
    ).toEqual([8, 9, 10]);
    const none = await get(exportUrl({ userId: newUserId() }), await server.tokens.admin());
    expect(none).toMatchObject({ status: 200, body: '' });
  });

  it('is refused without an admin token (401 / 403) and for bad parameters (400), with nothing exported', async () => {
    const userId = newUserId();
    await plant(userId, 3);
    const url = exportUrl({ userId });
    const anonymous = await get(url);
    expect(anonymous.status).toBe(401);
    expect(JSON.parse(anonymous.body).errors[0].extensions.code).toBe('UNAUTHENTICATED');
    expect((await get(url, 'not.a.token')).status).toBe(401);
    for (const token of [await server.tokens.user(userId), await server.tokens.machine(), await server.tokens.service()]) {
      const res = await get(url, token);
      expect(res.status).toBe(403);
      expect(res.body).not.toContain('planter');
    }
    const bad = await get(exportUrl({ from: 'yesterday' }), await server.tokens.admin());
    expect(bad.status).toBe(400);
    expect(JSON.parse(bad.body).errors[0].extensions.code).toBe('BAD_USER_INPUT');
    expect((await get(exportUrl({ userId: 'nope' }), await server.tokens.admin())).status).toBe(400);
  });
});

describe('retention (AUDIT_RETENTION_DAYS)', () => {
  it('the retention job deletes entries older than the window only, and is scheduled daily', async () => {
    const userId = newUserId();
    await plant(userId, 3, new Date(Date.now() - 400 * DAY)); // past 365 days
    await plant(userId, 2, new Date(Date.now() - 364 * DAY)); // within
    const deleted = await server.app.jobs.auditRetentionNow();
    expect(deleted).toBeGreaterThanOrEqual(3);
    const left = await server.app.db.audit_log.findMany({ where: { user_id: userId }, select: { at: true } });
    expect(left).toHaveLength(2);
    const [run] = await server.app.db.audit_log.findMany({ where: { action: 'audit.retention' }, orderBy: { id: 'desc' }, take: 1 });
    expect(run).toMatchObject({ actor_role: 'service', actor_id: 'audit-retention' });
    const schedules = await server.app.jobs.boss.getSchedules();
    expect(schedules.map((s) => s.name)).toContain('audit.retention');
  });

  it('AUDIT_RETENTION_DAYS is configuration', async () => {
    const short = await startTestServer({ AUDIT_RETENTION_DAYS: '30', JOBS_ENABLED: 'false' });
    try {
      const userId = newUserId();
      await plant(userId, 1, new Date(Date.now() - 31 * DAY));
      await plant(userId, 1, new Date(Date.now() - 29 * DAY));
      await short.app.jobs.auditRetentionNow();
      expect(await short.app.db.audit_log.count({ where: { user_id: userId } })).toBe(1);
    } finally {
      await short.stop();
    }
  });
});
