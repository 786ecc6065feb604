/**
 * `npm run bench:api` — the `loras` list through the full HTTP + GraphQL stack versus the same
 * page fetched with one hand-written SQL query, on a realistically sized database.
 *
 * 1. Embedded PostgreSQL (with pg_stat_statements preloaded) + Azurite in a temp dir, migrated.
 * 2. 1,000,000 flat_file rows seeded set-based (200,000 LoRAs over 2,000 users, one "big user"
 *    with 10,000), indexes rebuilt, VACUUM ANALYZE.
 * 3. The real app (buildApp, port 0, jobs off); the big user's first page timed three ways
 *    (default sort, NAME ASC, name search) over keep-alive HTTP, interleaved with the raw SQL query.
 * 4. Statements executed per request counted with pg_stat_statements for limit 10 and 200
 *    (with workflowsUsing): they must be equal (no N+1).
 *
 * 5. Telemetry (issue 15): the default case against two more server processes over the same data,
 *    one with the SDK off, one exporting every span and metric over OTLP to a local sink, requests
 *    alternating between them (bench/telemetry-overhead.ts): list p50 on ÷ off ≤ 1.10.
 *
 * Exit 0 when every GraphQL p50 / SQL p50 ratio is ≤ MAX_RATIO and the statement counts agree.
 * Knobs (for quick runs while developing; the defaults are the benchmark):
 *   BENCH_SCALE=0.1   seed a tenth of the data     BENCH_ITERATIONS=200   timed requests per case
 *   BENCH_KEEP=1      keep the temp dir (path printed) — processes are stopped regardless
 */
import http from 'node:http';
import { cpus, loadavg } from 'node:os';
import { performance } from 'node:perf_hooks';
import pg from 'pg';
import { type App, buildApp } from '../server/app.ts';
import { signToken } from '../server/auth/tokens.ts';
import { listLoraRows } from '../server/db/lora-reads.ts';
import { migrate } from '../server/db/migrate.ts';
import {
  CASES,
  type Case,
  JWT_SECRET,
  LIST_QUERY,
  LIST_WITH_WORKFLOWS_QUERY,
  listBenchConfig,
  MINIMAL_QUERY,
  SEARCH,
  seed,
  sqlParams,
  userUuid,
} from './api-list-data.ts';
import { benchTempDir, isCleaningUp, log, onCleanup, runBench, serverChildEnv, startServerChild, startServices, timed } from './harness.ts';
import { compareServersOffOn, percentileOf } from './telemetry-overhead.ts';

// ---------------------------------------------------------------------------------------------
// Parameters

const SCALE = Number(process.env.BENCH_SCALE ?? '1');
const ITERATIONS = Number(process.env.BENCH_ITERATIONS ?? '200');
const WARMUP = 100; // per case and method, interleaved like the timed iterations (JIT, caches, pools)
const MAX_RATIO = 2; // issue 16: the list path within 2× of raw SQL
const MAX_TELEMETRY_RATIO = 1.1; // list p50 with tracing and metrics on ÷ off (issue 15)
const COUNT_OVER_ITERATIONS = 20;

const TOTAL_FILES = Math.round(1_000_000 * SCALE);

if (!(SCALE > 0) || !Number.isInteger(ITERATIONS) || ITERATIONS < 10) {
  console.error('BENCH_SCALE must be > 0 and BENCH_ITERATIONS an integer ≥ 10');
  process.exit(2);
}

interface ListResult {
  loras: { total: number; loras: { id: string; workflowsUsing?: { id: string }[] }[] };
}

/**
 * The client: a keep-alive node:http POST (one socket, like a browser tab reusing its connection).
 * Node 20's fetch costs ~0.5–1 ms per call on the client side alone, which would be measured
 * against the server rather than the SQL baseline.
 */
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });

function postJson(url: string, headers: Record<string, string>, payload: string): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      url,
      { method: 'POST', agent, headers: { ...headers, 'content-length': String(Buffer.byteLength(payload)) } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

function makeGql(graphqlUrl: string, token: string) {
  const headers = { 'content-type': 'application/json', authorization: `Bearer ${token}` };
  return async (query: string, variables: Record<string, unknown>): Promise<ListResult> => {
    const res = await postJson(graphqlUrl, headers, JSON.stringify({ query, variables }));
    const body = JSON.parse(res.text) as { data?: ListResult; errors?: { message: string }[] };
    if (res.status !== 200 || body.errors?.length || !body.data) {
      throw new Error(`GraphQL request failed (${res.status}): ${JSON.stringify(body.errors ?? body)}`);
    }
    return body.data;
  };
}

// ---------------------------------------------------------------------------------------------
// Statistics

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.ceil((p / 100) * sorted.length); // nearest rank
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1] as number;
}
interface Stats {
  p50: number;
  p95: number;
  p99: number;
  mean: number;
}
function stats(samples: number[]): Stats {
  const sorted = [...samples].sort((a, b) => a - b);
  return {
    p50: percentile(sorted, 50),
    p95: percentile(sorted, 95),
    p99: percentile(sorted, 99),
    mean: samples.reduce((a, b) => a + b, 0) / samples.length,
  };
}
const ms = (v: number) => v.toFixed(2);

// ---------------------------------------------------------------------------------------------
// EXPLAIN of the server's own SQL (captured from listLoraRows, not re-typed)

function captureServerSql(
  filter: Parameters<typeof listLoraRows>[1],
  page: Parameters<typeof listLoraRows>[2],
): { text: string; values: unknown[] }[] {
  const captured: { text: string; values: unknown[] }[] = [];
  const recorder = {
    query: (config: string | { text: string; values: unknown[] }, values: unknown[] = []) => {
      captured.push(typeof config === 'string' ? { text: config, values } : config);
      return Promise.resolve({ rows: [] });
    },
  } as unknown as pg.Pool;
  void listLoraRows(recorder, filter, page);
  return captured;
}

async function explainServerQueries(pool: pg.Pool, c: Case, userId: string): Promise<string[]> {
  const queries = captureServerSql(
    { userId, search: c.search, tags: null, baseModel: null, statuses: ['READY'] },
    { sort: c.sort, order: c.order, limit: 50, offset: 0 },
  );
  const out: string[] = [];
  for (const [i, q] of queries.entries()) {
    const { rows } = await pool.query<{ 'QUERY PLAN': string }>(`EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) ${q.text}`, q.values as unknown[]);
    const plan = rows.map((r) => r['QUERY PLAN']);
    const scans = plan
      .filter((l) => /Scan|Sort|Limit/.test(l))
      .map((l) => l.trim().replace(/\s+\(actual.*$/, ''))
      .slice(0, 4);
    const time = plan.find((l) => l.startsWith('Execution Time')) ?? '';
    out.push(`${i === 0 ? 'page ' : 'count'}: ${time.replace('Execution Time: ', '')} — ${scans.join(' ← ')}`);
    if (process.env.BENCH_PLANS === '1') out.push(...plan.map((l) => `        ${l}`));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Statement count per request (pg_stat_statements)

interface StatementCount {
  count: number;
  statements: { calls: number; query: string }[];
  excluded: { calls: number; query: string }[];
  loras: number;
  withWorkflows: number;
}

async function countStatements(pool: pg.Pool, gql: ReturnType<typeof makeGql>, limit: number): Promise<StatementCount> {
  await pool.query('SELECT pg_stat_statements_reset()');
  const data = await gql(LIST_WITH_WORKFLOWS_QUERY, { limit });
  const { rows } = await pool.query<{ calls: string; query: string }>(`
    SELECT s.calls::text AS calls, s.query FROM pg_stat_statements s
    JOIN pg_database d ON d.oid = s.dbid AND d.datname = current_database()
    WHERE s.query NOT ILIKE '%pg_stat_statements%'
    ORDER BY s.calls DESC, s.query`);
  const all = rows.map((r) => ({ calls: Number(r.calls), query: r.query.replace(/\s+/g, ' ').trim() }));
  // pg-boss (started even with workers off) runs its own maintenance queries on timers: they
  // name the pgboss schema, are not part of the request, and are listed separately.
  const excluded = all.filter((s) => /pgboss/i.test(s.query));
  const statements = all.filter((s) => !/pgboss/i.test(s.query));
  return {
    count: statements.reduce((a, s) => a + s.calls, 0),
    statements,
    excluded,
    loras: data.loras.loras.length,
    withWorkflows: data.loras.loras.filter((l) => (l.workflowsUsing?.length ?? 0) > 0).length,
  };
}

// ---------------------------------------------------------------------------------------------

async function main(): Promise<number> {
  log(`lora-vault list benchmark: ${TOTAL_FILES.toLocaleString('en')} flat_file rows, ${ITERATIONS} timed requests per case and method`);
  const [{ pgHandle, azurite }] = await timed('started embedded PostgreSQL (pg_stat_statements preloaded) + Azurite', () =>
    // preloaded (it needs a restart) so the statement count is read from the server itself
    startServices({ postgresSettings: { shared_preload_libraries: 'pg_stat_statements', 'pg_stat_statements.track': 'top' } }),
  );
  const [migrated] = await timed('migrated', () => migrate(pgHandle.url));
  log(`applied migrations: ${migrated.applied.join(', ')}`);

  const pool = new pg.Pool({ connectionString: pgHandle.url, max: 4 });
  // pool.end() resolves before the sockets are closed: an idle client may still see postgres's
  // shutdown (57P01) — expected then, reported otherwise.
  pool.on('error', (error) => {
    if (!isCleaningUp()) console.error('pg pool client error:', error.message);
  });
  onCleanup('pg pool', () => pool.end());
  await pool.query('CREATE EXTENSION IF NOT EXISTS pg_stat_statements');

  const seedTimes = await seed(pgHandle.url, TOTAL_FILES);
  const bigUser = userUuid(0);
  const { rows: shape } = await pool.query<Record<string, string>>(
    `
    SELECT (SELECT count(*) FROM flat_file)::text AS files,
           (SELECT count(*) FROM lora WHERE status = 'READY')::text AS loras,
           (SELECT count(DISTINCT user_id) FROM lora)::text AS lora_users,
           (SELECT count(DISTINCT user_id) FROM flat_file)::text AS file_users,
           (SELECT count(*) FROM lora WHERE user_id = $1)::text AS big_loras,
           (SELECT count(*) FROM flat_file WHERE user_id = $1)::text AS big_files,
           (SELECT count(*) FROM lora WHERE user_id = $1 AND lower(name) LIKE $2)::text AS big_search,
           (SELECT count(*) FROM lora WHERE last_used_at IS NULL)::text AS never_used,
           (SELECT count(*) FROM lora_workflow_usage)::text AS workflow_rows,
           pg_size_pretty(pg_total_relation_size('flat_file')) AS flat_file_size,
           pg_size_pretty(pg_total_relation_size('lora')) AS lora_size`,
    [bigUser, `%${SEARCH}%`],
  );
  const s = shape[0] ?? {};
  log(
    `data: ${s.files} flat_file rows (${s.flat_file_size}) of ${s.file_users} users; ${s.loras} READY LoRAs (${s.lora_size}) of ${s.lora_users} users; ` +
      `big user ${bigUser}: ${s.big_loras} LoRAs + ${Number(s.big_files) - Number(s.big_loras)} other files, ${s.big_search} match "${SEARCH}"; ` +
      `${s.never_used} LoRAs never used; ${s.workflow_rows} workflow-usage rows`,
  );

  const config = listBenchConfig(pgHandle.url, azurite.connectionString);
  const app: App = buildApp(config);
  onCleanup('app', () => app.stop());
  const [url] = await timed('app started', () => app.start());
  const gql = makeGql(`${url}/graphql`, await signToken(JWT_SECRET, { role: 'user', sub: bigUser }));

  // Correctness first: GraphQL and SQL return the same page and total.
  for (const c of CASES) {
    const vars = { limit: 50, sort: c.sort, order: c.order, search: c.search };
    const data = await gql(LIST_QUERY, vars);
    const { rows } = await pool.query<{ file_id: string; total: string }>(c.countSql, sqlParams(c, bigUser));
    const gIds = data.loras.loras.map((l) => l.id).join(',');
    const sIds = rows.map((r) => String(r.file_id)).join(',');
    if (gIds !== sIds) throw new Error(`${c.label}: GraphQL and SQL pages differ\n  gql ${gIds}\n  sql ${sIds}`);
    if (String(data.loras.total) !== String(rows[0]?.total))
      throw new Error(`${c.label}: totals differ (${data.loras.total} vs ${rows[0]?.total})`);
    log(`${c.label}: GraphQL page == SQL page (${rows.length} rows, total ${data.loras.total})`);
  }

  // Timings: warm-up, then iterations with GraphQL and SQL interleaved (which goes first
  // alternates) so drift (caches, GC, JIT, other load) hits both alike.
  type Method = 'gql' | 'sql';
  const methods: Method[] = ['gql', 'sql'];
  const results = new Map<string, Record<Method, number[]>>();
  const loadBefore = loadavg()[0] ?? 0;
  const t0 = performance.now();
  for (const c of CASES) {
    const vars = { limit: 50, sort: c.sort, order: c.order, search: c.search };
    const params = sqlParams(c, bigUser);
    const run: Record<Method, () => Promise<unknown>> = {
      gql: () => gql(LIST_QUERY, vars),
      sql: () => pool.query(c.sql, params),
    };
    const samples: Record<Method, number[]> = { gql: [], sql: [] };
    for (let i = 0; i < WARMUP + ITERATIONS; i++) {
      for (let j = 0; j < methods.length; j++) {
        const m = methods[(i + j) % methods.length] as Method;
        const start = performance.now();
        await run[m]();
        const elapsed = performance.now() - start;
        if (i >= WARMUP) samples[m].push(elapsed);
      }
    }
    results.set(c.key, samples);
  }
  log(`timed ${CASES.length} cases × ${ITERATIONS} iterations × 2 methods in ${((performance.now() - t0) / 1000).toFixed(1)} s`);

  // Where the GraphQL time goes (default case, informational): the same loop over layers.
  const defaultCase = CASES[0] as Case;
  const countOnlySql = `SELECT count(*) AS total FROM lora l WHERE l.user_id = $1 AND l.status = 'READY'`;
  const layers: { label: string; run: () => Promise<unknown> }[] = [
    { label: 'SQL page (pg, the baseline)', run: () => pool.query(defaultCase.sql, [bigUser]) },
    {
      label: 'SQL page ‖ count (pg, 2 connections)',
      run: () => Promise.all([pool.query(defaultCase.sql, [bigUser]), pool.query(countOnlySql, [bigUser])]),
    },
    {
      label: 'service list() (page + total)',
      run: () => app.services.loras.list({ role: 'user', userId: bigUser }, { limit: 50, sort: 'CREATED_AT', order: 'DESC' }),
    },
    { label: 'HTTP POST /healthz (keep-alive node:http)', run: async () => (await postJson(`${url}/healthz`, {}, '')).text },
    { label: 'GraphQL { loras(limit: 1) { total } }', run: () => gql(MINIMAL_QUERY, {}) },
    { label: 'GraphQL full page (as timed above)', run: () => gql(LIST_QUERY, { limit: 50, sort: 'CREATED_AT', order: 'DESC' }) },
  ];
  const layerSamples: number[][] = layers.map(() => []);
  for (let i = 0; i < WARMUP + ITERATIONS; i++) {
    for (let j = 0; j < layers.length; j++) {
      const k = (i + j) % layers.length;
      const start = performance.now();
      await (layers[k] as (typeof layers)[number]).run();
      if (i >= WARMUP) layerSamples[k]?.push(performance.now() - start);
    }
  }

  // The one-query alternative with the total, count(*) OVER (): informational, timed apart (it is
  // ~100× slower for the big user and would disturb the interleaved timings) and fewer times.
  const countOver = new Map<string, number[]>();
  for (const c of CASES) {
    const countSql = c.countSql;
    const params = sqlParams(c, bigUser);
    const samples: number[] = [];
    for (let i = 0; i < 3 + COUNT_OVER_ITERATIONS; i++) {
      const start = performance.now();
      await pool.query(countSql, params);
      if (i >= 3) samples.push(performance.now() - start);
    }
    countOver.set(c.key, samples);
  }

  // Statements per request.
  const counts: Record<number, StatementCount> = {};
  for (const limit of [10, 200]) {
    // twice, keeping the smaller: a stray background statement can only add, never remove
    const a = await countStatements(pool, gql, limit);
    const b = await countStatements(pool, gql, limit);
    counts[limit] = b.count < a.count ? b : a;
  }

  // Plans of the server's own queries, for the record.
  const plans = new Map<string, string[]>();
  for (const c of CASES) plans.set(c.key, await explainServerQueries(pool, c, bigUser));

  // -------------------------------------------------------------------------------------------
  // Summary
  const line = '─'.repeat(118);
  const out: string[] = [];
  out.push('', line, 'SUMMARY — loras first page (limit 50) for the big user, milliseconds', line);
  out.push(
    `seed: ${TOTAL_FILES.toLocaleString('en')} flat_file rows / ${s.loras} LoRAs / ${s.lora_users} LoRA users; big user ${s.big_loras} LoRAs, ` +
      `"${SEARCH}" matches ${s.big_search}`,
  );
  out.push(
    `seeding: rows ${(seedTimes.rowsMs / 1000).toFixed(1)} s + indexes ${(seedTimes.indexMs / 1000).toFixed(1)} s + VACUUM ANALYZE & CHECKPOINT ${(seedTimes.analyzeMs / 1000).toFixed(1)} s` +
      ` = ${((seedTimes.rowsMs + seedTimes.indexMs + seedTimes.analyzeMs) / 1000).toFixed(1)} s`,
  );
  out.push(
    `iterations: ${ITERATIONS} per method after ${WARMUP} warm-up, interleaved. GraphQL = keep-alive HTTP POST → Yoga → SQL (page carrying the quota total; search: page ‖ count) → JSON parsed.`,
  );
  out.push(
    `SQL = the equivalent page query alone over a pg.Pool (no count). SQL+count = the same with count(*) OVER () for the total (informational, ${COUNT_OVER_ITERATIONS} runs apart).`,
  );
  out.push(`ratio = GraphQL p50 / SQL p50 (page only, the strict baseline); target ≤ ${MAX_RATIO}`);
  out.push(
    `machine: ${cpus().length} CPUs, 1-min load average ${loadBefore.toFixed(2)} before the timings, ${(loadavg()[0] ?? 0).toFixed(2)} after ` +
      '(client, server and PostgreSQL share these CPUs; other processes count too)',
  );
  out.push(line);
  const header = `${'case'.padEnd(20)}│ ${'GraphQL p50 / p95 / p99'.padEnd(26)}│ ${'SQL p50 / p95 / p99'.padEnd(24)}│ ${'SQL+count p50 / p95'.padEnd(20)}│ ${'ratio'.padEnd(7)}│ ok`;
  out.push(header, line);
  let ok = true;
  const ratios: Record<string, number> = {};
  for (const c of CASES) {
    const r = results.get(c.key);
    if (!r) continue;
    const g = stats(r.gql);
    const q = stats(r.sql);
    const qc = stats(countOver.get(c.key) ?? []);
    const ratio = g.p50 / q.p50;
    ratios[c.key] = ratio;
    const pass = ratio <= MAX_RATIO;
    ok &&= pass;
    out.push(
      `${c.label.padEnd(20)}│ ${`${ms(g.p50)} / ${ms(g.p95)} / ${ms(g.p99)}`.padEnd(26)}│ ${`${ms(q.p50)} / ${ms(q.p95)} / ${ms(q.p99)}`.padEnd(24)}│ ` +
        `${`${ms(qc.p50)} / ${ms(qc.p95)}`.padEnd(20)}│ ${ratio.toFixed(2).padEnd(7)}│ ${pass ? 'yes' : 'NO'}`,
    );
  }
  out.push(line);
  const c10 = counts[10];
  const c200 = counts[200];
  const sameCount = c10 !== undefined && c200 !== undefined && c10.count === c200.count;
  ok &&= sameCount;
  out.push(
    `SQL statements per loras request (pg_stat_statements, with workflowsUsing { id }): limit 10 → ${c10?.count} ` +
      `(${c10?.loras} LoRAs, ${c10?.withWorkflows} with workflows); limit 200 → ${c200?.count} (${c200?.loras} LoRAs, ${c200?.withWorkflows} with workflows)` +
      ` — ${sameCount ? 'constant' : 'DIFFERENT (N+1?)'}`,
  );
  for (const st of c200?.statements ?? [])
    out.push(`   ${String(st.calls).padStart(3)} × ${st.query.slice(0, 150)}${st.query.length > 150 ? '…' : ''}`);
  const excluded = [...(c10?.excluded ?? []), ...(c200?.excluded ?? [])];
  if (excluded.length)
    out.push(`   (excluded as pg-boss background work: ${excluded.map((e) => `${e.calls} × ${e.query.slice(0, 60)}…`).join('; ')})`);
  out.push(line, `where the time goes — ${defaultCase.label}, ${ITERATIONS} interleaved iterations (informational):`);
  for (const [k, layer] of layers.entries()) {
    const st = stats(layerSamples[k] ?? []);
    out.push(`  ${layer.label.padEnd(40)} p50 ${ms(st.p50).padStart(7)}   p95 ${ms(st.p95).padStart(7)}`);
  }
  out.push(line, "plans of the server's own queries (EXPLAIN ANALYZE, captured from listLoraRows):");
  for (const c of CASES) {
    out.push(`  ${c.label}:`);
    for (const p of plans.get(c.key) ?? []) out.push(`    ${p}`);
  }
  // ===== Telemetry on vs off (issue 15; bench/telemetry-overhead.ts) — measured last, same data =====
  {
    log(
      `telemetry: ${defaultCase.label} against a server with the SDK off and two exporting over OTLP (protobuf, JSON), interleaved, ${ITERATIONS} requests each`,
    );
    const vars = { limit: 50, sort: defaultCase.sort, order: defaultCase.order, search: defaultCase.search };
    const dir = await benchTempDir();
    const token = await signToken(JWT_SECRET, { role: 'user', sub: bigUser });
    const t = await compareServersOffOn({
      startServer: (env) => startServerChild(serverChildEnv(dir, { pgHandle, azurite }, JWT_SECRET, { LOG_LEVEL: 'silent', ...env })),
      run: (serverUrl) => makeGql(`${serverUrl}/graphql`, token)(LIST_QUERY, vars),
      // the default encoding (protobuf), and the JSON one these servers sent before (informational)
      on: [
        { label: 'on', env: {} },
        { label: 'on, spans as http/json', env: { OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json' } },
      ],
      iterations: ITERATIONS,
      warmup: WARMUP * 3, // each server's own JIT warm-up (the in-process app above had thousands of requests)
      serviceName: 'lora-vault-bench',
    });
    const [off, on, onJson] = t;
    const p50 = (v: typeof off) => percentileOf(v?.samples ?? [], 50);
    const ratio = p50(on) / p50(off);
    const telemetryOk = ratio <= MAX_TELEMETRY_RATIO && (t.exported?.requests ?? 0) > 0;
    ok &&= telemetryOk;
    const describe = (v: typeof off) =>
      `${v?.label} p50 ${ms(p50(v))} p99 ${ms(percentileOf(v?.samples ?? [], 99))}, server CPU ${v?.cpuMsPerRequest.toFixed(2)} ms per request`;
    out.push(
      line,
      `telemetry (${defaultCase.label}, ${ITERATIONS} requests to each of ${t.length} server processes, interleaved): ${t.map(describe).join(' │ ')}`,
      `  on ÷ off p50 ${ratio.toFixed(3)} (target ≤ ${MAX_TELEMETRY_RATIO}); with spans as http/json ${(p50(onJson) / p50(off)).toFixed(3)} │ ` +
        `exported ${t.exported?.requests} OTLP requests, ${((t.exported?.bytes ?? 0) / 1e6).toFixed(1)} MB │ ${telemetryOk ? 'yes' : 'NO'}`,
    );
  }
  // ===== end of the telemetry section =====
  out.push(
    line,
    `RESULT: ${ok ? 'PASS' : 'FAIL'} — ${CASES.map((c) => `${c.key} ${ratios[c.key]?.toFixed(2)}×`).join(', ')}; statements ${c10?.count} vs ${c200?.count}`,
    line,
  );
  console.log(out.join('\n'));
  return ok ? 0 : 1;
}

await runBench(main);
