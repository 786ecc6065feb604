/**
 * Node only (imported lazily by the client, so browser bundles never load node:http): a GraphQL
 * multipart request (the upload spec) whose file part is streamed from disk over node:http(s)
 * with backpressure — constant memory whatever the file size (Node 20's fetch + FormData buffers
 * the whole file). Reports progress as bytes are handed to the socket.
 */
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { basename } from 'node:path';
import { LoraSdkError, networkError } from './errors.ts';

export interface StreamedUpload {
  url: string;
  headers: Record<string, string>;
  /** The `operations` field (JSON, with the file variable set to null). */
  operations: string;
  /** The variable path of the file in `operations`, e.g. `variables.file`. */
  fileVariable: string;
  path: string;
  fileName?: string;
  onProgress?: (bytesSent: number, totalBytes: number) => void;
  signal?: AbortSignal;
  /** Socket inactivity limit (ms). */
  idleTimeoutMs: number;
  /** Read size from disk. @default 1 MiB */
  chunkBytes?: number;
}

export async function fileSize(path: string): Promise<number> {
  try {
    const info = await stat(path);
    if (!info.isFile()) throw new Error(`${path} is not a file`);
    return info.size;
  } catch (error) {
    throw new LoraSdkError({
      kind: 'network',
      code: 'FILE_UNREADABLE',
      message: `Cannot read ${path}: ${(error as Error).message}`,
      retryable: false,
      cause: error,
    });
  }
}

function quoted(value: string): string {
  return value.replace(/["\\\r\n]/g, '_');
}

export async function postStreamedMultipart(upload: StreamedUpload): Promise<{ status: number; text: string }> {
  const total = await fileSize(upload.path);
  const boundary = `----lora-vault-${Math.random().toString(16).slice(2)}${Date.now().toString(16)}`;
  const fileName = quoted(upload.fileName ?? basename(upload.path));
  const head = Buffer.from(
    `--${boundary}\r\nContent-Disposition: form-data; name="operations"\r\nContent-Type: application/json\r\n\r\n${upload.operations}\r\n` +
      `--${boundary}\r\nContent-Disposition: form-data; name="map"\r\nContent-Type: application/json\r\n\r\n${JSON.stringify({ 0: [upload.fileVariable] })}\r\n` +
      `--${boundary}\r\nContent-Disposition: form-data; name="0"; filename="${fileName}"\r\nContent-Type: application/octet-stream\r\n\r\n`,
  );
  const tail = Buffer.from(`\r\n--${boundary}--\r\n`);
  const url = new URL(upload.url);
  const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
  const signal = upload.signal;
  if (signal?.aborted) throw networkError(signal.reason ?? Object.assign(new Error('aborted'), { name: 'AbortError' }));

  return new Promise((resolve, reject) => {
    let settled = false;
    let timedOut = false;
    const fail = (error: unknown) => {
      if (settled) return;
      settled = true;
      signal?.removeEventListener('abort', onAbort);
      file.destroy();
      req.destroy();
      reject(networkError(error, timedOut));
    };
    const onAbort = () => fail(Object.assign(new Error('The upload was aborted'), { name: 'AbortError' }));
    const req = send(
      url,
      {
        method: 'POST',
        headers: {
          ...upload.headers,
          'content-type': `multipart/form-data; boundary=${boundary}`,
          'content-length': String(head.length + total + tail.length),
        },
      },
      (res: IncomingMessage) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('error', fail);
        res.on('end', () => {
          if (settled) return;
          settled = true;
          signal?.removeEventListener('abort', onAbort);
          file.destroy();
          resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') });
        });
      },
    );
    const file = createReadStream(upload.path, { highWaterMark: upload.chunkBytes ?? 1024 * 1024 });
    signal?.addEventListener('abort', onAbort, { once: true });
    req.setTimeout(upload.idleTimeoutMs, () => {
      timedOut = true;
      fail(new Error(`no progress for ${upload.idleTimeoutMs} ms`));
    });
    req.on('error', fail);
    file.on('error', (error) =>
      fail(new LoraSdkError({ kind: 'network', code: 'FILE_UNREADABLE', message: error.message, retryable: false, cause: error })),
    );

    // The server may answer early (e.g. refused before the file: over quota); stop sending then.
    const write = (chunk: Buffer) =>
      new Promise<void>((ok) => {
        if (settled || req.destroyed) return ok();
        if (req.write(chunk)) ok();
        else req.once('drain', ok);
      });
    void (async () => {
      let sent = 0;
      await write(head);
      upload.onProgress?.(0, total);
      for await (const chunk of file) {
        if (settled || req.destroyed) return;
        await write(chunk as Buffer);
        sent += (chunk as Buffer).length;
        upload.onProgress?.(sent, total);
      }
      if (sent !== total) throw new Error(`the file changed while it was sent (${sent} of ${total} bytes)`);
      if (!settled && !req.destroyed) req.end(tail);
    })().catch(fail);
  });
}
