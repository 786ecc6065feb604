import { createServer } from 'node:net';

/**
 * A TCP port that is free on 127.0.0.1 right now: binds port 0, reads the port the kernel chose
 * and closes the socket again. Another process may take the port before the caller binds it, so
 * callers that can should retry with a new port when the bind fails.
 */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      if (address === null || typeof address === 'string') {
        server.close(() => reject(new Error(`freePort: unexpected server address ${String(address)}`)));
        return;
      }
      server.close((err) => (err ? reject(err) : resolve(address.port)));
    });
  });
}
