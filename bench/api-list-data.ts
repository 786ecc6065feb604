/**
 * The data and the cases of `npm run bench:api` (bench/api-list.ts), shared with its profiling run
 * (bench/api-profile.ts): the set-based seed of flat_file + lora rows around one "big user", the
 * three list cases with their hand-written SQL, and the GraphQL documents.
 */
import { createHash } from 'node:crypto';
import pg from 'pg';
import type { RuntimeConfig } from '../server/app.ts';
import type { LoraSort, SortOrder } from '../server/db/lora-reads.ts';
import { runtimeConfig, timed } from './harness.ts';

const LORA_EVERY = 5; // flat_file ids divisible by 5 are LoRAs → 200,000
const BIG_USER_EVERY = 20; // every 20th LoRA belongs to the big user → 10,000
const LORA_USERS = 2_000; // user 0 (big) + 1,999 others
const ALL_USERS = 20_000; // owners of non-LoRA files: the LoRA users and 18,000 more
export const SEARCH = 'samurai'; // one of 32 style words: ~1/32 of the big user's LoRAs
export const JWT_SECRET = 'bench-secret-bench-secret-bench-secret-0123456789';

/**
 * The real app as the list benchmarks run it, configured like test/testkit/server.ts (without
 * vitest's inject): no jobs, silent, and telemetry off (bench:api turns it on only for its
 * telemetry section at the end, issue 15).
 */
export function listBenchConfig(databaseUrl: string, storageConnectionString: string): RuntimeConfig {
  return runtimeConfig({
    NODE_ENV: 'test',
    PORT: '0',
    HOST: '127.0.0.1',
    DATABASE_URL: databaseUrl,
    AZURE_STORAGE_CONNECTION_STRING: storageConnectionString,
    JWT_SECRET,
    LOG_LEVEL: 'silent',
    JOBS_ENABLED: 'false',
    OTEL_SDK_DISABLED: 'true',
  });
}

// ---------------------------------------------------------------------------------------------
// Seeding (set-based)

/**
 * Deterministic user ids shaped as version-4 UUIDs (the token verifier accepts RFC 4122 UUIDs
 * only): md5('bench-user-' || n) with the version and variant nibbles set. userSql is the same in SQL.
 */
export function userUuid(n: number): string {
  const h = createHash('md5').update(`bench-user-${n}`).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-8${h.slice(17, 20)}-${h.slice(20, 32)}`;
}
const userSql = (n: string) =>
  `(SELECT (substr(h, 1, 8) || '-' || substr(h, 9, 4) || '-4' || substr(h, 14, 3) || '-8' || substr(h, 18, 3) || '-' || substr(h, 21, 12))::uuid
    FROM md5('bench-user-' || (${n})::text) AS h)`;

const STYLES = [
  'Anime',
  'Watercolor',
  'Cyberpunk',
  'Oil Painting',
  'Pixel Art',
  'Photoreal',
  'Ukiyo-e',
  'Noir',
  'Vaporwave',
  'Steampunk',
  'Gothic',
  'Pastel',
  'Comic',
  'Chibi',
  'Low Poly',
  'Isometric',
  'Samurai',
  'Baroque',
  'Art Deco',
  'Sketch',
  'Cinematic',
  'Film Grain',
  'Neon',
  'Retro',
  'Fantasy',
  'Sci-Fi',
  'Minimalist',
  'Impressionist',
  'Surreal',
  'Glitch',
  'Claymation',
  'Origami',
];
const SUBJECTS = [
  'portrait',
  'landscape',
  'character',
  'dragon',
  'castle',
  'forest',
  'robot',
  'cat',
  'warrior',
  'city',
  'ocean',
  'mecha',
  'princess',
  'wizard',
  'car',
  'spaceship',
  'flower',
  'knight',
  'fox',
  'mountain',
  'girl',
  'boy',
  'armor',
  'interior',
  'food',
  'logo',
  'texture',
  'creature',
  'temple',
  'street',
];
const sqlArray = (items: string[]) => `ARRAY[${items.map((s) => `'${s.replace(/'/g, "''")}'`).join(', ')}]`;

export async function seed(url: string, totalFiles: number): Promise<{ rowsMs: number; indexMs: number; analyzeMs: number }> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query(`SET maintenance_work_mem = '512MB'`);
    await client.query(`SET synchronous_commit = off`);
    await client.query(`SELECT setseed(0.4242)`);

    // Secondary indexes are dropped and rebuilt after the load (much faster than maintaining
    // the GIN indexes row by row); their definitions come from the catalog, so the benchmark
    // always runs with exactly the migration's indexes.
    const { rows: indexes } = await client.query<{ indexname: string; indexdef: string }>(`
      SELECT i.indexname, i.indexdef FROM pg_indexes i
      WHERE i.schemaname = 'public' AND i.tablename IN ('flat_file', 'lora', 'lora_workflow_usage')
        AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)
      ORDER BY i.tablename, i.indexname`);
    for (const { indexname } of indexes) await client.query(`DROP INDEX ${client.escapeIdentifier(indexname)}`);

    const [, rowsMs] = await timed(`seeded ${totalFiles.toLocaleString('en')} flat_file rows + LoRAs`, async () => {
      // flat_file: ids 1..N. id % 5 = 0 → LoRA number k = id / 5; k % 20 = 0 → the big user (0),
      // else user 1 + k % 1999. Other files: user (id * 7919) % 20000 (the LoRA users among them).
      await client.query(`
        INSERT INTO flat_file (id, created_at, url, hidden, user_id, name, gen_in_data, gen_out_data, mime_type, tags, rel_id, rel_type)
        SELECT g,
               s.created_at,
               CASE WHEN s.is_lora THEN 'http://127.0.0.1:10000/devstoreaccount1/user-loras/users/' || s.user_id || '/loras/' || g || '.safetensors'
                    ELSE 'https://cdn.example.com/outputs/' || g || '.png' END,
               false,
               s.user_id,
               CASE WHEN s.is_lora THEN s.lora_name ELSE 'image_' || g || '.png' END,
               CASE WHEN s.is_lora THEN NULL
                    ELSE jsonb_build_object(
                      'prompt', 'a ' || s.subject || ' in ' || s.style || ' style, highly detailed, masterpiece, best quality, 8k, dramatic lighting',
                      'negative_prompt', 'blurry, lowres, bad anatomy, watermark',
                      'seed', (random() * 4294967295)::bigint, 'steps', 20 + (random() * 30)::int, 'cfg', 7.0,
                      'sampler', 'dpmpp_2m', 'width', 1024, 'height', 1024) END,
               CASE WHEN s.is_lora THEN jsonb_build_object(
                      'size_bytes', s.size_bytes, 'file_hash', 'sha256:' || md5(g::text) || md5(s.lora_name),
                      'upload_source', 'api', 'validation_status', 'safe')
                    ELSE jsonb_build_object('width', 1024, 'height', 1024, 'duration_ms', (random() * 20000)::int) END,
               CASE WHEN s.is_lora THEN 'application/octet-stream' ELSE 'image/png' END,
               CASE WHEN s.is_lora THEN
                      CASE WHEN random() < 0.3 THEN ARRAY['lora', lower(s.style)] WHEN random() < 0.2 THEN ARRAY['lora', 'favorite', s.subject] ELSE ARRAY['lora'] END
                    WHEN random() < 0.3 THEN ARRAY['image', 'upscaled'] ELSE ARRAY['image'] END,
               CASE WHEN s.is_lora THEN NULL ELSE 'gen-' || (g / 4) END,
               CASE WHEN s.is_lora THEN NULL ELSE 'generation' END
        FROM generate_series(1, ${totalFiles}) AS g
        CROSS JOIN LATERAL (
          SELECT g % ${LORA_EVERY} = 0 AS is_lora,
                 CASE WHEN g % ${LORA_EVERY} <> 0 AND g % 160 = 1 THEN ${userSql('0')} -- 6,250 non-LoRA files of the big user
                      WHEN g % ${LORA_EVERY} <> 0 THEN ${userSql(`(g::bigint * 7919) % ${ALL_USERS}`)}
                      WHEN (g / ${LORA_EVERY}) % ${BIG_USER_EVERY} = 0 THEN ${userSql('0')}
                      ELSE ${userSql(`1 + (g / ${LORA_EVERY}) % ${LORA_USERS - 1}`)} END AS user_id,
                 now() - (random() * interval '365 days') AS created_at,
                 (${sqlArray(STYLES)})[1 + floor(random() * ${STYLES.length})::int] AS style,
                 (${sqlArray(SUBJECTS)})[1 + floor(random() * ${SUBJECTS.length})::int] AS subject,
                 (10 * 1048576 + random() * 790 * 1048576)::bigint AS size_bytes
          OFFSET 0 -- not pulled up: each random() is drawn once per row, however often it is used
        ) AS r0
        CROSS JOIN LATERAL (
          SELECT r0.*,
                 CASE (g % 7)
                   WHEN 0 THEN upper(r0.style) || '_' || r0.subject || '_v' || (1 + g % 9)
                   WHEN 1 THEN lower(replace(r0.style, ' ', '-')) || '-' || r0.subject || '-xl'
                   WHEN 2 THEN initcap(r0.subject) || ' (' || r0.style || ') ' || (g % 1000)
                   ELSE r0.style || ' ' || r0.subject || ' v' || (1 + g % 5) || '.' || (g % 10)
                 END AS lora_name
          OFFSET 0
        ) AS s`);
      await client.query(`SELECT setval(pg_get_serial_sequence('flat_file', 'id'), ${totalFiles})`);

      // lora: one row per LoRA flat_file, same owner/name/created_at/size.
      await client.query(`
        INSERT INTO lora (file_id, user_id, status, name, file_name, format, size_bytes, sha256, blob_path,
                          base_model, base_model_source, rank, alpha, metadata, user_metadata,
                          usage_count, last_used_at, created_at, updated_at)
        SELECT f.id, f.user_id, 'READY', f.name, replace(f.name, ' ', '_') || '.safetensors', 'SAFETENSORS',
               (f.gen_out_data->>'size_bytes')::bigint, substr(f.gen_out_data->>'file_hash', length('sha256:') + 1),
               'users/' || f.user_id || '/loras/' || f.id || '.safetensors',
               x.base_model, CASE WHEN x.base_model IS NULL THEN NULL ELSE 'METADATA' END,
               x.rank, x.rank / 2.0,
               jsonb_build_object('networkModule', 'networks.lora', 'tensorCount', 264 + (f.id % 5) * 128,
                                  'triggerWords', CASE WHEN f.id % 3 = 0 THEN '[]'::jsonb ELSE jsonb_build_array(split_part(f.name, ' ', 1)) END,
                                  'detectedBaseModel', x.base_model, 'detectedBaseModelSource', 'METADATA'),
               '{}'::jsonb,
               CASE WHEN x.used THEN 1 + (hashint8(f.id) & 511) ELSE 0 END,
               CASE WHEN x.used THEN f.created_at + (now() - f.created_at) * ((hashint8(f.id * 3) & 1023) / 1024.0) END,
               f.created_at, f.created_at
        FROM flat_file f
        CROSS JOIN LATERAL (
          SELECT (ARRAY['SD1', 'SDXL', 'SDXL', 'FLUX1', 'FLUX1', 'SD3', 'SD2', NULL])[1 + (hashint8(f.id * 7) & 7)] AS base_model,
                 (ARRAY[4, 8, 16, 16, 32, 32, 64, 128])[1 + (hashint8(f.id * 11) & 7)] AS rank,
                 (hashint8(f.id * 13) & 15) >= 6 AS used -- ~62% used, ~38% last_used_at NULL
        ) AS x
        WHERE f.id % ${LORA_EVERY} = 0`);

      // Workflow usage for used LoRAs (1–3 workflows each), so workflowsUsing returns data.
      await client.query(`
        INSERT INTO lora_workflow_usage (lora_id, workflow_id, workflow_name, use_count, last_used_at)
        SELECT l.file_id, 'wf-' || ((l.file_id * 31 + w) % 5000), 'Workflow ' || ((l.file_id * 31 + w) % 5000),
               1 + (hashint8(l.file_id + w) & 63), l.last_used_at - w * interval '1 hour'
        FROM lora l CROSS JOIN generate_series(1, 3) AS w
        WHERE l.last_used_at IS NOT NULL AND w <= 1 + l.file_id % 3`);

      await client.query(`
        INSERT INTO user_lora_quota (user_id, max_storage_bytes, max_lora_count, used_bytes, lora_count)
        SELECT user_id, greatest(sum(size_bytes) * 2, 10737418240), greatest(count(*) * 2, 100), sum(size_bytes), count(*)
        FROM lora GROUP BY user_id`);
    });

    const [, indexMs] = await timed(`rebuilt ${indexes.length} secondary indexes`, async () => {
      for (const { indexdef } of indexes) await client.query(indexdef);
    });
    // VACUUM (not only ANALYZE): sets the visibility map like autovacuum would after a bulk load,
    // and keeps autovacuum from kicking in in the middle of the timings. CHECKPOINT: writes the
    // load's dirty pages now rather than by the checkpointer while we time.
    const [, analyzeMs] = await timed('VACUUM ANALYZE + CHECKPOINT', async () => {
      await client.query('VACUUM ANALYZE flat_file, lora, lora_workflow_usage, user_lora_quota');
      await client.query('CHECKPOINT');
    });
    return { rowsMs, indexMs, analyzeMs };
  } finally {
    await client.end();
  }
}

// ---------------------------------------------------------------------------------------------
// The cases

export interface Case {
  key: string;
  label: string;
  sort: LoraSort;
  order: SortOrder;
  search: string | null;
  /** The hand-written equivalent, page only. $1 = user id, $2 = LIKE pattern when searching. */
  sql: string;
  /** The same with the total in the one query: count(*) OVER (). */
  countSql: string;
}

const COLUMNS = `l.file_id, l.user_id, l.name, l.file_name, l.format, l.size_bytes, l.sha256, l.status,
  f.tags, l.created_at, l.updated_at, l.usage_count, l.last_used_at, l.base_model,
  l.base_model_source, l.rank, l.alpha, l.metadata, l.user_metadata`;

function caseSql(where: string, orderBy: string): Pick<Case, 'sql' | 'countSql'> {
  const sql = (extra: string) => `SELECT ${COLUMNS}${extra}
    FROM lora l JOIN flat_file f ON f.id = l.file_id
    WHERE ${where} ORDER BY ${orderBy} LIMIT 50`;
  return { sql: sql(''), countSql: sql(', count(*) OVER () AS total') };
}

export const CASES: Case[] = [
  {
    key: 'default',
    label: 'CREATED_AT DESC',
    sort: 'CREATED_AT',
    order: 'DESC',
    search: null,
    ...caseSql(`l.user_id = $1 AND l.status = 'READY'`, 'l.created_at DESC, l.file_id DESC'),
  },
  {
    key: 'name',
    label: 'NAME ASC',
    sort: 'NAME',
    order: 'ASC',
    search: null,
    ...caseSql(`l.user_id = $1 AND l.status = 'READY'`, 'lower(l.name) COLLATE "C" ASC, l.file_id ASC'),
  },
  {
    key: 'search',
    label: `search "${SEARCH}"`,
    sort: 'CREATED_AT',
    order: 'DESC',
    search: SEARCH,
    ...caseSql(`l.user_id = $1 AND l.status = 'READY' AND lower(l.name) LIKE $2`, 'l.created_at DESC, l.file_id DESC'),
  },
];

export const sqlParams = (c: Case, userId: string) => (c.search ? [userId, `%${c.search.toLowerCase()}%`] : [userId]);

export const LIST_QUERY = `query BenchList($limit: Int!, $sort: LoraSort!, $order: SortOrder!, $search: String) {
  loras(limit: $limit, sort: $sort, order: $order, search: $search) {
    total
    loras { id name sizeBytes createdAt tags metadata { baseModel rank } usageCount lastUsedAt }
  }
}`;

export const MINIMAL_QUERY = `query BenchMinimal { loras(limit: 1) { total } }`;

export const LIST_WITH_WORKFLOWS_QUERY = `query BenchListWorkflows($limit: Int!) {
  loras(limit: $limit) {
    total
    loras { id name sizeBytes createdAt tags metadata { baseModel rank } usageCount lastUsedAt workflowsUsing { id } }
  }
}`;
