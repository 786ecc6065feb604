import { request } from 'node:http';
import { connect, type Socket } from 'node:net';
import { BOUNDARY, type MultipartResponse, readMultipartResponse, UPLOAD_MUTATION } from './multipart.ts';

/**
 * Clients that are slow or stop: an upload over a real socket that stalls at a chosen byte (and
 * keeps the connection open) or trickles its file in paced chunks, and raw TCP clients for header
 * and keep-alive timeouts. The server decides when they end; tests read what it did.
 */

export interface SlowUploadRequest {
  url: string;
  token: string;
  file: Buffer;
  variables?: Record<string, unknown>;
  /** Stop sending here, socket left open: inside the `operations` field, after this many file bytes, or all but the closing boundary. */
  stallAt?: 'operations' | { fileBytes: number } | 'beforeEnd';
  /** Send the file in chunks of `chunkBytes`, one every `everyMs`. */
  pace?: { chunkBytes: number; everyMs: number };
}

export interface SlowUpload {
  /** The server's answer (status 0 and `aborted` if the socket closed without one). */
  response: Promise<MultipartResponse>;
  /** Resolves when the connection is closed, by either side. */
  closed: Promise<void>;
  /** Close the connection from the client side. */
  destroy(): void;
}

export function startSlowUpload(req: SlowUploadRequest): SlowUpload {
  const operations = JSON.stringify({ query: UPLOAD_MUTATION, variables: { ...req.variables, file: null } });
  const preamble = Buffer.from(
    `--${BOUNDARY}\r\nContent-Disposition: form-data; name="operations"\r\n\r\n${operations}\r\n` +
      `--${BOUNDARY}\r\nContent-Disposition: form-data; name="map"\r\n\r\n{"0":["variables.file"]}\r\n` +
      `--${BOUNDARY}\r\nContent-Disposition: form-data; name="0"; filename="slow.safetensors"\r\nContent-Type: application/octet-stream\r\n\r\n`,
  );
  const tail = Buffer.from(`\r\n--${BOUNDARY}--\r\n`);
  const body = Buffer.concat([preamble, req.file, tail]);
  const stall = req.stallAt;
  const cut =
    stall === undefined
      ? body.length
      : stall === 'operations'
        ? 60
        : stall === 'beforeEnd'
          ? body.length - tail.length
          : preamble.length + stall.fileBytes;

  const r = request(req.url, {
    method: 'POST',
    headers: {
      'content-type': `multipart/form-data; boundary=${BOUNDARY}`,
      'content-length': String(body.length),
      'x-graphql-yoga-csrf': '1',
      authorization: `Bearer ${req.token}`,
    },
  });
  const closed = new Promise<void>((resolve) => r.on('socket', (socket) => socket.once('close', () => resolve())));
  const response = new Promise<MultipartResponse>((resolve) => {
    const failed = () => resolve({ status: 0, body: undefined, text: '', aborted: true });
    r.on('error', failed);
    r.on('response', (res) => void readMultipartResponse(res).then(resolve));
  });

  void (async () => {
    if (!req.pace) {
      r.write(body.subarray(0, cut));
    } else {
      r.write(preamble);
      for (let at = preamble.length; at < cut && !r.destroyed; at += req.pace.chunkBytes) {
        await new Promise((t) => setTimeout(t, req.pace?.everyMs));
        r.write(body.subarray(at, Math.min(cut, at + req.pace.chunkBytes)));
      }
    }
    if (cut === body.length) r.end();
  })();
  return { response, closed, destroy: () => r.destroy() };
}

/** A raw TCP connection to the server's port, with the moment it was closed by the server. */
export function rawConnection(url: string): Promise<{ socket: Socket; received: () => string; closed: Promise<void> }> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname, () =>
      resolve({ socket, received: () => Buffer.concat(chunks).toString('latin1'), closed }),
    );
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', () => {});
    const closed = new Promise<void>((done) => socket.once('close', () => done()));
    socket.once('error', reject);
  });
}
