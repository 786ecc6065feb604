import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, renameSync } from 'node:fs';
import { basename, dirname } from 'node:path';
import Database from 'better-sqlite3';
import { AgentError } from './errors.ts';
import type { CacheRow } from './eviction.ts';
import { agentInstruments } from './telemetry.ts';
import { parseCacheTime, toPythonIso } from './timefmt.ts';

/**
 * `model_cache.db`: the seed's `models` and `settings` tables, shared with the Python ComfyUI
 * nodes (columns unchanged), plus the agent's own tables for what the seed has no column for.
 * WAL, a busy timeout, `BEGIN IMMEDIATE` for every write, short transactions (the Python side
 * opens a connection per call and waits 5 s at most).
 *
 * Good neighbour rules (issue 12):
 * - the agent deletes or rewrites only what it created: `lora_cache_entries.owned` says whether the
 *   agent wrote the file (1) or adopted one already there (0, e.g. a shared LoRA the Python asset
 *   downloader placed); `models` rows are written, bumped or deleted only for owned entries, and a
 *   row of another `model_type` is never retyped;
 * - the agent's own `models` rows carry `is_ignore = 1`: the Python side's LRU query
 *   (`get_least_recently_used_models`) never offers them, leased or not; the agent evicts its own
 *   files, and honours `protected = 1` on them as the operator's "keep";
 * - `last_used` never moves backwards (lora_later_time), whoever wrote the newer one.
 */

const GiB = 1024 ** 3;

export const USER_LORA = 'user_lora';
export const SHARED_LORA = 'shared_lora';

const SEED_SCHEMA = `
CREATE TABLE IF NOT EXISTS models (
  id INTEGER PRIMARY KEY, path TEXT UNIQUE, model_type TEXT, filename TEXT, size_bytes INTEGER,
  last_used TIMESTAMP, use_count INTEGER DEFAULT 0, download_date TIMESTAMP,
  protected BOOLEAN DEFAULT 0, is_ignore BOOLEAN DEFAULT 0);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT);
INSERT OR IGNORE INTO settings (key, value) VALUES ('min_free_space_gb', '10');
INSERT OR IGNORE INTO settings (key, value) VALUES ('lora_cache_max_gb', '50');
INSERT OR IGNORE INTO settings (key, value) VALUES ('lora_max_age_days', '7');
INSERT OR IGNORE INTO settings (key, value) VALUES ('lora_eviction_enabled', 'true');`;

const AGENT_SCHEMA = `
CREATE TABLE IF NOT EXISTS lora_cache_entries (
  path TEXT PRIMARY KEY, source TEXT NOT NULL CHECK (source IN ('user', 'shared')),
  lora_id TEXT, user_id TEXT, shared_name TEXT, sha256 TEXT, etag TEXT, size_bytes INTEGER NOT NULL,
  pending_delete INTEGER NOT NULL DEFAULT 0, verified INTEGER NOT NULL DEFAULT 1);
CREATE UNIQUE INDEX IF NOT EXISTS lora_cache_entries_lora ON lora_cache_entries (lora_id) WHERE source = 'user';
CREATE UNIQUE INDEX IF NOT EXISTS lora_cache_entries_shared ON lora_cache_entries (shared_name) WHERE source = 'shared';
CREATE TABLE IF NOT EXISTS lora_cache_leases (
  lease_id TEXT PRIMARY KEY, path TEXT NOT NULL, holder TEXT, expires_at_ms INTEGER NOT NULL, owner TEXT);
CREATE INDEX IF NOT EXISTS lora_cache_leases_path ON lora_cache_leases (path);
CREATE TABLE IF NOT EXISTS lora_cache_counters (
  hour INTEGER PRIMARY KEY, hits INTEGER NOT NULL DEFAULT 0, misses INTEGER NOT NULL DEFAULT 0,
  evictions INTEGER NOT NULL DEFAULT 0);`;

export interface CacheSettings {
  maxCacheBytes: number;
  maxAgeDays: number;
  evictionEnabled: boolean;
  /** `min_free_space_gb`: advisory, as on the Python side — eviction works towards it, a download never fails on it. */
  minFreeBytes: number;
  /** `lora_min_free_hard_gb` (the agent's own key, default 0): a download that would leave less free fails CACHE_FULL. */
  minFreeHardBytes: number;
}

export interface CacheEntry {
  path: string;
  /** The agent wrote this file (false: adopted, someone else's — never deleted, its models row never touched). */
  owned: boolean;
  source: 'user' | 'shared';
  loraId: string | null;
  userId: string | null;
  sharedName: string | null;
  sha256: string | null;
  etag: string | null;
  sizeBytes: number;
  pendingDelete: boolean;
  /** False for a file re-registered from disk whose hash the API has not confirmed yet. */
  verified: boolean;
}

export interface Counters24h {
  hits: number;
  misses: number;
  evictions: number;
}

interface EntrySqlRow {
  path: string;
  source: 'user' | 'shared';
  lora_id: string | null;
  user_id: string | null;
  shared_name: string | null;
  sha256: string | null;
  etag: string | null;
  size_bytes: number;
  pending_delete: number;
  verified: number;
  owned: number;
}

const toEntry = (r: EntrySqlRow): CacheEntry => ({
  path: r.path,
  owned: r.owned !== 0,
  source: r.source,
  loraId: r.lora_id,
  userId: r.user_id,
  sharedName: r.shared_name,
  sha256: r.sha256,
  etag: r.etag,
  sizeBytes: r.size_bytes,
  pendingDelete: r.pending_delete === 1,
  verified: r.verified === 1,
});

/** The connection's busy timeout: the longest one statement blocks the event loop on a lock. */
const LOCK_WAIT_MS = 50;

export interface OpenStoreOptions {
  /** Create the file when it does not exist (else `IndexMissingError`). @default false */
  create?: boolean;
  /** How long writes keep retrying a lock held elsewhere (CacheStore.retry). @default 5000 */
  busyTimeoutMs?: number;
  /** Told when a corrupt database was moved aside (the index is then rebuilt from disk). */
  onCorrupt?: (movedTo: string, error: unknown) => void;
}

/** model_cache.db does not exist and the agent may not create it (the Python nodes' init_db() does). */
export class IndexMissingError extends Error {
  override readonly name = 'IndexMissingError';
  constructor(readonly dbPath: string) {
    super(
      `model_cache.db does not exist yet at ${dbPath}: the EmProps nodes create it when ComfyUI starts (init_db); ` +
        'on a machine without them set MODEL_CACHE_DB_CREATE=true',
    );
  }
}

/**
 * Opens the index (creating it only with `create`); a corrupt file is moved aside and a fresh one
 * created. Without `create`, the folder of another package is never made (a later `git clone` of
 * the EmProps nodes into it would fail) and a missing file throws IndexMissingError.
 */
export function openStore(dbPath: string, options: OpenStoreOptions = {}): CacheStore {
  if (options.create) mkdirSync(dirname(dbPath), { recursive: true });
  else if (!existsSync(dbPath)) throw new IndexMissingError(dbPath);
  try {
    return new CacheStore(openChecked(dbPath, options.busyTimeoutMs ?? 5000), options.busyTimeoutMs ?? 5000);
  } catch (error) {
    if (!isCorruption(error)) throw error;
    const aside = `${dbPath}.corrupt-${Date.now()}`;
    for (const suffix of ['', '-wal', '-shm']) {
      if (existsSync(dbPath + suffix)) renameSync(dbPath + suffix, aside + suffix);
    }
    options.onCorrupt?.(aside, error);
    return new CacheStore(openChecked(dbPath, options.busyTimeoutMs ?? 5000), options.busyTimeoutMs ?? 5000);
  }
}

/** Opens with the whole budget as busy timeout (start-up may wait), then drops to LOCK_WAIT_MS. */
function openChecked(dbPath: string, busyBudgetMs: number): Database.Database {
  const db = new Database(dbPath, { timeout: busyBudgetMs });
  try {
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = NORMAL');
    const check = db.pragma('quick_check', { simple: true });
    if (check !== 'ok') throw Object.assign(new Error(`quick_check: ${String(check)}`), { code: 'SQLITE_CORRUPT' });
    db.exec(SEED_SCHEMA);
    db.exec(AGENT_SCHEMA);
    const columns = (table: string) =>
      db
        .prepare<[], { name: string }>(`PRAGMA table_info(${table})`)
        .all()
        .map((c) => c.name);
    // init_db before 2025-05 and db/query_db.py create `models` without is_ignore (the Python side's default: 0).
    if (!columns('models').includes('is_ignore')) db.exec('ALTER TABLE models ADD COLUMN is_ignore BOOLEAN DEFAULT 0');
    // Agents before issue 10 created the leases table without `owner`.
    if (!columns('lora_cache_leases').includes('owner')) db.exec('ALTER TABLE lora_cache_leases ADD COLUMN owner TEXT');
    // Agents before issue 17 did not record which file on disk (`dev:ino`) an entry is: hard links.
    if (!columns('lora_cache_entries').includes('file_id')) db.exec('ALTER TABLE lora_cache_entries ADD COLUMN file_id TEXT');
    // Agents before issue 12 wrote every entry's file themselves; their rows become is_ignore = 1
    // (an operator's is_ignore = 1 on one of them, meaning "keep", becomes protected = 1 first).
    if (!columns('lora_cache_entries').includes('owned')) {
      db.transaction(() => {
        db.exec('ALTER TABLE lora_cache_entries ADD COLUMN owned INTEGER NOT NULL DEFAULT 1');
        db.exec(
          'UPDATE models SET protected = 1 WHERE is_ignore = 1 AND path IN (SELECT path FROM lora_cache_entries) ' +
            `AND model_type IN ('${USER_LORA}', '${SHARED_LORA}')`,
        );
        db.exec(
          `UPDATE models SET is_ignore = 1 WHERE path IN (SELECT path FROM lora_cache_entries) AND model_type IN ('${USER_LORA}', '${SHARED_LORA}')`,
        );
      }).immediate();
    }
    db.function('lora_later_time', { deterministic: true }, laterTime);
    db.pragma(`busy_timeout = ${LOCK_WAIT_MS}`);
    return db;
  } catch (error) {
    db.close();
    throw error;
  }
}

function isCorruption(error: unknown): boolean {
  const code = (error as { code?: string }).code ?? '';
  return code === 'SQLITE_CORRUPT' || code === 'SQLITE_NOTADB' || code.startsWith('SQLITE_CORRUPT');
}

/**
 * SQL `lora_later_time(current, candidate)`: the later of two model_cache.db timestamps, so
 * `last_used` never moves backwards when the agent writes a buffered hit after the Python side
 * wrote a newer use. Compared as times (parseCacheTime: naive local ISO text, SQLite's UTC form,
 * numbers), not as text; an unparseable current value is replaced.
 */
function laterTime(current: unknown, candidate: unknown): unknown {
  const a = parseCacheTime(current);
  const b = parseCacheTime(candidate);
  return a !== null && (b === null || a >= b) ? current : candidate;
}

const hourOf = (ms: number) => Math.floor(ms / 3_600_000);
const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');

export class CacheStore {
  private readonly s;
  /** Hits not yet written: path → uses and the latest time (flushed in one transaction). */
  private touches = new Map<string, { uses: number; last: Date }>();
  private lookups = new Map<number, { hits: number; misses: number }>();
  /**
   * Leases taken on hits, not yet written (sha256 of the token → row): written with the next
   * flush, in the same transaction as the hits, unless released before. This process's eviction,
   * release and sweeps see them at once; another process (a one-shot CLI) within that second not.
   */
  private pendingLeases = new Map<string, { path: string; holder: string | null; expiresAtMs: number; owner: string | null }>();

  /**
   * @param busyBudgetMs how long a write may keep retrying while another process (the Python
   *   nodes) holds the lock (writeRetrying). Each try waits at most the connection's short busy
   *   timeout (LOCK_WAIT_MS), so the event loop is never blocked for long.
   */
  constructor(
    readonly db: Database.Database,
    private readonly busyBudgetMs = 5000,
  ) {
    this.s = {
      setting: db.prepare<[string], { value: string }>('SELECT value FROM settings WHERE key = ?'),
      putSetting: db.prepare('INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value'),
      userEntry: db.prepare<[string], EntrySqlRow>("SELECT * FROM lora_cache_entries WHERE source = 'user' AND lora_id = ?"),
      sharedEntry: db.prepare<[string], EntrySqlRow>("SELECT * FROM lora_cache_entries WHERE source = 'shared' AND shared_name = ?"),
      entryByPath: db.prepare<[string], EntrySqlRow>('SELECT * FROM lora_cache_entries WHERE path = ?'),
      entries: db.prepare<[], EntrySqlRow>('SELECT * FROM lora_cache_entries'),
      // A hit's models row, added back after the Python side removed it (owned entries only, as register does)
      readdModel: db.prepare(
        'INSERT INTO models (path, model_type, filename, size_bytes, last_used, use_count, download_date, protected, is_ignore) ' +
          `SELECT e.path, CASE e.source WHEN 'user' THEN '${USER_LORA}' ELSE '${SHARED_LORA}' END, ?, e.size_bytes, ?, ?, ?, 0, 1 ` +
          'FROM lora_cache_entries e WHERE e.path = ? AND e.owned = 1 AND NOT EXISTS (SELECT 1 FROM models m WHERE m.path = e.path)',
      ),
      touchMany: db.prepare(
        'UPDATE models SET last_used = lora_later_time(last_used, ?), use_count = COALESCE(use_count, 0) + ? ' +
          'WHERE path = ? AND path IN (SELECT path FROM lora_cache_entries WHERE owned = 1)',
      ),
      // A file with several hard links (identical content of several users) counts once.
      userBytes: db.prepare<[string], { bytes: number | null }>(
        'SELECT SUM(size) AS bytes FROM (SELECT MAX(m.size_bytes) AS size FROM models m JOIN lora_cache_entries e ON e.path = m.path ' +
          'WHERE m.model_type = ? AND e.owned = 1 GROUP BY COALESCE(e.file_id, e.path))',
      ),
      twins: db.prepare<[string, number], EntrySqlRow>(
        "SELECT * FROM lora_cache_entries WHERE source = 'user' AND sha256 = ? AND size_bytes = ? AND owned = 1 AND verified = 1 AND pending_delete = 0",
      ),
      count: db.prepare(
        'INSERT INTO lora_cache_counters (hour, hits, misses, evictions) VALUES (@hour, @hits, @misses, @evictions) ' +
          'ON CONFLICT(hour) DO UPDATE SET hits = hits + @hits, misses = misses + @misses, evictions = evictions + @evictions',
      ),
      upsertModel: db.prepare(
        'INSERT INTO models (path, model_type, filename, size_bytes, last_used, use_count, download_date, protected, is_ignore) ' +
          'VALUES (@path, @modelType, @filename, @sizeBytes, @now, 1, @now, 0, 1) ' +
          // A row the Python side wrote for this path is left as it is: never retyped, never re-flagged.
          'ON CONFLICT(path) DO UPDATE SET model_type = excluded.model_type, filename = excluded.filename, ' +
          'size_bytes = excluded.size_bytes, last_used = lora_later_time(models.last_used, excluded.last_used), ' +
          'use_count = COALESCE(models.use_count, 0) + 1, download_date = excluded.download_date, is_ignore = 1 ' +
          `WHERE models.model_type IN ('${USER_LORA}', '${SHARED_LORA}')`,
      ),
      upsertEntry: db.prepare(
        'INSERT OR REPLACE INTO lora_cache_entries (path, source, lora_id, user_id, shared_name, sha256, etag, size_bytes, pending_delete, verified, owned, file_id) ' +
          'VALUES (@path, @source, @loraId, @userId, @sharedName, @sha256, @etag, @sizeBytes, 0, @verified, @owned, @fileId)',
      ),
      moveModel: db.prepare(
        'UPDATE models SET path = ?, filename = ? WHERE path = ? AND path IN (SELECT path FROM lora_cache_entries WHERE owned = 1)',
      ),
      moveEntry: db.prepare('UPDATE lora_cache_entries SET path = ? WHERE path = ?'),
      moveLeases: db.prepare('UPDATE lora_cache_leases SET path = ? WHERE path = ?'),
      deleteModel: db.prepare('DELETE FROM models WHERE path = ? AND path IN (SELECT path FROM lora_cache_entries WHERE owned = 1)'),
      deleteEntry: db.prepare('DELETE FROM lora_cache_entries WHERE path = ?'),
      deleteLeasesOf: db.prepare('DELETE FROM lora_cache_leases WHERE path = ?'),
      modelRows: db.prepare<
        [string, string],
        {
          path: string;
          model_type: string;
          size_bytes: number | null;
          last_used: unknown;
          download_date: unknown;
          protected: number | null;
          is_ignore: number | null;
          content_key: string | null;
        }
      >(
        // content_key: the file's dev:ino when another row names the same file (hard links), else null.
        'SELECT m.path, m.model_type, m.size_bytes, m.last_used, m.download_date, m.protected, m.is_ignore, ' +
          'CASE WHEN e.file_id IS NOT NULL AND COUNT(*) OVER (PARTITION BY e.file_id) > 1 THEN e.file_id END AS content_key FROM models m ' +
          'JOIN lora_cache_entries e ON e.path = m.path WHERE m.model_type IN (?, ?) AND e.owned = 1',
      ),
      timestamps: db.prepare<[], { last_used: unknown; download_date: unknown }>('SELECT last_used, download_date FROM models'),
      modelType: db.prepare<[string], { model_type: string | null }>('SELECT model_type FROM models WHERE path = ?'),
      markPending: db.prepare("UPDATE lora_cache_entries SET pending_delete = 1 WHERE source = 'user' AND lora_id = ?"),
      pending: db.prepare<[], EntrySqlRow>('SELECT * FROM lora_cache_entries WHERE pending_delete = 1'),
      setVerified: db.prepare('UPDATE lora_cache_entries SET verified = 1 WHERE path = ?'),
      addLease: db.prepare('INSERT INTO lora_cache_leases (lease_id, path, holder, expires_at_ms, owner) VALUES (?, ?, ?, ?, ?)'),
      capLeases: db.prepare('UPDATE lora_cache_leases SET expires_at_ms = ? WHERE expires_at_ms > ?'),
      leaseById: db.prepare<[string], { path: string }>('SELECT path FROM lora_cache_leases WHERE lease_id = ?'),
      deleteLease: db.prepare('DELETE FROM lora_cache_leases WHERE lease_id = ?'),
      leasesOfHolder: db.prepare<[string, string], { lease_id: string; path: string }>(
        'SELECT lease_id, path FROM lora_cache_leases WHERE holder = ? AND owner = ?',
      ),
      liveLeases: db.prepare<[number], { path: string }>('SELECT DISTINCT path FROM lora_cache_leases WHERE expires_at_ms > ?'),
      liveLeaseOn: db.prepare<[string, number], { one: number }>(
        'SELECT 1 AS one FROM lora_cache_leases WHERE path = ? AND expires_at_ms > ? LIMIT 1',
      ),
      pruneLeases: db.prepare('DELETE FROM lora_cache_leases WHERE expires_at_ms <= ?'),
      counters: db.prepare<[number], { hits: number | null; misses: number | null; evictions: number | null }>(
        'SELECT SUM(hits) AS hits, SUM(misses) AS misses, SUM(evictions) AS evictions FROM lora_cache_counters WHERE hour >= ?',
      ),
      pruneCounters: db.prepare('DELETE FROM lora_cache_counters WHERE hour < ?'),
    };
  }

  /** The seed's settings, with environment overrides written back so the Python side agrees. */
  settings(): CacheSettings {
    const num = (key: string, fallback: number) => {
      const value = Number.parseFloat(this.s.setting.get(key)?.value ?? '');
      return Number.isFinite(value) && value >= 0 ? value : fallback;
    };
    const enabled = (this.s.setting.get('lora_eviction_enabled')?.value ?? 'true').trim().toLowerCase();
    return {
      maxCacheBytes: Math.floor(num('lora_cache_max_gb', 50) * GiB),
      maxAgeDays: num('lora_max_age_days', 7),
      evictionEnabled: !['false', '0', 'no', 'off'].includes(enabled),
      minFreeBytes: Math.floor(num('min_free_space_gb', 10) * GiB),
      minFreeHardBytes: Math.floor(num('lora_min_free_hard_gb', 0) * GiB),
    };
  }

  /** At start-up (may block up to the busy budget: nothing is served yet). */
  putSettings(values: Record<string, string>): void {
    this.db.pragma(`busy_timeout = ${this.busyBudgetMs}`);
    try {
      this.write(() => {
        for (const [key, value] of Object.entries(values)) this.s.putSetting.run(key, value);
      });
    } finally {
      this.db.pragma(`busy_timeout = ${LOCK_WAIT_MS}`);
    }
  }

  findUser(loraId: string): CacheEntry | null {
    const row = this.s.userEntry.get(loraId);
    return row ? toEntry(row) : null;
  }

  findShared(name: string): CacheEntry | null {
    const row = this.s.sharedEntry.get(name);
    return row ? toEntry(row) : null;
  }

  /** Verified user LoRA files of this content the agent wrote, not being deleted: sources for a hard link. */
  twinsOf(sha256: string, sizeBytes: number): CacheEntry[] {
    return this.s.twins.all(sha256, sizeBytes).map(toEntry);
  }

  findByPath(path: string): CacheEntry | null {
    const row = this.s.entryByPath.get(path);
    return row ? toEntry(row) : null;
  }

  entries(): CacheEntry[] {
    return this.s.entries.all().map(toEntry);
  }

  /** The model_type of another writer's `models` row for `path` (null: no row, or one of the agent's types). */
  foreignModelType(path: string): string | null {
    const row = this.s.modelType.get(path);
    if (!row) return null;
    return row.model_type === USER_LORA || row.model_type === SHARED_LORA ? null : String(row.model_type);
  }

  /**
   * A cache hit: the seed's `last_used`/`use_count` bump plus the hour's hit counter, kept in
   * memory until the next flush so the hit path never waits on a lock the Python nodes hold.
   */
  touch(path: string, now: Date): void {
    const t = this.touches.get(path);
    if (t) {
      t.uses++;
      if (now > t.last) t.last = now;
    } else this.touches.set(path, { uses: 1, last: now });
    this.countLookup(now, 'hits');
  }

  /** A miss (a download started), buffered like hits. */
  countMiss(now: Date): void {
    this.countLookup(now, 'misses');
  }

  private countLookup(now: Date, kind: 'hits' | 'misses'): void {
    const hour = hourOf(now.getTime());
    const c = this.lookups.get(hour) ?? { hits: 0, misses: 0 };
    c[kind]++;
    this.lookups.set(hour, c);
  }

  /**
   * Writes buffered hits and hit leases in one short transaction; on a lock held elsewhere they
   * wait for the next flush. A hit whose `models` row is gone (the Python side removed it) adds
   * it back here, so the hit path itself reads nothing from SQLite for it.
   */
  flushTouches(): boolean {
    if (this.touches.size === 0 && this.lookups.size === 0 && this.pendingLeases.size === 0) return true;
    const touches = this.touches;
    const lookups = this.lookups;
    const leases = this.pendingLeases;
    try {
      this.write(() => {
        for (const [path, t] of touches) {
          const last = toPythonIso(t.last);
          if (this.s.touchMany.run(last, t.uses, path).changes === 0) this.s.readdModel.run(basename(path), last, t.uses, last, path);
        }
        for (const [hour, c] of lookups) this.s.count.run({ hour, hits: c.hits, misses: c.misses, evictions: 0 });
        for (const [id, l] of leases) this.s.addLease.run(id, l.path, l.holder, l.expiresAtMs, l.owner);
      });
      this.touches = new Map();
      this.lookups = new Map();
      this.pendingLeases = new Map();
      return true;
    } catch (error) {
      if ((error as { code?: string }).code === 'SQLITE_BUSY') return false;
      throw error;
    }
  }

  /**
   * A file now in place: our facts, and — for a file the agent wrote (`owned`, the default) — its
   * `models` row (model_type user_lora / shared_lora, is_ignore 1). An adopted file (`owned: false`)
   * gets no models row from the agent: whoever wrote it keeps theirs.
   */
  register(
    entry: Omit<CacheEntry, 'pendingDelete' | 'owned'> & {
      fileName: string;
      owned?: boolean /** `dev:ino` of the file. */;
      fileId?: string | null;
    },
    now: Date,
  ): Promise<void> {
    const owned = entry.owned ?? true;
    return this.writeRetrying(() => {
      if (owned) {
        this.s.upsertModel.run({
          path: entry.path,
          modelType: entry.source === 'user' ? USER_LORA : SHARED_LORA,
          filename: entry.fileName,
          sizeBytes: entry.sizeBytes,
          now: toPythonIso(now),
        });
      }
      this.s.upsertEntry.run({
        path: entry.path,
        source: entry.source,
        loraId: entry.loraId,
        userId: entry.userId,
        sharedName: entry.sharedName,
        sha256: entry.sha256,
        etag: entry.etag,
        sizeBytes: entry.sizeBytes,
        verified: entry.verified ? 1 : 0,
        owned: owned ? 1 : 0,
        fileId: entry.fileId ?? null,
      });
    });
  }

  /**
   * Removes the rows of `path` unless a live lease holds it (checked in the same IMMEDIATE
   * transaction, so a lease taken by another process after planning still wins).
   */
  removeUnlessLeased(path: string, now: Date, counts: { eviction: boolean }): Promise<boolean> {
    return this.writeRetrying(() => {
      if (this.pendingLeaseOn(path, now) || this.s.liveLeaseOn.get(path, now.getTime())) return false;
      this.dropRows(path);
      if (counts.eviction) this.s.count.run({ hour: hourOf(now.getTime()), hits: 0, misses: 0, evictions: 1 });
      return true;
    });
  }

  /** The file of `from` was renamed to `to` (same folder): its rows and leases follow. */
  movePath(from: string, to: string, fileName: string): Promise<void> {
    return this.writeRetrying(() => {
      this.s.moveModel.run(to, fileName, from);
      this.s.moveEntry.run(to, from);
      this.s.moveLeases.run(to, from);
      for (const l of this.pendingLeases.values()) if (l.path === from) l.path = to;
    });
  }

  /**
   * Removes our rows of a file that is gone from disk (no lease check: there is nothing to protect).
   * The `models` row goes only when the agent owns the entry: another writer's row stays.
   */
  forget(path: string): Promise<void> {
    return this.writeRetrying(() => this.dropRows(path));
  }

  private dropRows(path: string): void {
    this.s.deleteModel.run(path);
    this.s.deleteEntry.run(path);
    this.s.deleteLeasesOf.run(path);
    for (const [id, l] of this.pendingLeases) if (l.path === path) this.pendingLeases.delete(id);
  }

  /** Bytes of user LoRAs in the index (what the cap limits). */
  userLoraBytes(): number {
    return Number(this.s.userBytes.get(USER_LORA)?.bytes ?? 0);
  }

  /** `models` rows the agent manages, parsed for the planners (buffered hits written first). */
  cacheRows(): CacheRow[] {
    this.flushTouches();
    return this.s.modelRows.all(USER_LORA, SHARED_LORA).map((r) => ({
      path: r.path,
      modelType: r.model_type,
      sizeBytes: Number(r.size_bytes ?? 0),
      lastUsedMs: parseCacheTime(r.last_used),
      downloadDateMs: parseCacheTime(r.download_date),
      protected: Boolean(r.protected),
      // is_ignore = 1 on the agent's rows is the agreement with the Python side, not an operator's flag.
      ignored: false,
      contentKey: r.content_key,
    }));
  }

  /** Rows dated more than `slackMs` after `now`: written in another time zone (naive local times). */
  futureRows(now: Date, slackMs = 5 * 60_000): number {
    const limit = now.getTime() + slackMs;
    let n = 0;
    for (const r of this.s.timestamps.iterate()) {
      const used = parseCacheTime(r.last_used);
      const downloaded = parseCacheTime(r.download_date);
      if ((used !== null && used > limit) || (downloaded !== null && downloaded > limit)) n++;
    }
    return n;
  }

  async markPendingDelete(loraId: string): Promise<CacheEntry | null> {
    await this.writeRetrying(() => this.s.markPending.run(loraId));
    return this.findUser(loraId);
  }

  pendingDeletes(): CacheEntry[] {
    return this.s.pending.all().map(toEntry);
  }

  async markVerified(path: string): Promise<void> {
    await this.writeRetrying(() => this.s.setVerified.run(path));
  }

  /**
   * A lease on `path` until `expiresAt`. Its id is a secret token (256 random bits) returned once;
   * the index keeps only its sha256, so reading model_cache.db releases nothing. `grant`, when
   * given, binds the lease to that job grant: `releaseLeases({ holder, grant })` needs the same one.
   */
  async acquireLease(
    path: string,
    expiresAt: Date,
    holder: string | null,
    grant: string | null,
    options: { buffered?: boolean } = {},
  ): Promise<{ leaseId: string; expiresAt: Date }> {
    const leaseId = randomBytes(32).toString('base64url');
    const owner = grant === null ? null : sha256(grant);
    // A hit's lease waits for the next flush (a job that releases within the second writes nothing)
    if (options.buffered) this.pendingLeases.set(sha256(leaseId), { path, holder, expiresAtMs: expiresAt.getTime(), owner });
    else await this.writeRetrying(() => this.s.addLease.run(sha256(leaseId), path, holder, expiresAt.getTime(), owner));
    return { leaseId, expiresAt };
  }

  private pendingLeaseOn(path: string, now: Date): boolean {
    for (const l of this.pendingLeases.values()) if (l.path === path && l.expiresAtMs > now.getTime()) return true;
    return false;
  }

  /** Shortens every lease ending after `latest` to end then (start-up: older agents had no cap). */
  capLeases(latest: Date): Promise<void> {
    for (const l of this.pendingLeases.values()) l.expiresAtMs = Math.min(l.expiresAtMs, latest.getTime());
    return this.writeRetrying(() => {
      this.s.capLeases.run(latest.getTime(), latest.getTime());
    });
  }

  /**
   * Releases one lease (by its token) or every lease a holder took with `grant` (leases without
   * a grant are released by token only); returns the paths they covered.
   */
  releaseLeases(by: { leaseId: string } | { holder: string; grant: string }): Promise<string[]> {
    if ('leaseId' in by) {
      const pending = this.pendingLeases.get(sha256(by.leaseId));
      if (pending) {
        this.pendingLeases.delete(sha256(by.leaseId));
        return Promise.resolve([pending.path]);
      }
    }
    const fromPending: string[] = [];
    if ('holder' in by) {
      const owner = sha256(by.grant);
      for (const [id, l] of this.pendingLeases) {
        if (l.holder !== by.holder || l.owner !== owner) continue;
        this.pendingLeases.delete(id);
        fromPending.push(l.path);
      }
    }
    return this.writeRetrying(() => {
      if ('leaseId' in by) {
        const id = sha256(by.leaseId);
        const row = this.s.leaseById.get(id);
        if (!row) return [];
        this.s.deleteLease.run(id);
        return [row.path];
      }
      const rows = this.s.leasesOfHolder.all(by.holder, sha256(by.grant));
      for (const r of rows) this.s.deleteLease.run(r.lease_id);
      return [...new Set([...fromPending, ...rows.map((r) => r.path)])];
    });
  }

  leasedPaths(now: Date): Set<string> {
    const paths = new Set(this.s.liveLeases.all(now.getTime()).map((r) => r.path));
    for (const l of this.pendingLeases.values()) if (l.expiresAtMs > now.getTime()) paths.add(l.path);
    return paths;
  }

  isLeased(path: string, now: Date): boolean {
    return this.pendingLeaseOn(path, now) || this.s.liveLeaseOn.get(path, now.getTime()) !== undefined;
  }

  /** Drops expired leases and counters older than two days. */
  prune(now: Date): Promise<void> {
    for (const [id, l] of this.pendingLeases) if (l.expiresAtMs <= now.getTime()) this.pendingLeases.delete(id);
    return this.writeRetrying(() => {
      this.s.pruneLeases.run(now.getTime());
      this.s.pruneCounters.run(hourOf(now.getTime()) - 48);
    });
  }

  counters24h(now: Date): Counters24h {
    this.flushTouches();
    const row = this.s.counters.get(hourOf(now.getTime()) - 23);
    return { hits: row?.hits ?? 0, misses: row?.misses ?? 0, evictions: row?.evictions ?? 0 };
  }

  close(): void {
    if (!this.db.open) return;
    this.flushTouches();
    this.db.close();
  }

  /**
   * A write transaction, retried with async pauses (the event loop free in between) while another
   * process holds the lock; INDEX_BUSY once the busy budget is spent. Every write the agent makes
   * while serving goes through here.
   */
  private async writeRetrying<T>(fn: () => T): Promise<T> {
    const deadline = Date.now() + this.busyBudgetMs;
    for (let n = 1; ; n++) {
      try {
        return this.write(fn);
      } catch (error) {
        if ((error as { code?: string }).code !== 'SQLITE_BUSY') throw error;
        if (Date.now() >= deadline) {
          throw new AgentError('INDEX_BUSY', `model_cache.db stayed locked by another process for ${this.busyBudgetMs} ms`, {
            retryable: true,
            cause: error,
          });
        }
        agentInstruments().indexBusyWaits.add(1);
        await new Promise((r) => setTimeout(r, Math.min(250, 20 * n) + Math.random() * 20));
      }
    }
  }

  /** One short BEGIN IMMEDIATE transaction (waits at most LOCK_WAIT_MS for other writers). */
  private write<T>(fn: () => T): T {
    return this.db.transaction(fn).immediate();
  }
}
