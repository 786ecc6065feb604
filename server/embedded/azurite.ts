import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdir } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { BlobServiceClient } from '@azure/storage-blob';
import { isSameRunning, readOwnerRecord, stopProcess, writeOwnerRecord } from './processes.ts';

/**
 * Azurite's blob service as a child process, for zero-config development and tests. It listens
 * on 127.0.0.1 with path-style URLs, for the well-known emulator account.
 */

export interface AzuriteOptions {
  /** Azurite workspace (--location): blob data and metadata, created if missing, reused if present. */
  dataDir: string;
  /** Blob service port on 127.0.0.1. @default a free port (Azurite binds port 0 and reports the port it got) */
  port?: number;
  /** Receives Azurite's stdout and stderr, one line per call. @default discarded */
  log?: (msg: string) => void;
}

export interface AzuriteHandle {
  /** Shared-key connection string for `devstoreaccount1` at `http://127.0.0.1:<port>/devstoreaccount1`. */
  connectionString: string;
  port: number;
  /** Graceful shutdown (metadata saved), SIGKILL if still running after 5 s. Idempotent. */
  stop(): Promise<void>;
}

/** The emulator's well-known account and key (public, documented by Microsoft). */
export const AZURITE_ACCOUNT = 'devstoreaccount1';
export const AZURITE_KEY = 'Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==';

class AzuriteStartError extends Error {
  override name = 'AzuriteStartError';
}

const START_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 5_000;
const LOG_TAIL_LINES = 40;

/**
 * Preloaded into the child. Azurite shuts down gracefully on SIGTERM but keeps running when its
 * parent dies. Through the IPC channel it sees 'disconnect' when the parent exits, however it
 * dies (even SIGKILL), and when `stop()` disconnects. Azurite registers its SIGTERM handler only
 * once listening and removes it when it runs: emitting (not sending) SIGTERM as soon as the
 * handler exists runs it exactly once, and never triggers the default "die now" action.
 */
const PARENT_LINK = `data:text/javascript,${encodeURIComponent(`
process.title = 'azurite-blob';
process.stdout.on('error', () => {});
process.stderr.on('error', () => {});
process.once('disconnect', () => {
  const shutDown = () => {
    if (process.listenerCount('SIGTERM') === 0) return false;
    process.emit('SIGTERM');
    return true;
  };
  if (!shutDown()) {
    // still starting (or already closing): poll, unref'd so that a closing Azurite can exit
    const poll = setInterval(() => shutDown() && clearInterval(poll), 50);
    poll.unref();
  }
  setTimeout(() => process.exit(1), 10000).unref();
});
`)}`;

/** Children started here and not stopped yet; disconnected (hence shut down) when Node exits. */
const running = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of running) if (child.connected) child.disconnect();
});

export async function startAzurite(opts: AzuriteOptions): Promise<AzuriteHandle> {
  const dataDir = path.resolve(opts.dataDir);
  const log = opts.log ?? (() => {});
  await mkdir(dataDir, { recursive: true });
  await stopOrphan(dataDir, log);

  const args = [
    ...['--blobHost', '127.0.0.1', '--blobPort', String(opts.port ?? 0), '--location', dataDir],
    '--silent', // no access log
    '--skipApiVersionCheck', // the SDK may speak a newer API version than this Azurite knows
    '--loose', // ignore unsupported headers instead of failing
    '--disableProductStyleUrl', // account always from the path, even for dotted host names
    '--disableTelemetry', // on by default: would report usage to Microsoft
  ];
  const child = spawn(process.execPath, ['--import', PARENT_LINK, azuriteBlobScript(), ...args], {
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
  });
  running.add(child);
  child.once('exit', () => running.delete(child));
  if (child.pid !== undefined) await writeOwnerRecord(path.join(dataDir, OWNER_FILE), child.pid);

  const tail: string[] = [];
  let reportPort: (port: number) => void = () => {};
  const listening = new Promise<number>((resolve) => {
    reportPort = resolve;
  });
  for (const stream of [child.stdout, child.stderr]) {
    if (stream === null) continue; // never: both are pipes
    createInterface({ input: stream }).on('line', (line) => {
      tail.push(line);
      if (tail.length > LOG_TAIL_LINES) tail.shift();
      log(line);
      // "Azurite Blob service successfully listens on http://127.0.0.1:12345"
      const match = /successfully listens on \S+:(\d+)/.exec(line);
      if (match?.[1] !== undefined) reportPort(Number(match[1]));
    });
  }
  const failure = (what: string): Error =>
    new AzuriteStartError(`Azurite ${what} (data dir ${dataDir}):\n  ${tail.join('\n  ') || '(no output)'}`);
  const died = new Promise<never>((_, reject) => {
    child.once('error', (err) => reject(failure(`could not be spawned: ${err.message}`)));
    // 'close' (not 'exit') so that the last output lines are in the tail
    child.once('close', (code, sig) => reject(failure(`exited during start-up (${sig ?? `code ${code}`})`)));
  });
  died.catch(() => {}); // only awaited during start-up

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= terminate(child);
    return stopping;
  };

  const deadline = Date.now() + START_TIMEOUT_MS;
  try {
    const port = await Promise.race([listening, died, rejectAt(deadline, () => failure('did not report a listening port'))]);
    const connectionString = azuriteConnectionString(port);
    await waitUntilServing(connectionString, deadline, died, () => failure('is not answering requests'));
    return { connectionString, port, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

/** In the workspace: which process started Azurite, and Azurite's own process (see processes.ts). */
const OWNER_FILE = 'lora-vault.owner';

/**
 * An Azurite of ours still running on this workspace, left by a server that died (kill -9): it
 * normally shuts itself down when its parent's IPC channel closes (PARENT_LINK); give it the
 * time, then SIGTERM, then SIGKILL. Refuses when the process that started it still runs.
 * Nothing is signalled unless it is the very process recorded (pid and start time).
 */
async function stopOrphan(dataDir: string, log: (msg: string) => void): Promise<void> {
  const record = await readOwnerRecord(path.join(dataDir, OWNER_FILE));
  if (record?.child === undefined || !(await isSameRunning(record.child))) return;
  if (await isSameRunning(record.owner)) {
    throw new AzuriteStartError(
      `Azurite (pid ${record.child.pid}) is running on ${dataDir} for process ${record.owner.pid}; is another server using the same data directory?`,
    );
  }
  log(`stopping orphaned Azurite (pid ${record.child.pid}) on ${dataDir}: the process that started it is gone`);
  const stopped = await stopProcess(record.child.pid, [
    ['SIGCONT', 10_000], // no-op signal: wait while it shuts itself down
    ['SIGTERM', STOP_TIMEOUT_MS],
    ['SIGKILL', STOP_TIMEOUT_MS],
  ]);
  if (!stopped) throw new AzuriteStartError(`the orphaned Azurite (pid ${record.child.pid}) on ${dataDir} did not stop`);
}

/** Connection string for the emulator account on 127.0.0.1:`port`. */
export function azuriteConnectionString(port: number): string {
  return [
    'DefaultEndpointsProtocol=http',
    `AccountName=${AZURITE_ACCOUNT}`,
    `AccountKey=${AZURITE_KEY}`,
    `BlobEndpoint=http://127.0.0.1:${port}/${AZURITE_ACCOUNT}`,
  ].join(';');
}

/** Polls a real request (service properties) until it succeeds. */
async function waitUntilServing(connectionString: string, deadline: number, died: Promise<never>, failure: () => Error): Promise<void> {
  const client = BlobServiceClient.fromConnectionString(connectionString, {
    retryOptions: { maxTries: 1, tryTimeoutInMs: 2_000 },
  });
  for (;;) {
    try {
      await Promise.race([client.getProperties(), died]);
      return;
    } catch (err) {
      if (err instanceof AzuriteStartError) throw err; // the child died
      if (Date.now() > deadline) throw new AzuriteStartError(`${failure().message}\n  last error: ${errorMessage(err)}`);
      await sleep(100);
    }
  }
}

async function terminate(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exit = once(child, 'exit');
  // Disconnecting makes the child run Azurite's SIGTERM handler (see PARENT_LINK); a real SIGTERM
  // would not do: Azurite's IPC 'message' listener keeps it alive once its server has closed.
  if (child.connected) child.disconnect();
  else child.kill('SIGTERM');
  const exited = await Promise.race([exit.then(() => true), sleep(STOP_TIMEOUT_MS, false, { ref: false })]);
  if (!exited) {
    child.kill('SIGKILL');
    await exit;
  }
}

/** Path of the azurite-blob entry point, found from this module (not the cwd). */
function azuriteBlobScript(): string {
  const require = createRequire(import.meta.url);
  const manifestPath = require.resolve('azurite/package.json');
  const manifest = require(manifestPath) as { bin?: Record<string, string> };
  const script = manifest.bin?.['azurite-blob'];
  if (script === undefined) throw new Error(`Azurite: no "azurite-blob" bin in ${manifestPath}`);
  return path.resolve(path.dirname(manifestPath), script);
}

function rejectAt(deadline: number, error: () => Error): Promise<never> {
  return sleep(Math.max(0, deadline - Date.now()), undefined, { ref: false }).then(() => {
    throw error();
  });
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
