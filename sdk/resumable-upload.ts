/**
 * Resumable uploads straight to Blob Storage (docs/API.md "Resumable uploads"), for Node and
 * browsers alike: the platform parts (reading blocks of a file, keeping the session id across
 * restarts) come in as a `BlockSource` and a `ResumableStore` (node-resumable.ts,
 * browser-resumable.ts). The run: find a saved session for this file (else begin one), ask the
 * API which blocks storage already holds, stage the others with Put Block through the session's
 * write-only SAS (`concurrency` at once, each retried with backoff; an expired SAS is renewed),
 * then complete. The saved state is removed when the session ends (completed, refused, expired).
 */
import { delay } from './abortable-delay.ts';
import { LoraSdkError, networkError } from './errors.ts';
import type { CompleteLoraUploadMutation, UploadSessionFieldsFragment } from './gql/graphql.ts';

/** What the SDK keeps between runs, per file. */
export interface ResumableState {
  sessionId: string;
  /** The file as it was when the session began (size, modification time, name): a changed file starts over. */
  fileKey: string;
}

/** Where the state lives: a small file beside the upload (Node), IndexedDB (browsers), or yours. */
export interface ResumableStore {
  get(key: string): Promise<ResumableState | undefined>;
  set(key: string, state: ResumableState): Promise<void>;
  delete(key: string): Promise<void>;
}

/** Random access to the file being uploaded. */
export interface BlockSource {
  name: string;
  size: number;
  /** Identifies this version of the file (e.g. `${size}:${mtimeMs}:${name}`). */
  key: string;
  read(start: number, end: number): Promise<Uint8Array>;
  close?(): Promise<void>;
}

export interface ResumableApi {
  begin(input: { fileName: string; sizeBytes: number; name?: string | null; tags?: string[] | null }): Promise<UploadSessionFieldsFragment>;
  session(id: string): Promise<UploadSessionFieldsFragment | undefined>;
  renew(id: string): Promise<UploadSessionFieldsFragment>;
  complete(id: string, blockIds: string[]): Promise<CompleteLoraUploadMutation['completeLoraUpload']>;
  /** The finished upload of a session a previous run completed (it crashed before seeing the answer). */
  finished(loraId: string): Promise<CompleteLoraUploadMutation['completeLoraUpload']>;
}

export interface ResumableOptions {
  name?: string | null;
  tags?: string[] | null;
  /** (bytes storage holds for this upload, file size): counts blocks staged by earlier runs too. */
  onProgress?: (bytesSent: number, totalBytes: number) => void;
  /** Stops this run (the session stays for a later run to resume; abortLoraUpload ends it). */
  signal?: AbortSignal;
  /** Blocks in flight at once. @default 4 */
  concurrency?: number;
  /** Tries per block before the run fails (the next run resumes). @default 6 */
  blockTries?: number;
  fetch?: (input: string, init: RequestInit) => Promise<Response>;
  /** How a block is sent (Node: node-resumable.ts's `httpBlockPut`, a quarter of fetch's CPU). @default `fetch` */
  putBlock?: BlockPut;
  /** Node: how long a Put Block may make no progress (connect, send, answer) before it is given up and retried. @default 120000 */
  blockTimeoutMs?: number;
}

/** One Put Block: the body to the URL, resolving with storage's status once the answer is read. */
export type BlockPut = (url: string, body: Uint8Array, signal?: AbortSignal) => Promise<number>;

/** A BlockPut over `fetch` (browsers, and a `fetch` given to the client). */
export function fetchBlockPut(doFetch: (input: string, init: RequestInit) => Promise<Response>): BlockPut {
  return async (url, body, signal) => {
    const res = await doFetch(url, {
      method: 'PUT',
      body: body as unknown as BodyInit,
      headers: { 'content-type': 'application/octet-stream' },
      ...(signal ? { signal } : {}),
    });
    await res.arrayBuffer().catch(() => undefined);
    return res.status;
  };
}

export interface ResumableRunStats {
  /** Bytes this run sent to storage (blocks retried count again). */
  bytesSent: number;
  blocksSent: number;
  /** Blocks storage already held when this run started. */
  blocksResumed: number;
}

export async function runResumableUpload(
  api: ResumableApi,
  source: BlockSource,
  store: ResumableStore,
  options: ResumableOptions,
  stats: ResumableRunStats = { bytesSent: 0, blocksSent: 0, blocksResumed: 0 },
): Promise<CompleteLoraUploadMutation['completeLoraUpload']> {
  const putBlock = options.putBlock ?? fetchBlockPut(options.fetch ?? ((input, init) => globalThis.fetch(input, init)));
  const session = await resumeOrBegin(api, source, store, options);
  if (session.state === 'COMPLETED' && session.loraId) {
    await store.delete(source.key);
    return api.finished(session.loraId);
  }
  const held = new Set(session.stagedBlockIds ?? []);
  let url = session.uploadUrl ?? (await api.renew(session.id)).uploadUrl;
  if (!url) throw LoraSdkError.network('NO_UPLOAD_URL', 'the API gave no upload URL for the session');
  const blockBytes = session.blockBytes;
  const sizeOf = (i: number) => Math.min(blockBytes, source.size - i * blockBytes);
  let done = 0;
  session.blockIds.forEach((id, i) => {
    if (held.has(id)) {
      done += sizeOf(i);
      stats.blocksResumed++;
    }
  });
  options.onProgress?.(done, source.size);
  const missing = session.blockIds.map((id, i) => ({ id, i })).filter((b) => !held.has(b.id));
  let renewing: Promise<string> | undefined;
  const renew = async (stale: string): Promise<string> => {
    if (url !== stale) return url as string;
    renewing ??= api.renew(session.id).then((s) => {
      url = s.uploadUrl ?? url;
      renewing = undefined;
      return url as string;
    });
    return renewing;
  };
  const tries = options.blockTries ?? 6;
  async function stage(block: { id: string; i: number }): Promise<void> {
    const start = block.i * blockBytes;
    const body = await source.read(start, start + sizeOf(block.i));
    for (let attempt = 0; ; attempt++) {
      const used = url as string;
      try {
        const status = await putBlock(`${used}&comp=block&blockid=${encodeURIComponent(block.id)}`, body, options.signal);
        if (status === 201) break;
        if (status === 403) await renew(used); // an expired SAS (renewed once for everyone in flight)
        const retryable = status === 403 || status >= 500 || status === 408 || status === 429;
        throw LoraSdkError.network(`PUT_BLOCK_${status}`, `storage answered ${status} for block ${block.i}`, { status, retryable });
      } catch (error) {
        const sdkError = networkError(error);
        if (options.signal?.aborted || attempt + 1 >= tries || !sdkError.retryable) throw sdkError;
        await delay(Math.round(Math.random() * Math.min(8_000, 250 * 2 ** attempt)), options.signal);
      }
    }
    stats.bytesSent += body.length;
    stats.blocksSent++;
    done += body.length;
    options.onProgress?.(done, source.size);
  }
  await pool(missing, options.concurrency ?? 4, stage);
  let result = await api.complete(session.id, session.blockIds);
  // A block staged at the instant the server committed the blocks it validates ahead is dropped by
  // storage; completion names it (a ValidationError on blockIds, the session still OPEN): stage what
  // storage lacks and complete again.
  for (let round = 0; round < 3 && isBlockListProblem(result); round++) {
    const now = await api.session(session.id);
    if (now?.state !== 'OPEN') break;
    const stagedNow = new Set(now.stagedBlockIds ?? []);
    const lacking = session.blockIds.map((id, i) => ({ id, i })).filter((b) => !stagedNow.has(b.id));
    if (lacking.length === 0) break;
    for (const b of lacking) done -= sizeOf(b.i); // counted when first sent
    await pool(lacking, options.concurrency ?? 4, stage);
    result = await api.complete(session.id, session.blockIds);
  }
  // Ended either way unless the block list was refused (the session is still OPEN: a next run re-checks it).
  if (!isBlockListProblem(result)) await store.delete(source.key);
  return result;
}

function isBlockListProblem(result: CompleteLoraUploadMutation['completeLoraUpload']): boolean {
  return result.__typename === 'ValidationError' && result.issues.some((i) => i.path === 'blockIds');
}

async function resumeOrBegin(
  api: ResumableApi,
  source: BlockSource,
  store: ResumableStore,
  options: ResumableOptions,
): Promise<UploadSessionFieldsFragment> {
  const saved = await store.get(source.key);
  if (saved && saved.fileKey === source.key) {
    const session = await api.session(saved.sessionId);
    const live = session && session.sizeBytes === source.size && (session.state === 'OPEN' || session.state === 'COMPLETED');
    if (live && session.state === 'OPEN' && new Date(session.expiresAt).getTime() > Date.now() + 60_000) {
      const renewed = await api.renew(session.id);
      return { ...renewed, stagedBlockIds: session.stagedBlockIds, stagedBytes: session.stagedBytes };
    }
    if (live && session.state === 'COMPLETED') return session;
    await store.delete(source.key);
  }
  const session = await api.begin({
    fileName: source.name,
    sizeBytes: source.size,
    ...(options.name !== undefined ? { name: options.name } : {}),
    ...(options.tags !== undefined ? { tags: options.tags } : {}),
  });
  await store.set(source.key, { sessionId: session.id, fileKey: source.key });
  return { ...session, stagedBlockIds: [], stagedBytes: 0 };
}

/** Runs `work` over `items`, `limit` at once; the first failure stops new work and is thrown once the rest settle. */
async function pool<T>(items: T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failure: unknown;
  const worker = async () => {
    while (next < items.length && failure === undefined) {
      const item = items[next++] as T;
      try {
        await work(item);
      } catch (error) {
        failure ??= error;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  if (failure !== undefined) throw failure;
}
