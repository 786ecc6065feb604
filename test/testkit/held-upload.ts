import { request } from 'node:http';
import { BOUNDARY, type MultipartResponse, readMultipartResponse, UPLOAD_MUTATION } from './multipart.ts';

/**
 * An uploadLora multipart request whose file body the test sends piece by piece, so it can act
 * while the upload is in flight (delete its id, run the reconciler, look at the staged blocks)
 * and then finish or cut it.
 */

export interface HeldUpload {
  /** Sends the next file bytes; resolves once they are handed to the socket. */
  send(bytes: Buffer): Promise<void>;
  /** Sends the rest of the body; the response follows. */
  finish(): void;
  /** Destroys the socket mid-body (a client that goes away). */
  cut(): void;
  /** The server's answer (or `aborted` when the socket was cut). */
  response: Promise<MultipartResponse>;
}

export function holdUpload(options: { url: string; token: string; fileSize: number; variables?: Record<string, unknown> }): HeldUpload {
  const operations = JSON.stringify({ query: UPLOAD_MUTATION, variables: { ...options.variables, file: null } });
  const head =
    `--${BOUNDARY}\r\nContent-Disposition: form-data; name="operations"\r\n\r\n${operations}\r\n` +
    `--${BOUNDARY}\r\nContent-Disposition: form-data; name="map"\r\n\r\n${JSON.stringify({ 0: ['variables.file'] })}\r\n` +
    `--${BOUNDARY}\r\nContent-Disposition: form-data; name="0"; filename="held.safetensors"\r\nContent-Type: application/octet-stream\r\n\r\n`;
  const tail = `\r\n--${BOUNDARY}--\r\n`;
  const req = request(options.url, {
    method: 'POST',
    headers: {
      'content-type': `multipart/form-data; boundary=${BOUNDARY}`,
      'content-length': String(Buffer.byteLength(head) + options.fileSize + Buffer.byteLength(tail)),
      'x-graphql-yoga-csrf': '1',
      authorization: `Bearer ${options.token}`,
    },
  });
  let cut = false;
  const response = new Promise<MultipartResponse>((resolve, reject) => {
    req.on('response', (res) => void readMultipartResponse(res).then(resolve));
    req.on('error', (error) => (cut ? resolve({ status: 0, body: undefined, text: '', aborted: true }) : reject(error)));
  });
  const write = (chunk: Buffer | string) =>
    new Promise<void>((resolve, reject) => req.write(chunk, (error) => (error ? reject(error) : resolve())));
  req.write(head);
  return {
    send: (bytes) => write(bytes),
    finish: () => req.end(tail),
    cut: () => {
      cut = true;
      req.destroy();
    },
    response,
  };
}
