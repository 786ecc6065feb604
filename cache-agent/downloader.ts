import { randomUUID } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import { type FileHandle, open, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Agent, type Dispatcher, request } from 'undici';
import { AgentError } from './errors.ts';
import { PrefixHasher } from './prefix-hash.ts';
import { inAgentSpan } from './telemetry.ts';

/**
 * Downloads one blob from a read-only SAS URL into a unique temp file: parallel HTTP range
 * requests written at their offsets, sha256 computed while the download runs, size and sha256
 * verified, the file fsynced. The caller renames the file into place (write, fsync, rename).
 *
 * Faults and what they cost:
 * - a part cut mid-stream (reset, premature end, stall) resumes from the byte it reached, with backoff;
 * - 5xx/408/429/network errors: exponential backoff with full jitter (Retry-After honoured, capped);
 * - 403 (SAS expired or refused): a fresh URL from `source.refresh()`, then continue where it was;
 * - a changed ETag, a 200 answer to a range request, a size or sha256 mismatch: the whole file
 *   again from 0 in a fresh temp file (after a 200, as one sequential stream);
 * - 404: `LORA_NOT_FOUND` at once; ENOSPC/EDQUOT/EFBIG: `DISK_FULL` at once.
 * On any failure or abort the temp file is removed.
 */

export interface DownloadTarget {
  url: string;
  /** Strong ETag of the blob the URL points to, quoted or not; `null` when unknown. */
  etag: string | null;
  /** When the URL stops working (epoch ms); `null` when unknown. */
  expiresAt: number | null;
}

export interface DownloadSource {
  /** The URL to use now (the caller fetches one from the API). Called once per download. */
  current(): Promise<DownloadTarget>;
  /**
   * Storage refused the URL (403: SAS expired/invalid) or it expires within ~5 s: get a fresh one
   * from the API. An `AgentError` thrown here fails the download with that error.
   */
  refresh(): Promise<DownloadTarget>;
}

export interface DownloadOptions {
  source: DownloadSource;
  /** Expected size in bytes (from the API). */
  sizeBytes: number;
  /** Expected sha256, hex, either case (from the API); null when the API has none (the shared library): size only is verified. */
  sha256: string | null;
  /** Existing directory for the temp file, on the same filesystem as the final folder. */
  tempDir: string;
  /** Bytes per range request. @default 16 MiB */
  partBytes?: number;
  /** Range requests in flight at once. @default 4 */
  concurrency?: number;
  /**
   * Further attempts per failure kind: per part for transient errors, per download for restarts.
   * (403s are bounded apart: 3 fresh URLs in a row without a byte arriving.) @default 5
   */
  retries?: number;
  /** Backoff base: attempt n waits random() × min(maxDelayMs, baseDelayMs × 2^(n-1)). @default 250 */
  baseDelayMs?: number;
  /** Backoff cap, also for Retry-After. @default 8000 */
  maxDelayMs?: number;
  /**
   * A request that receives nothing (headers or body) this long is aborted and resumed (undici's
   * timers: ~1 s granularity; time the body waits for our own disk writes does not count). @default 30000
   */
  stallMs?: number;
  /**
   * Start writing dirty pages back (fdatasync in the background) every this many bytes, so that
   * the final fsync has little left to do. @default 64 MiB
   */
  flushBytes?: number;
  /** Aborts the download: rejects with `DOWNLOAD_FAILED` and `details.aborted`, temp file removed. */
  signal?: AbortSignal;
  /** Bytes written so far in the current attempt (drops to 0 after a restart). A throw is ignored. */
  onProgress?: (bytesDone: number, totalBytes: number) => void;
  /** Jitter source in [0, 1). @default Math.random */
  random?: () => number;
  /** HTTP client. @default a keep-alive undici Agent with `concurrency` connections, closed at the end */
  dispatcher?: Dispatcher;
}

export interface DownloadResult {
  /** The verified file, fsynced and closed, in `tempDir`; the caller renames or removes it. */
  tempPath: string;
  sizeBytes: number;
  sha256: string;
  /** Whole-file restarts (changed ETag, 200 instead of 206, size or sha256 mismatch). */
  restarts: number;
  /** Requests retried after a transient error (summed over parts). */
  retries: number;
  /** Fresh URLs fetched from `source.refresh()`. */
  urlRefreshes: number;
}

const MiB = 1024 * 1024;
const WRITE_BATCH_BYTES = MiB; // chunks gathered into one writev
const EXPIRY_MARGIN_MS = 5_000;
const MAX_REFRESHES_WITHOUT_PROGRESS = 3;
const DISK_FULL_CODES = new Set(['ENOSPC', 'EDQUOT', 'EFBIG']);

/** A part's request failed in a way a retry (from the byte reached) may fix. */
class Transient extends Error {
  constructor(
    message: string,
    readonly retryAfterMs?: number,
  ) {
    super(message);
  }
}
/** Storage answered 403: the URL needs refreshing. */
class Refused extends Error {}
/** What was downloaded so far is no good: start again from 0. */
class Restart extends Error {
  constructor(
    message: string,
    readonly sequential = false,
  ) {
    super(message);
  }
}

interface Part {
  start: number;
  end: number; // inclusive
  next: number; // first byte not written yet
}

type Settings = Required<Omit<DownloadOptions, 'signal' | 'onProgress' | 'dispatcher'>> & Pick<DownloadOptions, 'signal' | 'onProgress'>;

/**
 * Memory: per part in flight, at most ~2 MiB of body (one batch being written, one being gathered),
 * plus 1 MiB for the hash read-back. Throws `AgentError`: `DOWNLOAD_FAILED` (retries or restarts
 * exhausted, with `details.attempts` and `lastError`, and `expectedSha256`/`actualSha256` after a
 * mismatch; `details.aborted` after an abort), `DISK_FULL`, `LORA_NOT_FOUND`, `INVALID_REQUEST`
 * (bad options), or whatever `AgentError` the source threw.
 */
export async function downloadToTemp(options: DownloadOptions): Promise<DownloadResult> {
  const settings = resolve(options);
  throwIfAborted(settings.signal);
  const dispatcher = options.dispatcher ?? new Agent({ connections: settings.concurrency, keepAliveTimeout: 30_000 });
  try {
    return await new Download(settings, dispatcher).run();
  } finally {
    if (options.dispatcher === undefined) await dispatcher.destroy();
  }
}

class Download {
  private target: DownloadTarget = { url: '', etag: null, expiresAt: null };
  private targetAt = 0;
  private generation = 0;
  private refreshing: Promise<void> | null = null;
  private refreshesWithoutProgress = 0;
  private etag: string | null = null;
  private sequential = false;
  private actualSha256: string | null = null;
  private readonly counts = { restarts: 0, retries: 0, urlRefreshes: 0 };

  constructor(
    private readonly s: Settings,
    readonly dispatcher: Dispatcher,
  ) {}

  async run(): Promise<DownloadResult> {
    this.setTarget(await callSource(() => this.s.source.current()));
    this.etag = this.target.etag;
    for (;;) {
      const attempt = new Attempt(this, this.s);
      let reason: string;
      try {
        const sha256 = await attempt.run(this.parts());
        if (this.s.sha256 === null || sha256 === this.s.sha256)
          return { tempPath: attempt.tempPath, sizeBytes: this.s.sizeBytes, sha256, ...this.counts };
        this.actualSha256 = sha256;
        reason = `sha256 mismatch: expected ${this.s.sha256}, got ${sha256}`;
      } catch (error) {
        await attempt.discard();
        if (this.s.signal?.aborted) throw abortError(this.s.signal);
        if (!(error instanceof Restart)) throw asAgentError(error);
        reason = error.message;
        this.sequential ||= error.sequential;
      }
      await attempt.discard();
      if (this.counts.restarts >= this.s.retries) throw this.exhausted(reason);
      this.counts.restarts++;
      this.etag = null; // the next attempt's first answer decides
      await pause(backoffMs(this.counts.restarts, this.s), this.s.signal).catch(() => {
        throw abortError(this.s.signal as AbortSignal);
      });
    }
  }

  private exhausted(reason: string): AgentError {
    const attempts = this.counts.restarts + 1;
    const details: Record<string, unknown> = { attempts, lastError: reason, expectedSize: this.s.sizeBytes };
    if (this.actualSha256 !== null) Object.assign(details, { expectedSha256: this.s.sha256, actualSha256: this.actualSha256 });
    return new AgentError('DOWNLOAD_FAILED', `download failed after ${attempts} attempts: ${reason}`, { retryable: true, details });
  }

  private parts(): Part[] {
    const { sizeBytes, partBytes } = this.s;
    const step = this.sequential ? Math.max(sizeBytes, 1) : partBytes;
    const parts: Part[] = [];
    for (let start = 0; start < sizeBytes; start += step) parts.push({ start, end: Math.min(sizeBytes, start + step) - 1, next: start });
    return parts;
  }

  /** The target to use for the next request, refreshed first when it expires within 5 s. */
  async usableTarget(signal: AbortSignal): Promise<{ target: DownloadTarget; generation: number }> {
    const { expiresAt } = this.target;
    const expiring = expiresAt !== null && expiresAt - Date.now() < EXPIRY_MARGIN_MS;
    const justRefreshed = this.generation > 1 && Date.now() - this.targetAt < 1_000; // the API has nothing longer
    if (expiring && !justRefreshed) await this.refresh(this.generation, signal);
    return { target: this.target, generation: this.generation };
  }

  /** One refresh for all parts that saw a 403 on the same URL; bounded while no byte arrives. */
  async refresh(generation: number, signal: AbortSignal): Promise<void> {
    if (generation !== this.generation) return; // another part refreshed already
    this.refreshing ??= (async () => {
      if (this.refreshesWithoutProgress >= MAX_REFRESHES_WITHOUT_PROGRESS) {
        throw new AgentError('DOWNLOAD_FAILED', `storage refused ${this.refreshesWithoutProgress} fresh URLs in a row`, {
          retryable: true,
          details: { status: 403, urlRefreshes: this.counts.urlRefreshes },
        });
      }
      if (this.refreshesWithoutProgress > 0) await pause(backoffMs(this.refreshesWithoutProgress, this.s), signal);
      this.refreshesWithoutProgress++;
      this.counts.urlRefreshes++;
      const fresh = await callSource(() => this.s.source.refresh());
      this.setTarget(fresh);
      if (fresh.etag !== null && this.etag !== null && normalizeEtag(fresh.etag) !== normalizeEtag(this.etag)) {
        throw new Restart(`the blob changed (the API now says ETag ${fresh.etag})`);
      }
    })().finally(() => {
      this.refreshing = null;
    });
    await this.refreshing;
  }

  private setTarget(target: DownloadTarget): void {
    this.target = target;
    this.targetAt = Date.now();
    this.generation++;
  }

  progressed(): void {
    this.refreshesWithoutProgress = 0;
  }

  retried(): void {
    this.counts.retries++;
  }

  /** Checks the response's ETag against the download's; the first answer decides when unknown. */
  checkEtag(etag: string | undefined, wholeFileFromStart: boolean): void {
    if (etag === undefined) return;
    if (this.etag === null || wholeFileFromStart) this.etag = etag;
    else if (normalizeEtag(etag) !== normalizeEtag(this.etag)) throw new Restart(`the blob changed (ETag ${etag}, expected ${this.etag})`);
  }

  rangeHeaders(part: Part): Record<string, string> {
    const headers: Record<string, string> = { range: `bytes=${part.next}-${part.end}` };
    if (this.etag !== null) headers['if-range'] = `"${normalizeEtag(this.etag)}"`;
    return headers;
  }
}

/** One pass over the whole file into one fresh temp file. */
class Attempt {
  readonly tempPath: string;
  private file: FileHandle | null = null;
  private hasher: PrefixHasher | null = null;
  private readonly controller = new AbortController();
  private bytesDone = 0;
  private unflushed = 0;
  private flushing: Promise<void> | null = null;
  private flushError: unknown;
  private discarded = false;

  constructor(
    private readonly d: Download,
    private readonly s: Settings,
  ) {
    this.tempPath = join(s.tempDir, `${randomUUID()}.part`);
    // every part in flight (and a URL refresh or backoff pause) listens on this one signal: up to
    // DOWNLOAD_CONCURRENCY (≤ 32) at once is expected, not the leak Node warns about past 10
    setMaxListeners(s.concurrency + 4, this.controller.signal);
  }

  /** Downloads every part; resolves with the sha256 of the file, fsynced and closed. */
  async run(parts: Part[]): Promise<string> {
    const { signal } = this.controller;
    const stop = () => this.controller.abort(this.s.signal?.reason);
    this.s.signal?.addEventListener('abort', stop, { once: true });
    try {
      this.s.signal?.throwIfAborted();
      this.file = await open(this.tempPath, 'wx+').catch((error: unknown) => {
        throw diskError(error, 'cannot create the temp file');
      });
      this.hasher = new PrefixHasher(this.file);
      let next = 0;
      let first: unknown;
      const worker = async () => {
        try {
          for (let part = parts[next++]; part !== undefined && !signal.aborted; part = parts[next++]) await this.fetchPart(part);
        } catch (error) {
          first ??= error;
          this.controller.abort(error);
        }
      };
      await Promise.all(Array.from({ length: Math.min(this.s.concurrency, parts.length) }, worker));
      if (first !== undefined) throw first;
      throwIfAborted(this.s.signal);
      const hasher = this.hasher;
      const { sha256, bytes } = await inAgentSpan('lora_cache.download.verify', { 'lora.size': this.s.sizeBytes }, () => hasher.digest());
      if (bytes !== this.s.sizeBytes) throw new Error(`hashed ${bytes} of ${this.s.sizeBytes} bytes`);
      await this.flushing;
      await this.file.sync().catch((error: unknown) => {
        this.flushError ??= error;
      });
      if (this.flushError !== undefined) throw diskError(this.flushError, 'fsync failed');
      await this.file.close();
      this.file = null;
      return sha256;
    } finally {
      this.s.signal?.removeEventListener('abort', stop);
    }
  }

  /** Closes and removes the temp file; idempotent. */
  async discard(): Promise<void> {
    if (this.discarded) return;
    this.discarded = true;
    await this.flushing;
    await this.hasher?.idle();
    await this.file?.close().catch(() => {});
    this.file = null;
    await unlink(this.tempPath).catch(() => {});
  }

  private fetchPart(part: Part): Promise<void> {
    const attributes = { 'lora_cache.part.start': part.next, 'lora_cache.part.end': part.end };
    return inAgentSpan('lora_cache.download.part', attributes, () => this.fetchPartOnce(part));
  }

  private async fetchPartOnce(part: Part): Promise<void> {
    const { signal } = this.controller;
    let failures = 0;
    while (part.next <= part.end) {
      const { target, generation } = await this.d.usableTarget(signal);
      let response: Dispatcher.ResponseData | undefined;
      try {
        response = await request(target.url, {
          dispatcher: this.d.dispatcher,
          headers: this.d.rangeHeaders(part),
          signal,
          headersTimeout: this.s.stallMs,
          bodyTimeout: this.s.stallMs,
        });
        await this.receive(part, response);
      } catch (error) {
        response?.body.destroy();
        if (signal.aborted || error instanceof Restart || error instanceof AgentError) throw error;
        if (isInvalidUrl(error)) throw new AgentError('DOWNLOAD_FAILED', `unusable URL: ${errorMessage(error)}`, { cause: error });
        if (error instanceof Refused) {
          await this.d.refresh(generation, signal);
          continue;
        }
        failures++;
        if (failures > this.s.retries) {
          throw new AgentError('DOWNLOAD_FAILED', `bytes ${part.next}-${part.end}: ${errorMessage(error)}`, {
            retryable: true,
            cause: error,
            details: { attempts: failures, lastError: errorMessage(error), range: [part.next, part.end] },
          });
        }
        this.d.retried();
        await pause(backoffMs(failures, this.s, error instanceof Transient ? error.retryAfterMs : undefined), signal);
      }
    }
  }

  /** Validates one response and streams its body to the file at the part's offset. */
  private async receive(part: Part, response: Dispatcher.ResponseData): Promise<void> {
    const { statusCode: status, headers } = response;
    const wholeFileFromStart = part.next === 0 && part.end === this.s.sizeBytes - 1;
    if (status === 206) {
      const range = parseContentRange(header(headers, 'content-range'));
      if (range === null) throw new Transient('206 without a valid Content-Range');
      if (range.size !== this.s.sizeBytes) throw new Restart(`storage holds ${range.size} bytes, expected ${this.s.sizeBytes}`);
      if (range.start !== part.next || range.end !== part.end) throw new Transient(`got bytes ${range.start}-${range.end}`);
    } else if (status === 200) {
      if (!wholeFileFromStart) throw new Restart('storage answered a range request with the whole blob (200)', true);
      const length = header(headers, 'content-length');
      if (length !== undefined && Number(length) !== this.s.sizeBytes) {
        throw new Restart(`storage holds ${length} bytes, expected ${this.s.sizeBytes}`, true);
      }
    } else {
      const body = await readSome(response.body);
      const code = /<Code>([^<]*)<\/Code>/.exec(body)?.[1] ?? `HTTP ${status}`;
      if (status === 403) throw new Refused(`403 ${code}`);
      if (status === 404) throw new AgentError('LORA_NOT_FOUND', `the blob is not in storage (${code})`, { details: { status } });
      if (status === 416) throw new Restart(`storage cannot serve bytes ${part.next}-${part.end} (416)`);
      if (status === 408 || status === 429 || status >= 500) throw new Transient(`${status} ${code}`, retryAfterMs(headers));
      throw new AgentError('DOWNLOAD_FAILED', `storage answered ${status} ${code}`, { details: { status, code } });
    }
    this.d.checkEtag(header(headers, 'etag'), wholeFileFromStart);
    await this.stream(part, response.body);
    if (part.next <= part.end) throw new Transient(`response ended at byte ${part.next} of ${part.start}-${part.end}`);
  }

  /**
   * Gathers chunks into ~1 MiB batches and writes each with one writev while the next batch
   * arrives. Bytes that arrived before a network error are still written (the resume starts there).
   */
  private async stream(part: Part, body: AsyncIterable<Buffer>): Promise<void> {
    let batch: Buffer[] = [];
    let batchBytes = 0;
    let cursor = part.next;
    let writing: Promise<void> = Promise.resolve();
    let streamError: unknown;
    try {
      for await (const chunk of body) {
        const room = part.end + 1 - cursor;
        const take = chunk.length > room ? chunk.subarray(0, room) : chunk;
        if (take.length > 0) batch.push(take);
        batchBytes += take.length;
        cursor += take.length;
        if (batchBytes >= WRITE_BATCH_BYTES || (cursor > part.end && batchBytes > 0)) {
          await writing;
          writing = this.write(part, batch, batchBytes);
          writing.catch(() => {}); // awaited before the next write or below
          batch = [];
          batchBytes = 0;
        }
        if (chunk.length > room) throw new Transient('storage sent more bytes than requested');
      }
    } catch (error) {
      streamError = error;
    }
    await writing;
    if (batchBytes > 0 && !this.controller.signal.aborted) await this.write(part, batch, batchBytes);
    if (streamError !== undefined) throw streamError;
  }

  private async write(part: Part, chunks: Buffer[], bytes: number): Promise<void> {
    const file = this.file;
    if (file === null || this.hasher === null) throw new Error('the temp file is closed');
    const position = part.next;
    let pending = chunks;
    let done = 0;
    while (done < bytes) {
      const { bytesWritten } = await file.writev(pending, position + done).catch((error: unknown) => {
        throw diskError(error, 'write failed');
      });
      done += bytesWritten;
      if (done < bytes) pending = dropBytes(pending, bytesWritten);
    }
    part.next += bytes;
    this.hasher.written(position, chunks, bytes);
    this.d.progressed();
    this.bytesDone += bytes;
    this.unflushed += bytes;
    if (this.unflushed >= this.s.flushBytes && this.flushing === null) {
      // Linux reports a write-back error to one fsync only: keep it for the end
      this.unflushed = 0;
      this.flushing = file
        .datasync()
        .catch((error: unknown) => {
          this.flushError ??= error;
        })
        .finally(() => {
          this.flushing = null;
        });
    }
    try {
      this.s.onProgress?.(this.bytesDone, this.s.sizeBytes);
    } catch {
      // a progress display must not break the download
    }
  }
}

function resolve(o: DownloadOptions): Settings {
  const s: Settings = {
    source: o.source,
    sizeBytes: o.sizeBytes,
    sha256: o.sha256?.toLowerCase() ?? null,
    tempDir: o.tempDir,
    partBytes: o.partBytes ?? 16 * MiB,
    concurrency: o.concurrency ?? 4,
    retries: o.retries ?? 5,
    baseDelayMs: o.baseDelayMs ?? 250,
    maxDelayMs: o.maxDelayMs ?? 8_000,
    stallMs: o.stallMs ?? 30_000,
    flushBytes: o.flushBytes ?? 64 * MiB,
    random: o.random ?? Math.random,
    signal: o.signal,
    onProgress: o.onProgress,
  };
  const problems = [
    !Number.isSafeInteger(s.sizeBytes) || s.sizeBytes < 0 ? 'sizeBytes' : '',
    s.sha256 === null || /^[0-9a-f]{64}$/.test(s.sha256) ? '' : 'sha256',
    ...(['partBytes', 'concurrency', 'stallMs', 'flushBytes'] as const).map((k) => (Number.isSafeInteger(s[k]) && s[k] > 0 ? '' : k)),
    ...(['retries', 'baseDelayMs', 'maxDelayMs'] as const).map((k) => (Number.isSafeInteger(s[k]) && s[k] >= 0 ? '' : k)),
  ].filter(Boolean);
  if (problems.length > 0)
    throw new AgentError('INVALID_REQUEST', `invalid download options: ${problems.join(', ')}`, { details: { problems } });
  return s;
}

/** Full jitter: random() × min(max, base × 2^(n-1)); a server's Retry-After wins, capped too. */
function backoffMs(attempt: number, s: Settings, retryAfter?: number): number {
  if (retryAfter !== undefined) return Math.min(s.maxDelayMs, retryAfter);
  return Math.floor(s.random() * Math.min(s.maxDelayMs, s.baseDelayMs * 2 ** (attempt - 1)));
}

async function pause(ms: number, signal: AbortSignal | undefined): Promise<void> {
  if (ms > 0) await sleep(ms, undefined, { signal });
  else signal?.throwIfAborted();
}

function retryAfterMs(headers: Dispatcher.ResponseData['headers']): number | undefined {
  const value = header(headers, 'retry-after');
  if (value === undefined) return undefined;
  const ms = /^\d+$/.test(value.trim()) ? Number(value) * 1000 : Date.parse(value) - Date.now();
  return Number.isFinite(ms) ? Math.max(0, ms) : undefined;
}

function header(headers: Dispatcher.ResponseData['headers'], name: string): string | undefined {
  const value = headers[name];
  return Array.isArray(value) ? value[0] : value;
}

function parseContentRange(value: string | undefined): { start: number; end: number; size: number } | null {
  const match = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(value?.trim() ?? '');
  if (!match) return null;
  return { start: Number(match[1]), end: Number(match[2]), size: Number(match[3]) };
}

function normalizeEtag(etag: string): string {
  return etag.replace(/^W\//, '').replace(/^"(.*)"$/, '$1');
}

/** The start of an error body (Azure's XML names the reason), then the rest discarded. */
async function readSome(body: Dispatcher.ResponseData['body']): Promise<string> {
  let text = '';
  try {
    for await (const chunk of body as AsyncIterable<Buffer>) {
      text += chunk.toString('utf8');
      if (text.length >= 4096) break;
    }
  } catch {
    // the status is what matters
  }
  return text;
}

function dropBytes(chunks: Buffer[], bytes: number): Buffer[] {
  const rest: Buffer[] = [];
  let skip = bytes;
  for (const chunk of chunks) {
    if (skip >= chunk.length) skip -= chunk.length;
    else {
      rest.push(skip > 0 ? chunk.subarray(skip) : chunk);
      skip = 0;
    }
  }
  return rest;
}

function diskError(error: unknown, what: string): AgentError {
  const code = (error as NodeJS.ErrnoException | null)?.code;
  if (code !== undefined && DISK_FULL_CODES.has(code)) {
    return new AgentError('DISK_FULL', `${what}: ${code}`, { cause: error, details: { errno: code } });
  }
  return new AgentError('DOWNLOAD_FAILED', `${what}: ${errorMessage(error)}`, { cause: error, details: { errno: code } });
}

async function callSource(get: () => Promise<DownloadTarget>): Promise<DownloadTarget> {
  try {
    return await get();
  } catch (error) {
    throw asAgentError(error);
  }
}

function asAgentError(error: unknown): AgentError {
  if (error instanceof AgentError) return error;
  return new AgentError('DOWNLOAD_FAILED', errorMessage(error), {
    cause: error,
    retryable: true,
    details: { lastError: errorMessage(error) },
  });
}

function isInvalidUrl(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return code === 'ERR_INVALID_URL' || code === 'UND_ERR_INVALID_ARG';
}

function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw abortError(signal);
}

function abortError(signal: AbortSignal): AgentError {
  return new AgentError('DOWNLOAD_FAILED', 'download aborted', { cause: signal.reason, details: { aborted: true } });
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
