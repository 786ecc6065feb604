import { startPipeProxy } from './pipe-proxy.ts';

/**
 * A TCP proxy to `targetPort` that, once armed, swallows the next connection whose first request
 * is a Put Block (`PUT …comp=block&…`): it reads everything the client sends and never answers,
 * as a half-open connection does. Every other connection is piped through unchanged.
 */
export interface BlackHoleProxy {
  port: number;
  /** Swallow the next `connections` Put Block connections. */
  arm(connections?: number): void;
  /** Connections swallowed so far, and the bytes they carried. */
  swallowed: { connections: number; bytes: number };
  close(): Promise<void>;
}

export async function startBlackHoleProxy(targetPort: number): Promise<BlackHoleProxy> {
  let armed = 0;
  const swallowed = { connections: 0, bytes: 0 };
  const proxy = await startPipeProxy({
    target: () => ({ host: '127.0.0.1', port: targetPort }),
    join(client, upstream) {
      client.once('data', (first: Buffer) => {
        if (armed > 0 && /^PUT \S*comp=block&/.test(first.toString('latin1', 0, 2048))) {
          armed--;
          swallowed.connections++;
          swallowed.bytes += first.length;
          upstream.destroy();
          client.on('data', (more: Buffer) => {
            swallowed.bytes += more.length;
          });
          return;
        }
        upstream.write(first);
        client.pipe(upstream).pipe(client);
      });
    },
  });
  return {
    port: proxy.port,
    arm(connections = 1) {
      armed += connections;
    },
    swallowed,
    close: () => proxy.close(),
  };
}
