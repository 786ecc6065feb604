/**
 * Node parts of resumable uploads (imported lazily by the client): blocks read from a file on disk
 * at their offsets, and the session id kept in a small JSON file beside it
 * (`.<name>.lora-upload.json`, written to a temp file and renamed), so a new process resumes.
 */
import { open, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import { basename, dirname, join } from 'node:path';
import { LoraSdkError } from './errors.ts';
import type { BlockPut, BlockSource, ResumableState, ResumableStore } from './resumable-upload.ts';

export async function fileBlockSource(path: string, fileName?: string): Promise<BlockSource> {
  let info: Awaited<ReturnType<typeof stat>>;
  try {
    info = await stat(path);
    if (!info.isFile()) throw new Error(`${path} is not a file`);
  } catch (error) {
    throw new LoraSdkError({
      kind: 'network',
      code: 'FILE_UNREADABLE',
      message: `Cannot read ${path}: ${(error as Error).message}`,
      retryable: false,
    });
  }
  const handle = await open(path, 'r');
  const name = fileName ?? basename(path);
  return {
    name,
    size: info.size,
    key: `${info.size}:${Math.trunc(info.mtimeMs)}:${name}`,
    async read(start, end) {
      const buffer = Buffer.allocUnsafe(end - start);
      let filled = 0;
      while (filled < buffer.length) {
        const { bytesRead } = await handle.read(buffer, filled, buffer.length - filled, start + filled);
        if (bytesRead === 0)
          throw new LoraSdkError({
            kind: 'network',
            code: 'FILE_CHANGED',
            message: `${path} got shorter during the upload`,
            retryable: false,
          });
        filled += bytesRead;
      }
      return buffer;
    },
    close: () => handle.close(),
  };
}

/** The state file beside `path`. */
export function stateFileBeside(path: string): string {
  return join(dirname(path), `.${basename(path)}.lora-upload.json`);
}

/** A ResumableStore of one JSON file (keys of other files are kept in the same file). */
export function jsonFileStore(file: string): ResumableStore {
  async function load(): Promise<Record<string, ResumableState>> {
    try {
      return JSON.parse(await readFile(file, 'utf8')) as Record<string, ResumableState>;
    } catch {
      return {};
    }
  }
  async function save(all: Record<string, ResumableState>): Promise<void> {
    if (Object.keys(all).length === 0) {
      await rm(file, { force: true });
      return;
    }
    const temp = `${file}.${process.pid}.tmp`;
    await writeFile(temp, JSON.stringify(all), { mode: 0o600 });
    await rename(temp, file);
  }
  return {
    get: async (key) => (await load())[key],
    set: async (key, state) => save({ ...(await load()), [key]: state }),
    delete: async (key) => {
      const all = await load();
      delete all[key];
      await save(all);
    },
  };
}

/**
 * Put Block over node:http(s) with keep-alive sockets, one pool per run (`close` ends it): Node's
 * `fetch` (undici) spends about four times the CPU on an 8 MiB body, CPU that storage and the
 * caller's machine need (measured for issue 17's bench:upload). A request whose socket makes no
 * progress for `idleTimeoutMs` (connecting, sending, waiting for or reading the answer: a
 * half-open connection) is destroyed with a retryable `TIMEOUT`, so the run's retry sends it again.
 */
export function httpBlockPut(options: { idleTimeoutMs?: number } = {}): { put: BlockPut; close(): void } {
  const idleTimeoutMs = options.idleTimeoutMs ?? 120_000;
  const agents = { http: new http.Agent({ keepAlive: true }), https: new https.Agent({ keepAlive: true }) };
  const put: BlockPut = (url, body, signal) =>
    new Promise((resolve, reject) => {
      const target = new URL(url);
      const secure = target.protocol === 'https:';
      const request = (secure ? https : http).request(
        target,
        {
          method: 'PUT',
          agent: secure ? agents.https : agents.http,
          headers: { 'content-type': 'application/octet-stream', 'content-length': body.byteLength },
          timeout: idleTimeoutMs,
          ...(signal ? { signal } : {}),
        },
        (response) => {
          response.resume(); // storage's answer body (an error document) is not needed
          response.on('end', () => resolve(response.statusCode ?? 0));
          response.on('error', reject);
        },
      );
      request.on('timeout', () =>
        request.destroy(LoraSdkError.network('TIMEOUT', `Put Block made no progress for ${idleTimeoutMs} ms`, { retryable: true })),
      );
      request.on('error', reject);
      request.end(body);
    });
  return {
    put,
    close() {
      agents.http.destroy();
      agents.https.destroy();
    },
  };
}
