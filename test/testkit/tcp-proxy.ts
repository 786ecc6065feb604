import type { AddressInfo } from 'node:net';
import { createConnection, createServer, type Server, type Socket } from 'node:net';

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
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    if (!connected) {
      client.destroy();
      return;
    }
    const upstream = createConnection({ host: '127.0.0.1', port: targetPort });
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => {
        client.destroy();
        upstream.destroy();
      });
    }
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    down() {
      connected = false;
      for (const s of sockets) s.destroy();
    },
    up() {
      connected = true;
    },
    retarget(port) {
      targetPort = port;
      for (const s of sockets) s.destroy();
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
