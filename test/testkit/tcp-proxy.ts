import type { Socket } from 'node:net';
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
  /**
   * The network goes away. 'reset' (default): every open connection is dropped and new ones are
   * refused. 'blackhole': nothing is closed or refused, nothing arrives either — open connections
   * carry no byte ever again (as after a path change: the peer never learns), connections opened
   * meanwhile are accepted and left silent.
   */
  down(mode?: 'reset' | 'blackhole'): void;
  up(): void;
  retarget(port: number): void;
  /** Bytes clients sent through the proxy toward the server so far. */
  bytesToTarget(): number;
  /** Connections accepted while up, and refused (or left silent) while down. */
  connections(): { accepted: number; refused: number };
  close(): Promise<void>;
}

export interface TcpProxyOptions {
  /** Called with the running total of bytes toward the server as each chunk arrives (before it is forwarded). */
  onBytesToTarget?(total: number): void;
}

export async function startTcpProxy(initialPort: number, options: TcpProxyOptions = {}): Promise<TcpProxy> {
  let connected = true;
  let blackhole = false;
  let targetPort = initialPort;
  const pairs = new Set<{ client: Socket; upstream: Socket }>();
  const silent = new Set<Socket>();
  let bytes = 0;
  const counts = { accepted: 0, refused: 0 };
  const proxy = await startPipeProxy({
    accept: (client) => {
      if (connected || !blackhole) return true;
      counts.refused++;
      silent.add(client); // accepted, never answered
      client.on('error', () => client.destroy());
      client.on('close', () => silent.delete(client));
      return false;
    },
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
      const pair = { client, upstream };
      pairs.add(pair);
      client.on('close', () => pairs.delete(pair));
      client.pipe(upstream).pipe(client);
    },
  });
  return {
    port: proxy.port,
    down(mode = 'reset') {
      connected = false;
      blackhole = mode === 'blackhole';
      if (!blackhole) {
        proxy.dropAll();
        return;
      }
      for (const { client, upstream } of pairs) {
        client.unpipe(upstream);
        upstream.unpipe(client);
        client.pause();
        upstream.pause();
        client.removeAllListeners('data');
      }
      pairs.clear();
    },
    up() {
      connected = true;
      blackhole = false;
    },
    retarget(port) {
      targetPort = port;
      proxy.dropAll();
    },
    bytesToTarget: () => bytes,
    connections: () => ({ ...counts }),
    close: async () => {
      for (const socket of silent) socket.destroy();
      await proxy.close();
    },
  };
}
