import { randomUUID } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { type IncomingMessage, request } from 'node:http';
import { print } from 'graphql';
import { UploadLoraDocument } from '../../sdk/index.ts';

/**
 * A GraphQL multipart request (the upload spec) written by hand over node:http, streaming the
 * file — so tests can also send what well-behaved clients never do: cut the body halfway, put
 * parts out of order, lie about sizes.
 */

/** The SDK's own upload document (`sdk/operations/uploads.graphql`): these requests send what the SDK sends. */
export const UPLOAD_MUTATION = print(UploadLoraDocument);

export type FileSource = Buffer | { path: string; size: number };

export interface MultipartRequest {
  url: string;
  token?: string | null;
  file?: FileSource;
  filename?: string;
  variables?: Record<string, unknown>;
  query?: string;
  /** Send the CSRF header. @default true */
  csrf?: boolean;
  /** Replace the generated parts before the file (raw multipart text, boundary `XBOUNDARY`). */
  rawPreamble?: string;
  /** Stop sending (and destroy the socket) after this many file bytes. */
  abortAfterBytes?: number;
  /** After this many file bytes, wait for `hold` before sending the rest (an upload in flight). */
  holdAfterBytes?: number;
  hold?: Promise<void>;
  headers?: Record<string, string>;
}

export interface MultipartResponse {
  status: number;
  body: any;
  text: string;
  aborted: boolean;
}

export const BOUNDARY = 'XBOUNDARY';

function sizeOf(file: FileSource): number {
  return Buffer.isBuffer(file) ? file.length : file.size;
}

/** Reads a response to the end: its JSON body when it has one, `aborted` when it broke off. */
export function readMultipartResponse(res: IncomingMessage): Promise<MultipartResponse> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    res.on('data', (c: Buffer) => chunks.push(c));
    res.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      let body: unknown;
      try {
        body = JSON.parse(text);
      } catch {
        body = undefined;
      }
      resolve({ status: res.statusCode ?? 0, body, text, aborted: false });
    });
    res.on('error', () => resolve({ status: res.statusCode ?? 0, body: undefined, text: '', aborted: true }));
  });
}

export function postMultipart(req: MultipartRequest): Promise<MultipartResponse> {
  const file = req.file ?? Buffer.alloc(0);
  const operations = JSON.stringify({ query: req.query ?? UPLOAD_MUTATION, variables: { ...req.variables, file: null } });
  const preamble =
    req.rawPreamble ??
    `--${BOUNDARY}\r\nContent-Disposition: form-data; name="operations"\r\n\r\n${operations}\r\n` +
      `--${BOUNDARY}\r\nContent-Disposition: form-data; name="map"\r\n\r\n${JSON.stringify({ 0: ['variables.file'] })}\r\n`;
  const fileHead = `--${BOUNDARY}\r\nContent-Disposition: form-data; name="0"; filename="${req.filename ?? 'lora.safetensors'}"\r\nContent-Type: application/octet-stream\r\n\r\n`;
  const tail = `\r\n--${BOUNDARY}--\r\n`;
  const length = Buffer.byteLength(preamble) + Buffer.byteLength(fileHead) + sizeOf(file) + Buffer.byteLength(tail);
  const headers: Record<string, string> = {
    'content-type': `multipart/form-data; boundary=${BOUNDARY}`,
    'content-length': String(length),
    ...(req.csrf === false ? {} : { 'x-graphql-yoga-csrf': '1' }),
    ...(req.token ? { authorization: `Bearer ${req.token}` } : {}),
    ...req.headers,
  };
  return new Promise((resolve, reject) => {
    let settled = false;
    const done = (value: MultipartResponse) => {
      if (!settled) {
        settled = true;
        resolve(value);
      }
    };
    const r = request(req.url, { method: 'POST', headers }, (res) => void readMultipartResponse(res).then(done));
    r.on('error', (error) => {
      if (req.abortAfterBytes !== undefined) done({ status: 0, body: undefined, text: '', aborted: true });
      else if (!settled) reject(error);
    });
    void (async () => {
      const write = (chunk: Buffer | string) =>
        new Promise<void>((ok) => {
          if (r.destroyed) return ok();
          if (r.write(chunk)) ok();
          else r.once('drain', ok);
        });
      await write(preamble);
      await write(fileHead);
      let sent = 0;
      const source = Buffer.isBuffer(file) ? [file] : createReadStream(file.path, { highWaterMark: 1024 * 1024 });
      for await (const raw of source) {
        let chunk = raw as Buffer;
        if (req.abortAfterBytes !== undefined && sent + chunk.length >= req.abortAfterBytes) {
          chunk = chunk.subarray(0, req.abortAfterBytes - sent);
          await write(chunk);
          await new Promise((t) => setTimeout(t, 200));
          r.destroy();
          setTimeout(() => done({ status: 0, body: undefined, text: '', aborted: true }), 50);
          return;
        }
        if (req.holdAfterBytes !== undefined && sent < req.holdAfterBytes && sent + chunk.length > req.holdAfterBytes) {
          await write(chunk.subarray(0, req.holdAfterBytes - sent));
          await req.hold;
          chunk = chunk.subarray(req.holdAfterBytes - sent);
          sent = req.holdAfterBytes;
        }
        sent += chunk.length;
        if (r.destroyed) return;
        await write(chunk);
      }
      r.end(tail);
    })().catch((error) => {
      if (!settled) reject(error);
    });
  });
}

export function newUploadId(): string {
  return randomUUID();
}

export interface RawMultipartRequest {
  url: string;
  token?: string | null;
  /** The whole body (boundary `XBOUNDARY`), sent as is with its Content-Length. */
  body: string | Buffer;
  /** Give up (and report `aborted`) when no response came in this long. @default 10,000 */
  timeoutMs?: number;
}

/** Posts a hand-written multipart body: every part, in any order, as the test wrote it. */
export function postRawMultipart(req: RawMultipartRequest): Promise<MultipartResponse> {
  const body = Buffer.isBuffer(req.body) ? req.body : Buffer.from(req.body);
  const headers: Record<string, string> = {
    'content-type': `multipart/form-data; boundary=${BOUNDARY}`,
    'content-length': String(body.length),
    'x-graphql-yoga-csrf': '1',
    ...(req.token ? { authorization: `Bearer ${req.token}` } : {}),
  };
  return new Promise((resolve) => {
    const r = request(
      req.url,
      { method: 'POST', headers, timeout: req.timeoutMs ?? 10_000 },
      (res) => void readMultipartResponse(res).then(resolve),
    );
    r.on('timeout', () => r.destroy(new Error('no response in time')));
    r.on('error', (error) => resolve({ status: 0, body: undefined, text: String(error), aborted: true }));
    r.end(body);
  });
}

/** One multipart part (boundary `XBOUNDARY`); a file part when `filename` is given. */
export function multipartPart(name: string, value: string | Buffer, filename?: string): Buffer {
  const disposition = `form-data; name="${name}"${filename === undefined ? '' : `; filename="${filename}"`}`;
  const type = filename === undefined ? '' : 'Content-Type: application/octet-stream\r\n';
  return Buffer.concat([
    Buffer.from(`--${BOUNDARY}\r\nContent-Disposition: ${disposition}\r\n${type}\r\n`),
    Buffer.from(value),
    Buffer.from('\r\n'),
  ]);
}

export const MULTIPART_END = `--${BOUNDARY}--\r\n`;

/** Reads a response to its end: status, text, and the body parsed as JSON (undefined when it is not). */
