import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFile, stat } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { createLoraClient, LoraUploadSessionDocument, type ResumableRunStats, type ResumableState } from '../../sdk/index.ts';
import { stateFileBeside } from '../../sdk/node-resumable.ts';
import { startTcpProxy, type TcpProxy } from './tcp-proxy.ts';

/**
 * Issue 17's "Done when" as a sequence of real processes (bench/upload-restart.ts at 2 GiB, the
 * resumable-uploads test small): a client process (resumable-child.ts, the SDK's Node
 * uploadLoraResumable, state file beside the upload) whose traffic goes through two TCP proxies
 * this process controls — one toward storage (counted), one toward the API. When `cutAt` of the
 * file has crossed toward storage, both proxies drop every connection and refuse new ones for
 * `outageMs` (a cut network: the client must back off and go on); when `killAt` has crossed, the
 * client is SIGKILLed (a crash); then a NEW process on the same file resumes from the state file
 * and `loraUploadSession` (storage's block list) and completes. Triggers fire in the proxy at the
 * exact byte, so the sequence does not depend on how fast the machine is.
 */

export interface RestartSequenceOptions {
  /** The API's GraphQL URL (the client reaches it through a proxy that is cut too). */
  graphqlUrl: string;
  token: string;
  /** The file to upload (its state file goes beside it). */
  path: string;
  /** Where the session's SAS URLs point (Azurite, or a proxy in front of it). */
  storage: { host: string; port: number };
  /** @default 0.3 */
  cutAt?: number;
  /** @default 5000 */
  outageMs?: number;
  /** How the network goes away (tcp-proxy.ts `down`): connections reset and refused, or a black hole. @default 'reset' */
  cut?: 'reset' | 'blackhole';
  /** The client's Put Block inactivity limit (`idleTimeoutMs`). @default the SDK's */
  idleMs?: number;
  /** The first client is given this long to reach the kill; then it is killed and the sequence fails. @default 30 min */
  firstRunDeadlineMs?: number;
  /** @default 0.6 */
  killAt?: number;
  /** Blocks in flight in the client. @default 4 */
  concurrency?: number;
  name?: string;
  /** Progress lines (and the children's stderr). */
  log?: (line: string) => void;
  /** Called after the kill, just before the new process starts. */
  beforeRestart?: () => void | Promise<void>;
}

export interface ChildRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
}

export interface RestartSequenceResult {
  size: number;
  /** Every byte the clients sent toward storage (blocks, their headers, retries, what the cut and the kill lost). */
  bytesToStorage: number;
  /** Of which the first process sent / the restarted one sent. */
  bytesFirst: number;
  bytesRestarted: number;
  /** Connections the storage proxy refused during the outage (the client's retries), and accepted after it. */
  refusedDuringOutage: number;
  acceptedAfterOutage: number;
  /** ms: start → cut, the outage, network back → first byte toward storage again, back → kill, the restarted run. */
  phases: { beforeCut: number; outage: number; backToFirstByte: number; backToKill: number; restarted: number };
  first: ChildRun;
  /** The session id in the state file after the kill, and the blocks storage held then (per loraUploadSession). */
  sessionId: string;
  blockCount: number;
  heldAtRestart: string[];
  restarted: ChildRun & { result?: { loraId: string; sha256: string; stats: ResumableRunStats; ms: number } };
  /** The state file beside the upload after the restarted run (it should be gone). */
  stateFileLeft: boolean;
}

const CHILD = fileURLToPath(new URL('./resumable-child.ts', import.meta.url));
const ROOT = fileURLToPath(new URL('../..', import.meta.url));

export async function runCutKillRestart(options: RestartSequenceOptions): Promise<RestartSequenceResult> {
  const size = (await stat(options.path)).size;
  const log = options.log ?? (() => {});
  const cutAt = options.cutAt ?? 0.3;
  const killAt = options.killAt ?? 0.6;
  const outageMs = options.outageMs ?? 5000;
  const api = new URL(options.graphqlUrl);
  const t0 = performance.now();
  const marks = { cut: Number.NaN, back: Number.NaN, firstByteBack: Number.NaN, kill: Number.NaN };
  let refusedAtBack = 0;
  let acceptedAtBack = 0;
  let child: ChildProcess | undefined;
  let storageProxy: TcpProxy | undefined;
  let apiProxy: TcpProxy | undefined;
  const onBytes = (total: number) => {
    if (!storageProxy || !apiProxy) return;
    if (Number.isNaN(marks.cut) && total >= cutAt * size) {
      marks.cut = performance.now();
      storageProxy.down(options.cut);
      apiProxy.down(options.cut);
      const how = options.cut === 'blackhole' ? 'nothing arrives, nothing is closed' : 'every connection dropped, new ones refused';
      log(`network cut at ${mib(total)} MiB toward storage (${pct(total, size)}): ${how} for ${outageMs} ms`);
      setTimeout(() => {
        if (!storageProxy || !apiProxy) return;
        marks.back = performance.now();
        ({ refused: refusedAtBack, accepted: acceptedAtBack } = storageProxy.connections());
        storageProxy.up();
        apiProxy.up();
        log(`network back (${refusedAtBack} connections refused meanwhile)`);
      }, outageMs);
      return;
    }
    if (!Number.isNaN(marks.back) && Number.isNaN(marks.firstByteBack)) marks.firstByteBack = performance.now();
    if (!Number.isNaN(marks.back) && Number.isNaN(marks.kill) && total >= killAt * size) {
      marks.kill = performance.now();
      child?.kill('SIGKILL');
      log(`client SIGKILLed at ${mib(total)} MiB toward storage (${pct(total, size)})`);
    }
  };
  storageProxy = await startTcpProxy(options.storage.port, { onBytesToTarget: onBytes });
  apiProxy = await startTcpProxy(Number(api.port));
  try {
    const viaProxy = new URL(options.graphqlUrl);
    viaProxy.hostname = '127.0.0.1';
    viaProxy.port = String(apiProxy.port);
    const env: Record<string, string> = {
      URL: viaProxy.toString(),
      TOKEN: options.token,
      FILE_PATH: options.path,
      STORAGE_ROUTE: `${options.storage.host}:${options.storage.port}=127.0.0.1:${storageProxy.port}`,
      CONCURRENCY: String(options.concurrency ?? 4),
      NAME: options.name ?? 'restarted',
      ...(options.idleMs ? { IDLE_MS: String(options.idleMs) } : {}),
    };
    const started = spawnChild(env, log, 'client 1');
    child = started.child;
    let stalled = false;
    const deadlineMs = options.firstRunDeadlineMs ?? 1_800_000;
    const deadline = setTimeout(() => {
      stalled = true;
      started.child.kill('SIGKILL');
    }, deadlineMs);
    const first = await started.done.finally(() => clearTimeout(deadline));
    if (stalled) throw new SequenceError(`the first client stalled: not at the kill after ${deadlineMs} ms`, first);
    const bytesFirst = storageProxy.bytesToTarget();
    if (first.signal !== 'SIGKILL') {
      const why = first.code === 0 ? 'finished before the kill' : `exited with ${first.code}`;
      throw new SequenceError(`the first client ${why}: ${first.stderr.slice(-2000)}`, first);
    }
    const saved = JSON.parse(await readFile(stateFileBeside(options.path), 'utf8')) as Record<string, ResumableState>;
    const sessionId = Object.values(saved)[0]?.sessionId;
    if (!sessionId) throw new Error('no session id in the state file after the kill');
    const client = createLoraClient({ url: options.graphqlUrl, token: options.token });
    const answer = (await client.request(LoraUploadSessionDocument, { id: sessionId })).loraUploadSession;
    await client.close();
    if (answer.__typename !== 'LoraUploadSession') throw new Error(`loraUploadSession after the kill: ${JSON.stringify(answer)}`);
    const heldAtRestart = answer.stagedBlockIds ?? [];
    log(`after the kill: session ${sessionId} ${answer.state}, storage holds ${heldAtRestart.length} of ${answer.blockCount} blocks`);

    await options.beforeRestart?.();
    const restartAt = performance.now();
    const second = spawnChild(env, log, 'client 2');
    child = second.child;
    const restarted: RestartSequenceResult['restarted'] = await second.done;
    const lastLine = restarted.stdout.trim().split('\n').pop();
    if (restarted.code === 0 && lastLine) restarted.result = JSON.parse(lastLine);
    const bytesToStorage = storageProxy.bytesToTarget();
    const stateFileLeft = await stat(stateFileBeside(options.path)).then(
      () => true,
      () => false,
    );
    return {
      size,
      bytesToStorage,
      bytesFirst,
      bytesRestarted: bytesToStorage - bytesFirst,
      refusedDuringOutage: refusedAtBack,
      acceptedAfterOutage: storageProxy.connections().accepted - acceptedAtBack,
      phases: {
        beforeCut: marks.cut - t0,
        outage: marks.back - marks.cut,
        backToFirstByte: marks.firstByteBack - marks.back,
        backToKill: marks.kill - marks.back,
        restarted: performance.now() - restartAt,
      },
      first,
      sessionId,
      blockCount: answer.blockCount,
      heldAtRestart,
      restarted,
      stateFileLeft,
    };
  } finally {
    child?.kill('SIGKILL');
    await storageProxy.close();
    await apiProxy.close();
  }
}

/** The first client did not end as the sequence needs (it finished, or failed, before the kill). */
export class SequenceError extends Error {
  constructor(
    message: string,
    readonly run: ChildRun,
  ) {
    super(message);
  }
}

function spawnChild(
  env: Record<string, string>,
  log: (line: string) => void,
  label: string,
): { child: ChildProcess; done: Promise<ChildRun> } {
  const t = performance.now();
  const child = spawn(process.execPath, ['--import', 'tsx', CHILD], {
    cwd: ROOT, // `--import tsx` is resolved from here
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (d) => {
    stdout += d;
  });
  child.stderr?.on('data', (d) => {
    stderr += d;
    for (const line of String(d).trimEnd().split('\n')) log(`[${label}] ${line}`);
  });
  const done = once(child, 'close').then(([code, signal]) => ({
    code: code as number | null,
    signal: signal as NodeJS.Signals | null,
    stdout,
    stderr,
    ms: performance.now() - t,
  }));
  return { child, done };
}

const mib = (bytes: number) => (bytes / 1024 / 1024).toFixed(1);
const pct = (part: number, whole: number) => `${((100 * part) / whole).toFixed(1)} %`;
