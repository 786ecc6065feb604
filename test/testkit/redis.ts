import { type ChildProcess, spawn } from 'node:child_process';
import { accessSync, constants, readFileSync, rmSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createConnection, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';

/**
 * A real redis-server of our own, for the tests and benchmarks that need the Redis event bus: on
 * a free port on 127.0.0.1, no persistence, in a temp dir; stopped by `stop()`, on process exit,
 * and — through a small sh watchdog around it — when this process dies without running exit
 * hooks (SIGKILL, a worker torn down). Never touches a system redis on 6379.
 */

export interface RedisHandle {
  url: string;
  port: number;
  pid: number;
  stop(): Promise<void>;
}

export const REDIS_NOT_INSTALLED = 'redis-server not installed (apt-get install -y redis-server)';

/** The redis-server binary on PATH, in /usr/bin or in /usr/sbin; undefined when there is none. */
export function findRedisServer(): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(delimiter).filter(Boolean), '/usr/bin', '/usr/sbin'];
  for (const dir of dirs) {
    const candidate = join(dir, 'redis-server');
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {}
  }
  return undefined;
}

/**
 * Starts redis-server, or says why it cannot (`unavailable`) when it is not installed. An
 * installed redis-server that fails to start is an error (thrown), not a reason to skip.
 */
export async function startRedis(): Promise<RedisHandle | { unavailable: string }> {
  const binary = findRedisServer();
  if (!binary) return { unavailable: REDIS_NOT_INSTALLED };
  let lastError: unknown;
  // The free port is found by binding port 0 and closing it: another process may take it before
  // redis-server binds it, so a failed bind is retried on another port.
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      return await startOn(binary, await freePort());
    } catch (error) {
      lastError = error;
    }
  }
  throw lastError;
}

// The watchdog: runs redis-server in the background, prints its pid, and stops it (SIGTERM) when
// told to (TERM/INT/HUP) or when the Node process that started it is gone (then it also removes
// the temp dir, which that process can no longer do).
const WATCHDOG = `
"$0" "$@" &
r=$!
echo "$r"
s=
trap 'kill -TERM "$r" 2>/dev/null; [ -n "$s" ] && kill "$s" 2>/dev/null; wait "$r"; exit 0' TERM INT HUP
while kill -0 "$r" 2>/dev/null; do
  if ! kill -0 "$WATCH_PID" 2>/dev/null; then kill -TERM "$r" 2>/dev/null; wait "$r"; rm -rf "$WATCH_DIR"; exit 0; fi
  sleep 1 & s=$!
  wait "$s"
  s=
done
wait "$r"
`;

async function startOn(binary: string, port: number): Promise<RedisHandle> {
  const dir = await mkdtemp(join(tmpdir(), 'lora-vault-redis-'));
  const logFile = join(dir, 'redis.log');
  const args = [
    '--port',
    String(port),
    '--bind',
    '127.0.0.1',
    '--save',
    '',
    '--appendonly',
    'no',
    '--protected-mode',
    'no',
    '--dir',
    dir,
    '--logfile',
    logFile,
    '--daemonize',
    'no',
  ];
  const child = spawn('sh', ['-c', WATCHDOG, binary, ...args], {
    cwd: dir,
    env: { ...process.env, WATCH_PID: String(process.pid), WATCH_DIR: dir },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let redisPid: number | undefined;
  const onExit = () => {
    // synchronous only: kill both (the watchdog would also stop redis, but may be mid-sleep)
    if (child.exitCode === null && child.signalCode === null) {
      if (redisPid) tryKill(redisPid, 'SIGTERM');
      tryKill(child.pid, 'SIGTERM');
    } // else the watchdog has exited, and it only exits once redis has
    rmSync(dir, { recursive: true, force: true });
  };
  process.on('exit', onExit);

  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  let stopped: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopped ??= (async () => {
      if (child.exitCode === null && child.signalCode === null) {
        tryKill(child.pid, 'SIGTERM');
        const timer = setTimeout(() => {
          if (redisPid) tryKill(redisPid, 'SIGKILL');
          tryKill(child.pid, 'SIGKILL');
        }, 5_000);
        await exited;
        clearTimeout(timer);
      }
      process.off('exit', onExit);
      await rm(dir, { recursive: true, force: true });
    })();
    return stopped;
  };

  try {
    redisPid = await firstLine(child, exited);
    const deadline = Date.now() + 10_000;
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null || !alive(redisPid)) {
        throw new Error(`redis-server exited on start (port ${port}): ${tail(logFile)}`);
      }
      if (await ping(port)) break;
      if (Date.now() > deadline) throw new Error(`redis-server did not answer PING within 10 s (port ${port}): ${tail(logFile)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  } catch (error) {
    await stop();
    throw error;
  }
  return { url: `redis://127.0.0.1:${port}`, port, pid: redisPid, stop };
}

function firstLine(child: ChildProcess, exited: Promise<number | null>): Promise<number> {
  return new Promise((resolve, reject) => {
    let buffered = '';
    const onData = (chunk: Buffer) => {
      buffered += chunk.toString();
      const newline = buffered.indexOf('\n');
      if (newline < 0) return;
      child.stdout?.off('data', onData);
      const pid = Number(buffered.slice(0, newline).trim());
      if (Number.isInteger(pid) && pid > 0) resolve(pid);
      else reject(new Error(`redis watchdog printed no pid: ${JSON.stringify(buffered)}`));
    };
    child.stdout?.on('data', onData);
    child.once('error', reject);
    void exited.then((code) => reject(new Error(`redis watchdog exited (${code}) before starting redis-server`)));
  });
}

/** One PING over a fresh connection: true on +PONG. */
function ping(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host: '127.0.0.1', port });
    let answer = '';
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1_000, () => done(false));
    socket.on('error', () => done(false));
    socket.on('connect', () => socket.write('PING\r\n'));
    socket.on('data', (chunk) => {
      answer += chunk.toString();
      if (answer.includes('\r\n')) done(answer.startsWith('+PONG'));
    });
  });
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => (port ? resolve(port) : reject(new Error('no free port'))));
    });
  });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function tryKill(pid: number | undefined, signal: NodeJS.Signals): void {
  if (!pid) return;
  try {
    process.kill(pid, signal);
  } catch {}
}

function tail(file: string): string {
  try {
    return readFileSync(file, 'utf8').trim().split('\n').slice(-5).join(' | ') || '(empty log)';
  } catch {
    return '(no log)';
  }
}
