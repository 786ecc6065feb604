import { startPipeProxy } from './pipe-proxy.ts';

/**
 * A TCP proxy in front of a real server that can cut the network: `down()` drops every open
 * connection and refuses new ones (accepted, then destroyed) while keeping its port, `up()`
 * restores it. For reconnect tests without freeing a port another test could take. `retarget(port)`
 * sends new connections to another server (a rolling deploy behind one address).
 */
export interface TcpProxy {
  port: number;
  down(): void;
  up(): void;
  retarget(port: number): void;
  close(): Promise<void>;
}

export async function startTcpProxy(initialPort: number): Promise<TcpProxy> {
  let connected = true;
  let targetPort = initialPort;
  const proxy = await startPipeProxy({ target: () => (connected ? { host: '127.0.0.1', port: targetPort } : null) });
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
    close: () => proxy.close(),
  };
}
