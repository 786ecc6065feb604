import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import { pipeline } from 'node:stream/promises';
import fresh from 'fresh';
import type { Logger } from 'pino';
import rangeParser from 'range-parser';
import { ErrorCode, RequestErrorCode } from '../domain/errors.ts';
import { attachmentDisposition } from '../domain/owner-file-name.ts';
import { OWNER_DOWNLOAD_PATH, type OwnerDownloadService } from '../services/owner-downloads.ts';
import { BlobNotFoundError, type BlobStore, type StoredObject } from '../storage/blob-store.ts';
import { OwnerDownloadOutcome, ownerDownloadInstruments } from '../telemetry/owner-download-telemetry.ts';

/**
 * `GET|HEAD /downloads/loras/<token>`: an owner's download (the link `createLoraDownload` hands
 * out), streamed from storage through the API so that no storage header reaches the user — on
 * content stored once, `x-ms-creation-time` is the first uploader's time (THREATS row 72). No
 * Authorization header: the token is the capability (auth/download-tokens.ts), so a plain browser
 * link works. Each fetch re-checks the LoRA (services/owner-downloads.ts `resolve`).
 *
 * The response carries exactly the headers below (plus Node's Date/Connection/Keep-Alive):
 * Content-Type, Content-Length, Content-Disposition, ETag and Last-Modified (the LoRA's own
 * snapshot's), Accept-Ranges, Content-Range, Cache-Control, X-Content-Type-Options. One byte
 * range → 206; several → the whole file (200, allowed by RFC 9110 §14.2); unsatisfiable → 416;
 * If-None-Match / If-Modified-Since → 304; If-Range honoured. Bytes flow with backpressure (no
 * buffering: memory does not grow with the file); a client that goes away aborts the storage read.
 * Refusals are JSON like the GraphQL errors: 404 `LORA_NOT_FOUND` for a forged, tampered or
 * expired link and for a LoRA deleted since (one answer), 429 `RATE_LIMITED` over the
 * concurrency limits, 416, 405.
 */

const TOKEN = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;
const MAX_TOKEN_CHARS = 4096;
const NO_STORE = 'private, no-store';

function refuse(res: ServerResponse, status: number, code: string, message: string, headers: OutgoingHttpHeaders = {}, extra = {}): void {
  const body = JSON.stringify({ errors: [{ message, extensions: { code, ...extra } }] });
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(body),
    'cache-control': NO_STORE,
    ...headers,
  });
  res.end(body);
}

/** If-Range (RFC 9110 §13.1.5): the range applies only while the client's validator is ours (a strong ETag, or a date not before Last-Modified). */
function ifRangeHolds(ifRange: string | undefined, object: StoredObject): boolean {
  if (ifRange === undefined) return true;
  const value = ifRange.trim();
  if (value.startsWith('"') || value.startsWith('W/')) return value === object.etag && !value.startsWith('W/');
  const at = Date.parse(value);
  return !Number.isNaN(at) && Math.floor(object.lastModified.getTime() / 1000) * 1000 <= at;
}

/** One byte range to send, null for the whole file, or 'unsatisfiable'. */
function chosenRange(req: IncomingMessage, object: StoredObject): { start: number; end: number } | null | 'unsatisfiable' {
  const header = req.headers.range;
  const ifRange = req.headers['if-range'];
  if (header === undefined || !ifRangeHolds(Array.isArray(ifRange) ? ifRange[0] : ifRange, object)) return null;
  const ranges = rangeParser(object.sizeBytes, header, { combine: true });
  if (ranges === -1) return 'unsatisfiable';
  if (ranges === -2 || ranges.type !== 'bytes' || ranges.length !== 1) return null; // malformed or several: the whole file
  return ranges[0] ?? null;
}

export function createOwnerDownloadHandler(deps: { ownerDownloads: OwnerDownloadService; blobs: BlobStore; logger: Logger }) {
  const { ownerDownloads, blobs, logger } = deps;
  const count = (outcome: OwnerDownloadOutcome) => ownerDownloadInstruments().fetches.add(1, { outcome });
  const notFound = (res: ServerResponse) => {
    count(OwnerDownloadOutcome.NOT_FOUND);
    refuse(res, 404, ErrorCode.LORA_NOT_FOUND, 'Download link not found, expired, or no longer valid');
  };

  return async (req: IncomingMessage, res: ServerResponse, path: string): Promise<void> => {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      return refuse(res, 405, RequestErrorCode.BAD_USER_INPUT, 'Use GET or HEAD', { allow: 'GET, HEAD' });
    }
    const token = path.slice(OWNER_DOWNLOAD_PATH.length);
    const target = token.length <= MAX_TOKEN_CHARS && TOKEN.test(token) ? await ownerDownloads.resolve(token) : null;
    const object = target && (await blobs.objectProperties(target.path, target.snapshot));
    if (!target || !object) return notFound(res);

    const validators = { etag: object.etag, 'last-modified': object.lastModified.toUTCString() };
    // the origin evaluates the conditions whatever Cache-Control the request has (RFC 9110 §13.2.1; fresh() would skip them on no-cache, which fetch() adds)
    const conditions = { 'if-none-match': req.headers['if-none-match'], 'if-modified-since': req.headers['if-modified-since'] };
    if (fresh(conditions, validators)) {
      count(OwnerDownloadOutcome.NOT_MODIFIED);
      res.writeHead(304, { ...validators, 'cache-control': NO_STORE });
      res.end();
      return;
    }
    const range = chosenRange(req, object);
    if (range === 'unsatisfiable') {
      count(OwnerDownloadOutcome.RANGE_NOT_SATISFIABLE);
      return refuse(res, 416, RequestErrorCode.BAD_USER_INPUT, 'Range not satisfiable', { 'content-range': `bytes */${object.sizeBytes}` });
    }
    const start = range?.start ?? 0;
    const length = range ? range.end - range.start + 1 : object.sizeBytes;
    const headers: OutgoingHttpHeaders = {
      'content-type': 'application/octet-stream',
      'content-length': length,
      'content-disposition': attachmentDisposition(target.fileName),
      ...validators,
      'accept-ranges': 'bytes',
      'cache-control': NO_STORE,
      'x-content-type-options': 'nosniff',
      ...(range ? { 'content-range': `bytes ${range.start}-${range.end}/${object.sizeBytes}` } : {}),
    };
    const status = range ? 206 : 200;
    if (req.method === 'HEAD') {
      count(OwnerDownloadOutcome.HEAD);
      res.writeHead(status, headers);
      res.end();
      return;
    }

    const release = ownerDownloads.slots.take(target.holder);
    if (typeof release !== 'function') {
      count(OwnerDownloadOutcome.BUSY);
      const message = `Too many downloads at once (${release.refused === 'USER' ? 'per holder' : 'on this server'}: ${release.limit}); retry later`;
      return refuse(
        res,
        429,
        RequestErrorCode.RATE_LIMITED,
        message,
        { 'retry-after': '5' },
        { scope: release.refused, limit: release.limit },
      );
    }
    const instruments = ownerDownloadInstruments();
    instruments.active.add(1);
    const abort = new AbortController();
    let brokeFirst: 'client' | 'storage' | null = null; // who ended a download that did not finish
    res.once('close', () => {
      if (!res.writableFinished) brokeFirst ??= 'client';
      abort.abort(); // the client went away (or we finished): stop reading storage
    });
    try {
      let body: NodeJS.ReadableStream;
      try {
        body = await blobs.readObject(target.path, target.snapshot, { offset: start, count: length, etag: object.etag }, abort.signal);
      } catch (error) {
        if (abort.signal.aborted) return count(OwnerDownloadOutcome.ABORTED);
        if (error instanceof BlobNotFoundError) return notFound(res); // deleted between the check and the read
        throw error;
      }
      res.writeHead(status, headers);
      body.on('data', (chunk: Buffer) => instruments.bytes.add(chunk.length));
      body.once('error', () => {
        brokeFirst ??= 'storage';
      });
      try {
        await pipeline(body, res);
        count(range ? OwnerDownloadOutcome.PARTIAL : OwnerDownloadOutcome.FULL);
      } catch (error) {
        if (brokeFirst === 'client') count(OwnerDownloadOutcome.ABORTED);
        else {
          // storage broke off mid-stream: the client sees a cut download, never a complete-looking file
          count(OwnerDownloadOutcome.FAILED);
          logger.warn({ err: error }, 'owner download cut: storage read failed mid-stream');
        }
      }
    } finally {
      instruments.active.add(-1);
      release();
    }
  };
}

/** Answers a request the handler threw on (storage unreachable before any header went out). */
export function ownerDownloadFailed(res: ServerResponse, logger: Logger, error: unknown): void {
  logger.error({ err: error }, 'owner download failed');
  ownerDownloadInstruments().fetches.add(1, { outcome: OwnerDownloadOutcome.FAILED });
  if (res.headersSent) res.destroy();
  else refuse(res, 503, RequestErrorCode.INTERNAL_SERVER_ERROR, 'Storage did not answer; retry later', { 'retry-after': '5' });
}
