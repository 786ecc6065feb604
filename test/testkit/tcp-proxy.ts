import { startPipeProxy } from './pipe-proxy.ts';

/**
 * A TCP proxy in front of a real server that can cut the network: `down()` drops every open
 * connection and refuses new ones (accepted, then destroyed) while keeping its port, `up()`
 * restores it. For reconnect tests without freeing a port another test could take. `retarget(port)`
 * sends new connections to another server (a rolling deploy behind one address). It counts the
 * bytes clients sent toward the server (`bytesToTarget()`); `onBytesToTarget` sees the running
 * total as each chunk arrives, before it is forwarded (a fault can be injected at an exact byte).
 */
export interface TcpProxy {
  port: number;
  down(): void;
  up(): void;
  retarget(port: number): void;
  /** Bytes clients sent through the proxy toward the server so far. */
  bytesToTarget(): number;
  /** Connections accepted while up, and refused while down. */
  connections(): { accepted: number; refused: number };
  close(): Promise<void>;
}

export interface TcpProxyOptions {
  /** Called with the running total of bytes toward the server as each chunk arrives (before it is forwarded). */
  onBytesToTarget?(total: number): void;
}

export async function startTcpProxy(initialPort: number, options: TcpProxyOptions = {}): Promise<TcpProxy> {
  let connected = true;
  let targetPort = initialPort;
  let bytes = 0;
  const counts = { accepted: 0, refused: 0 };
  const proxy = await startPipeProxy({
    target: () => {
      if (!connected) {
        counts.refused++;
        return null;
      }
      counts.accepted++;
      return { host: '127.0.0.1', port: targetPort };
    },
    join(client, upstream) {
      client.on('data', (chunk: Buffer) => {
        bytes += chunk.length;
        options.onBytesToTarget?.(bytes);
      });
      client.pipe(upstream).pipe(client);
    },
  });
  return {
    port: proxy.port,
    down() {
      connected = false;
      proxy.dropAll();
    },
    up() {
      connected = true;
    },
    retarget(port) {
      targetPort = port;
      proxy.dropAll();
    },
    bytesToTarget: () => bytes,
    connections: () => ({ ...counts }),
    close: () => proxy.close(),
  };
}
