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
import type { CompleteLoraUploadMutation, LoraUploadSource, UploadSessionFieldsFragment } from './gql/graphql.ts';

/** What the SDK keeps between runs, per file. */
export interface ResumableState {
  sessionId: string;
  /** The file as it was when the session began (owner, size, modification time, name, content samples): a changed file starts over. */
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
  /** Identifies this version of the file (e.g. `${size}:${mtimeMs}:${name}`); the run adds the owner and a content fingerprint (resumeKey). */
  key: string;
  read(start: number, end: number): Promise<Uint8Array>;
  close?(): Promise<void>;
}

export interface ResumableApi {
  begin(input: {
    fileName: string;
    sizeBytes: number;
    name?: string | null;
    tags?: string[] | null;
    uploadSource?: LoraUploadSource | null;
  }): Promise<UploadSessionFieldsFragment>;
  session(id: string): Promise<UploadSessionFieldsFragment | undefined>;
  renew(id: string): Promise<UploadSessionFieldsFragment>;
  complete(id: string, blockIds: string[]): Promise<CompleteLoraUploadMutation['completeLoraUpload']>;
  /** The finished upload of a session a previous run completed (it crashed before seeing the answer). */
  finished(loraId: string): Promise<CompleteLoraUploadMutation['completeLoraUpload']>;
}

export interface ResumableOptions {
  name?: string | null;
  tags?: string[] | null;
  /**
   * Where the upload comes from (`EMPROPS_STUDIO` from Studio), recorded as
   * `flat_file.gen_out_data.upload_source`; fixed when the session begins (a resumed run keeps the
   * session's). @default none: recorded as `resumable` (docs/flat-file.md)
   */
  uploadSource?: LoraUploadSource | null;
  /** (bytes storage holds for this upload, file size): counts blocks staged by earlier runs too. */
  onProgress?: (bytesSent: number, totalBytes: number) => void;
  /** Stops this run (the session stays for a later run to resume; abortLoraUpload ends it). */
  signal?: AbortSignal;
  /** Blocks in flight at once. @default 4 */
  concurrency?: number;
  /**
   * Who uploads (a user id: the API token's subject), part of the key the state is kept under, so
   * users sharing a browser or a folder never resume or overwrite each other's sessions. The SDK
   * client passes its token's subject. @default ''
   */
  owner?: string;
  /** Tries per block before the run fails (the next run resumes). @default 6 */
  blockTries?: number;
  /**
   * A block whose tries failed without an answer (connection refused, reset, timed out: the network
   * went away) keeps retrying, backing off, until this long after its first failure — a link that
   * drops for less does not end the run. Storage's error answers count `blockTries` only. @default 60000
   */
  networkRetryMs?: number;
  fetch?: (input: string, init: RequestInit) => Promise<Response>;
  /** How a block is sent (Node: node-resumable.ts's `httpBlockPut`, a quarter of fetch's CPU). @default `fetch` */
  putBlock?: BlockPut;
  /**
   * How long completion may wait for a busy server (TOO_MANY_UPLOADS, RATE_LIMITED: tried again)
   * or for a completion an earlier run started; past it the session is kept for a later run. @default 600000
   */
  completeWaitMs?: number;
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
  const key = await resumeKey(source, options.owner);
  const session = await resumeOrBegin(api, source, store, key, options);
  if (session.state === 'COMPLETED' && session.loraId) {
    await store.delete(key);
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
  const networkRetryMs = options.networkRetryMs ?? 60_000;
  async function stage(block: { id: string; i: number }): Promise<void> {
    const start = block.i * blockBytes;
    const body = await source.read(start, start + sizeOf(block.i));
    let firstFailure: number | undefined;
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
        firstFailure ??= Date.now();
        // no answer at all (status unknown): the network is away; wait for it up to networkRetryMs
        const waiting = sdkError.status === undefined && Date.now() - firstFailure < networkRetryMs;
        if (options.signal?.aborted || (attempt + 1 >= tries && !waiting) || !sdkError.retryable) throw sdkError;
        await delay(Math.round(Math.random() * Math.min(8_000, 250 * 2 ** attempt)), options.signal);
      }
    }
    stats.bytesSent += body.length;
    stats.blocksSent++;
    done += body.length;
    options.onProgress?.(done, source.size);
  }
  await pool(missing, options.concurrency ?? 4, stage);
  // A block staged at the instant the server committed the blocks it validates ahead is dropped by
  // storage; completion names it (a ValidationError on blockIds, the session still OPEN): stage what
  // storage lacks and complete again.
  const restage = async (): Promise<boolean> => {
    const now = await api.session(session.id);
    if (now?.state !== 'OPEN') return false;
    const stagedNow = new Set(now.stagedBlockIds ?? []);
    const lacking = session.blockIds.map((id, i) => ({ id, i })).filter((b) => !stagedNow.has(b.id));
    if (lacking.length === 0) return false;
    for (const b of lacking) done -= sizeOf(b.i); // counted when first sent
    await pool(lacking, options.concurrency ?? 4, stage);
    return true;
  };
  return completeSession(api, session, () => store.delete(key), restage, options);
}

type CompleteResult = CompleteLoraUploadMutation['completeLoraUpload'];

/**
 * completeLoraUpload until the session has ended, and the saved state forgotten only then. A busy
 * server (TOO_MANY_UPLOADS, RATE_LIMITED: the session stays OPEN) is asked again after a wait
 * (its retryAfterSeconds, else backoff); a lost answer (timeout, cut, 5xx) is looked up on the
 * session: still COMPLETING is waited for, COMPLETED gives its LoRA, OPEN is completed again.
 * All within `completeWaitMs`; past it the last answer is returned (or COMPLETION_PENDING thrown)
 * with the state kept, so a later run carries on without sending a block again.
 */
async function completeSession(
  api: ResumableApi,
  session: UploadSessionFieldsFragment,
  forget: () => Promise<void>,
  restage: () => Promise<boolean>,
  options: ResumableOptions,
): Promise<CompleteResult> {
  const deadline = Date.now() + (options.completeWaitMs ?? 600_000);
  let restaged = 0;
  for (let attempt = 0; ; attempt++) {
    let answer: CompleteResult | undefined;
    let lost: LoraSdkError | undefined;
    try {
      answer = await api.complete(session.id, session.blockIds);
    } catch (error) {
      lost = networkError(error);
      if (options.signal?.aborted || !lost.retryable) throw lost;
    }
    if (answer && isBlockListProblem(answer) && restaged < 3) {
      restaged++;
      if (await restage()) continue;
    }
    if (answer?.__typename === 'UploadLoraSuccess') {
      await forget();
      return answer;
    }
    const busy = answer?.__typename === 'TooManyUploadsError' || answer?.__typename === 'RateLimitedError';
    if (!busy) {
      // refused, interrupted or unanswered: where does the session stand?
      const now = await waitWhileCompleting(api, session.id, deadline, options.signal);
      if (now?.state === 'COMPLETED' && now.loraId) {
        await forget();
        return api.finished(now.loraId);
      }
      if (now?.state !== 'OPEN' || new Date(now.expiresAt).getTime() <= Date.now()) {
        await forget(); // ended (FAILED, ABORTED, EXPIRED) or gone: a next run starts over
        if (answer) return answer;
        throw LoraSdkError.network('UPLOAD_SESSION_ENDED', `the upload session ended ${now?.state ?? 'NOT_FOUND'} while completing`, {
          cause: lost,
        });
      }
      if (answer) return answer; // refused and still OPEN (a block list storage does not hold): kept for a next run
    }
    const retryAfter = (answer as { retryAfterSeconds?: number } | undefined)?.retryAfterSeconds ?? lost?.retryAfterSeconds;
    const wait =
      retryAfter !== undefined ? retryAfter * 1000 : Math.round(Math.min(30_000, 1000 * 2 ** attempt) * (0.5 + Math.random() / 2));
    if (Date.now() + wait > deadline) {
      if (answer) return answer; // busy for too long: the session and its state stay for a next run
      throw lost as LoraSdkError;
    }
    await delay(wait, options.signal);
  }
}

/** The session, once it is no longer COMPLETING (polled with backoff); COMPLETION_PENDING past `deadline`. */
async function waitWhileCompleting(
  api: ResumableApi,
  id: string,
  deadline: number,
  signal?: AbortSignal,
): Promise<UploadSessionFieldsFragment | undefined> {
  for (let n = 0; ; n++) {
    const now = await api.session(id);
    if (now?.state !== 'COMPLETING') return now;
    if (Date.now() >= deadline) {
      throw LoraSdkError.network(
        'COMPLETION_PENDING',
        'the upload session is still being completed: run the upload again later to get its LoRA',
      );
    }
    await delay(Math.min(5_000, 500 * 2 ** n, Math.max(0, deadline - Date.now())), signal);
  }
}

function isBlockListProblem(result: CompleteResult): boolean {
  return result.__typename === 'ValidationError' && result.issues.some((i) => i.path === 'blockIds');
}

/**
 * The key a run's state is kept under: who uploads, the file's size, modification time and name,
 * and a sha256 of samples of its content, so two files alike in name, size and time (the same
 * `pytorch_lora_weights.safetensors` of one architecture) never resume each other's session.
 */
export async function resumeKey(source: BlockSource, owner = ''): Promise<string> {
  return `${owner}:${source.key}:${await contentFingerprint(source)}`;
}

const EDGE_BYTES = 1024 * 1024;
const SAMPLES = 14;
const SAMPLE_BYTES = 64 * 1024;

/** sha256 (hex) of the file's first and last MiB and 14 evenly spaced 64 KiB samples: about 3 MiB read, whatever the size. */
async function contentFingerprint(source: BlockSource): Promise<string> {
  const size = source.size;
  const ranges: [number, number][] = [
    [0, Math.min(EDGE_BYTES, size)],
    [Math.max(0, size - EDGE_BYTES), size],
  ];
  for (let i = 1; i <= SAMPLES; i++) {
    const at = Math.floor((size * i) / (SAMPLES + 1));
    ranges.push([at, Math.min(size, at + SAMPLE_BYTES)]);
  }
  const parts = await Promise.all(ranges.map(([start, end]) => source.read(start, end)));
  const all = new Uint8Array(parts.reduce((sum, p) => sum + p.length, 0));
  let at = 0;
  for (const part of parts) {
    all.set(part, at);
    at += part.length;
  }
  const digest = new Uint8Array(await globalThis.crypto.subtle.digest('SHA-256', all));
  return Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('');
}

async function resumeOrBegin(
  api: ResumableApi,
  source: BlockSource,
  store: ResumableStore,
  key: string,
  options: ResumableOptions,
): Promise<UploadSessionFieldsFragment> {
  const saved = await store.get(key);
  if (saved && saved.fileKey === key) {
    const found = await api.session(saved.sessionId);
    // an earlier run's completion still going (it crashed or timed out meanwhile): its outcome decides
    const session =
      found?.state === 'COMPLETING'
        ? await waitWhileCompleting(api, found.id, Date.now() + (options.completeWaitMs ?? 600_000), options.signal)
        : found;
    // the session must be this file's: its name, size and block layout (a key is no proof)
    const live =
      session &&
      session.sizeBytes === source.size &&
      session.fileName === source.name &&
      session.blockIds.length === Math.ceil(source.size / session.blockBytes) &&
      (session.state === 'OPEN' || session.state === 'COMPLETED');
    if (live && session.state === 'OPEN' && new Date(session.expiresAt).getTime() > Date.now() + 60_000) {
      const renewed = await api.renew(session.id);
      return { ...renewed, stagedBlockIds: session.stagedBlockIds, stagedBytes: session.stagedBytes };
    }
    if (live && session.state === 'COMPLETED') return session;
    await store.delete(key);
  }
  const session = await api.begin({
    fileName: source.name,
    sizeBytes: source.size,
    ...(options.name !== undefined ? { name: options.name } : {}),
    ...(options.tags !== undefined ? { tags: options.tags } : {}),
    ...(options.uploadSource != null ? { uploadSource: options.uploadSource } : {}),
  });
  await store.set(key, { sessionId: session.id, fileKey: key });
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
