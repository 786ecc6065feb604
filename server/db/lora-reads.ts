import type pg from 'pg';
import type { LoraRow, LoraStatus } from '../domain/lora.ts';
import type { Db, Tx } from './client.ts';
import { Prisma } from './generated/client.ts';

/**
 * The SQL behind LoRA reads. Hand-written because each list order must hit its own partial
 * index (see the init migration) and Prisma's orderBy cannot say `lower(name) COLLATE "C"` or
 * NULLS LAST. Every list is at most two queries, whatever the page size: the page and its total
 * (one user's unfiltered total rides on the page query).
 * Lists run on node-postgres directly (the `reads` pool): the hottest read of the product, where
 * Prisma's raw-query path cost ~0.5 ms per request on top of the SQL (bench:api). The three ways
 * of reaching the database and why each exists: server/db/README.md.
 */

export type LoraSort = 'NAME' | 'SIZE' | 'CREATED_AT' | 'LAST_USED';
export type SortOrder = 'ASC' | 'DESC';

export interface LoraListFilter {
  /** null = every user (admins only). */
  userId: string | null;
  search?: string | null;
  tags?: string[] | null;
  baseModel?: string | null;
  statuses: readonly string[];
}

const SELECT_COLUMNS = Prisma.sql`
  l.file_id, l.user_id, l.name, l.file_name, l.format, l.size_bytes, l.sha256, l.status,
  f.tags, l.created_at, l.updated_at, l.usage_count, l.last_used_at, l.base_model,
  l.base_model_source, l.rank, l.alpha, l.metadata, l.user_metadata`;

function orderBy(sort: LoraSort, order: SortOrder): Prisma.Sql {
  const dir = Prisma.raw(order);
  switch (sort) {
    case 'NAME':
      return Prisma.sql`lower(l.name) COLLATE "C" ${dir}, l.file_id ${dir}`;
    case 'SIZE':
      return Prisma.sql`l.size_bytes ${dir}, l.file_id ${dir}`;
    case 'LAST_USED':
      return order === 'DESC'
        ? Prisma.sql`l.last_used_at DESC NULLS LAST, l.file_id DESC`
        : Prisma.sql`l.last_used_at ASC NULLS FIRST, l.file_id ASC`;
    case 'CREATED_AT':
      return Prisma.sql`l.created_at ${dir}, l.file_id ${dir}`;
  }
}

/** `%` and `_` in user input are literals, not wildcards. Lower-casing happens in SQL, like the index's. */
export function likePattern(search: string): string {
  return `%${search.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
}

const LORA_STATUSES: readonly string[] = ['UPLOADING', 'READY', 'FAILED', 'DELETED', 'SUSPENDED'] satisfies LoraStatus[];

/**
 * `l.status IN ('READY'::lora_status, …)`, the values written as typed literals, not parameters
 * and not compared as text: the list indexes are partial (`WHERE status = 'READY'`), and
 * PostgreSQL uses a partial index only when it can prove that predicate from the query at plan
 * time. It cannot through `status::text IN ($1)` (every list then read all users' LoRAs: a
 * sequential scan of `lora` per page and per total), nor from a `$1` in a cached generic plan.
 * The values are checked against the enum, so the literal is safe.
 */
function statusCondition(statuses: readonly string[]): Prisma.Sql {
  const unknown = statuses.filter((s) => !LORA_STATUSES.includes(s));
  if (statuses.length === 0 || unknown.length > 0) throw new Error(`invalid LoRA status filter: ${JSON.stringify(statuses)}`);
  return Prisma.sql`l.status IN (${Prisma.raw(statuses.map((s) => `'${s}'::lora_status`).join(', '))})`;
}

function whereClause(filter: LoraListFilter): Prisma.Sql {
  const parts: Prisma.Sql[] = [statusCondition(filter.statuses)];
  if (filter.userId) parts.push(Prisma.sql`l.user_id = ${filter.userId}::uuid`);
  if (filter.search) parts.push(Prisma.sql`lower(l.name) LIKE lower(${likePattern(filter.search)})`);
  if (filter.baseModel) parts.push(Prisma.sql`l.base_model = ${filter.baseModel}`);
  if (filter.tags && filter.tags.length > 0) parts.push(Prisma.sql`f.tags @> ${filter.tags}::text[]`);
  return Prisma.join(parts, ' AND ');
}

export async function listLoraRows(
  reads: pg.Pool,
  filter: LoraListFilter,
  page: { sort: LoraSort; order: SortOrder; limit: number; offset: number },
): Promise<{ rows: LoraRow[]; total: number }> {
  const where = whereClause(filter);
  const fromQuota = totalIsQuotaCount(filter);
  const pageQuery = Prisma.sql`
    SELECT ${SELECT_COLUMNS}${fromQuota ? Prisma.sql`, (SELECT lora_count FROM user_lora_quota WHERE user_id = ${filter.userId}::uuid) AS quota_total` : Prisma.empty}
    FROM lora l JOIN flat_file f ON f.id = l.file_id
    WHERE ${where}
    ORDER BY ${orderBy(page.sort, page.order)}
    LIMIT ${page.limit} OFFSET ${page.offset}`;
  const pageRows = () =>
    reads.query<LoraRow & { quota_total?: number | null }>({ text: pageQuery.text, values: pageQuery.values as unknown[] });
  if (fromQuota) {
    // One statement: the total rides on every row of the page (one round trip instead of two,
    // bench:api:profile). An empty page carries none: a user without LoRAs, an offset past the end.
    const { rows } = await pageRows();
    const first = rows[0];
    return { rows, total: first ? (first.quota_total ?? 0) : await countLoras(reads, filter, where) };
  }
  const [rows, total] = await Promise.all([pageRows(), countLoras(reads, filter, where)]);
  return { rows: rows.rows, total };
}

/**
 * One user's unfiltered READY count is `user_lora_quota.lora_count`, which the transactions that
 * ready and delete LoRAs keep exact under the quota row lock (a primary-key read instead of
 * counting up to thousands of index entries).
 */
function totalIsQuotaCount(filter: LoraListFilter): filter is LoraListFilter & { userId: string } {
  const unfiltered = !filter.search && !filter.tags?.length && !filter.baseModel;
  return Boolean(filter.userId) && unfiltered && filter.statuses.length === 1 && filter.statuses[0] === 'READY';
}

/** The list's total: the quota row's count where it is exact (totalIsQuotaCount), else counted. */
async function countLoras(reads: pg.Pool, filter: LoraListFilter, where: Prisma.Sql): Promise<number> {
  if (totalIsQuotaCount(filter)) {
    const { rows } = await reads.query<{ lora_count: number }>('SELECT lora_count FROM user_lora_quota WHERE user_id = $1::uuid', [
      filter.userId,
    ]);
    return rows[0]?.lora_count ?? 0;
  }
  const countQuery = Prisma.sql`
    SELECT count(*) AS total
    FROM lora l ${filter.tags?.length ? Prisma.sql`JOIN flat_file f ON f.id = l.file_id` : Prisma.empty}
    WHERE ${where}`;
  const { rows } = await reads.query<{ total: string }>({ text: countQuery.text, values: countQuery.values as unknown[] });
  return Number(rows[0]?.total ?? 0);
}

/** One LoRA by id, whatever its owner and status; callers decide visibility. */
export async function findLoraRow(db: Db | Tx, fileId: bigint, forUpdate = false): Promise<LoraRow | null> {
  const rows = await db.$queryRaw<LoraRow[]>`
    SELECT ${SELECT_COLUMNS}, l.blob_path, l.blob_snapshot
    FROM lora l JOIN flat_file f ON f.id = l.file_id
    WHERE l.file_id = ${fileId}
    ${forUpdate ? Prisma.sql`FOR UPDATE OF l` : Prisma.empty}`;
  return rows[0] ?? null;
}

/**
 * The next `limit` LoRAs after `afterId` in id order, whatever their status, with their
 * `flat_file.gen_out_data`; their flat_file rows stay locked until the caller's transaction ends.
 */
export async function lockLoraRowsAfter(tx: Tx, afterId: bigint, limit: number): Promise<(LoraRow & { gen_out_data: unknown })[]> {
  return tx.$queryRaw<(LoraRow & { gen_out_data: unknown })[]>`
    SELECT ${SELECT_COLUMNS}, f.gen_out_data
    FROM lora l JOIN flat_file f ON f.id = l.file_id
    WHERE l.file_id > ${afterId}
    ORDER BY l.file_id
    LIMIT ${limit}
    FOR UPDATE OF f`;
}
