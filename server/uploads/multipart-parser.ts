import type { IncomingMessage } from 'node:http';
import type { Readable } from 'node:stream';
import busboy from 'busboy';
import { GraphQLError } from 'graphql';
import { type FileUpload, Upload } from 'graphql-upload-minimal';
import { RequestErrorCode, UploadInterruptedError } from '../domain/errors.ts';
import { watchBodyIdle } from './body-idle.ts';

/**
 * A GraphQL multipart request (github.com/jaydenseric/graphql-multipart-request-spec) parsed as
 * a stream with busboy, strictly: the `operations` field, then the `map` field, then exactly the
 * file parts `map` names, each once — nothing else. Anything else is a 400 BAD_USER_INPUT
 * (a field over the size limit: 413). The operation is returned as soon as `map` is read, so the
 * resolver streams the file while it arrives; what goes wrong later in the body (a duplicated or
 * extra part, a missing file, a body that stops) reaches the resolver through the file's stream,
 * its promise, or `requestEnded`, which the upload awaits before it commits anything.
 *
 * graphql-upload-minimal's own parser is not used: it ignores parts it did not expect, leaves an
 * upload pending forever when `map` comes twice, and has no way to tell the resolver that the
 * rest of the body was malformed. Its `Upload` class is kept, for its `Upload` scalar.
 */

export interface ParserOptions {
  maxFileBytes: number;
  /** Largest `operations`/`map` field. @default 1,000,000 */
  maxFieldBytes?: number;
  /** The body sends nothing this long while we wait for it → the upload is interrupted. */
  idleMs: number;
}

export interface GraphQLParams {
  query?: string;
  variables?: Record<string, unknown>;
  operationName?: string;
  extensions?: Record<string, unknown>;
}

/** A received file part, as the `Upload` scalar hands it to the resolver. */
export interface ReceivedFile extends FileUpload {
  /** Settles when the request body is over: rejects if what followed the file was malformed or never came. */
  requestEnded: Promise<void>;
}

/** An `Upload` that prints as what it is in error messages (not as its promise and functions). */
export class MappedUpload extends Upload {
  declare resolve: (file: ReceivedFile) => void;
  declare reject: (error: Error) => void;
  constructor(readonly part: string) {
    super();
  }
  toJSON(): string {
    return `<uploaded file "${this.part}">`;
  }
}

/** Path segments that would reach a prototype instead of the operation's own data. */
const FORBIDDEN_SEGMENTS = new Set(['__proto__', 'constructor', 'prototype']);

export function badRequest(message: string, status = 400): GraphQLError {
  return new GraphQLError(message, { extensions: { code: RequestErrorCode.BAD_USER_INPUT, http: { status } } });
}

export function parseMultipart(req: IncomingMessage, options: ParserOptions): Promise<GraphQLParams> {
  const maxFieldBytes = options.maxFieldBytes ?? 1_000_000;
  return new Promise((resolve, reject) => {
    let operations: GraphQLParams | undefined;
    let uploads: Map<string, MappedUpload> | undefined;
    let openFile: Readable | undefined;
    let failed = false;
    let returned = false;
    let endRequest!: () => void;
    let failRequest!: (error: Error) => void;
    const requestEnded = new Promise<void>((ok, ko) => {
      endRequest = ok;
      failRequest = ko;
    });
    requestEnded.catch(() => {}); // nobody awaits it when the upload failed before its end

    const parser = busboy({
      headers: req.headers,
      defParamCharset: 'utf8',
      limits: { fieldSize: maxFieldBytes, fields: 2, files: 1, fileSize: options.maxFileBytes + 1 },
    });

    const fail = (error: Error) => {
      if (failed) return;
      failed = true;
      idle.stop();
      if (!returned) reject(error);
      for (const upload of uploads?.values() ?? []) if (!upload.file) upload.reject(error);
      if (openFile && !openFile.destroyed) openFile.destroy(error);
      failRequest(error);
      req.unpipe(parser);
      parser.destroy();
    };
    const idle = watchBodyIdle(req, options.idleMs, () => {
      const seconds = options.idleMs / 1000;
      fail(
        returned ? new UploadInterruptedError(`no data received for ${seconds} s`) : badRequest(`No data received for ${seconds} s`, 408),
      );
      // the response (UPLOAD_INTERRUPTED) closes the connection; should it never come, the socket goes anyway
      setTimeout(() => req.socket.destroy(), options.idleMs).unref();
    });

    parser.on('field', (name, value, info) => {
      if (info.valueTruncated) return fail(badRequest(`The '${name}' field is over ${maxFieldBytes} bytes`, 413));
      if (name === 'operations' && !operations && !uploads) {
        let parsed: unknown;
        try {
          parsed = parseJson(value, 'operations');
        } catch (error) {
          return fail(error as Error);
        }
        if (Array.isArray(parsed)) return fail(badRequest('Batched multipart requests are not supported'));
        if (!isPlainObject(parsed)) return fail(badRequest("The 'operations' field must be a JSON object"));
        operations = parsed as GraphQLParams;
        return;
      }
      if (name === 'map' && operations && !uploads) {
        try {
          uploads = placeUploads(operations, parseJson(value, 'map'));
        } catch (error) {
          return fail(error as Error);
        }
        returned = true;
        return resolve(operations);
      }
      fail(badRequest(unexpectedField(name, Boolean(uploads))));
    });

    parser.on('file', (name, stream, info) => {
      // busboy errors a file stream it gives up on; whoever reads it sees that, nobody else must crash on it
      stream.on('error', () => {});
      const upload = uploads?.get(name);
      if (!upload || upload.file) {
        stream.resume();
        const why = !uploads ? "files must follow 'operations' and 'map'" : upload ? 'it was sent twice' : "'map' does not name it";
        return fail(badRequest(`Unexpected file part '${name}': ${why}`));
      }
      openFile = stream;
      stream.once('end', () => {
        if (openFile === stream) openFile = undefined;
      });
      let taken = false;
      upload.resolve({
        fieldName: name,
        filename: info.filename ?? '',
        mimetype: info.mimeType,
        encoding: info.encoding,
        requestEnded,
        createReadStream() {
          if (taken) throw new Error('the upload stream was already taken');
          taken = true;
          return stream as ReturnType<FileUpload['createReadStream']>;
        },
      });
    });

    parser.on('filesLimit', () => fail(badRequest('One file per request')));
    parser.on('fieldsLimit', () => fail(badRequest("Only the 'operations' and 'map' fields are allowed")));
    parser.on('error', (error: Error) => fail(badRequest(`Malformed multipart body: ${error.message}`)));
    parser.on('close', () => {
      if (failed) return;
      if (!operations) return fail(badRequest("The 'operations' field is missing"));
      if (!uploads) return fail(badRequest("The 'map' field is missing"));
      const missing = [...uploads.values()].filter((u) => !u.file).map((u) => u.part);
      if (missing.length) return fail(badRequest(`File part '${missing.join("', '")}' named in 'map' was not sent`));
      idle.stop();
      endRequest();
    });
    req.once('close', () => {
      if (!req.complete) fail(new UploadInterruptedError('the client disconnected'));
      idle.stop();
    });
    req.pipe(parser);
  });
}

function parseJson(text: string, field: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    throw badRequest(`The '${field}' field is not valid JSON`);
  }
}

function unexpectedField(name: string, haveMap: boolean): string {
  if (name === 'operations') return "The 'operations' field came twice";
  if (name === 'map') return haveMap ? "The 'map' field came twice" : "The 'map' field must follow 'operations'";
  return `Unexpected field '${name}': only 'operations', 'map' and the mapped files are allowed`;
}

/** Puts one MappedUpload per `map` entry where its paths say (`variables.…` only; one file, one place). */
function placeUploads(operations: GraphQLParams, map: unknown): Map<string, MappedUpload> {
  if (!isPlainObject(map)) throw badRequest("The 'map' field must be a JSON object of part name → [path]");
  const entries = Object.entries(map);
  if (entries.length > 1) throw badRequest('One file per request');
  const uploads = new Map<string, MappedUpload>();
  for (const [part, paths] of entries) {
    if (!part || !Array.isArray(paths) || paths.length !== 1 || typeof paths[0] !== 'string') {
      throw badRequest(`'map' entry '${part}' must name exactly one path (a file is used once)`);
    }
    const upload = new MappedUpload(part);
    setAtPath(operations, paths[0], upload);
    uploads.set(part, upload);
  }
  return uploads;
}

function setAtPath(operations: GraphQLParams, path: string, value: MappedUpload): void {
  const segments = path.split('.');
  const last = segments.pop() as string;
  if (segments[0] !== 'variables' || !last || segments.some((s) => !s) || [...segments, last].some((s) => FORBIDDEN_SEGMENTS.has(s))) {
    throw badRequest(`'map' path '${path}' must be variables.<name>[.<index or key>…]`);
  }
  let target: unknown = operations;
  for (const segment of segments) {
    target = isContainer(target) && Object.hasOwn(target, segment) ? (target as Record<string, unknown>)[segment] : undefined;
    if (!isContainer(target)) throw badRequest(`'map' path '${path}' is not in 'operations'`);
  }
  (target as Record<string, unknown>)[last] = value;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isContainer(value: unknown): value is object {
  return typeof value === 'object' && value !== null;
}
