import { type AddressInfo, createConnection, createServer, type Server, type Socket } from 'node:net';

/**
 * The TCP plumbing the test and benchmark proxies share (tcp-proxy.ts, bench/throttle-proxy.ts): a
 * listener on 127.0.0.1 (a free port) that connects each accepted client to `target()` and joins
 * the two sockets (straight pipes unless `join` says otherwise). Every socket is tracked: an error
 * on either side ends both, `dropAll()` ends every open connection, `close()` ends them and stops.
 */

export interface PipeProxyOptions {
  /** false: the proxy leaves this connection alone (the caller keeps it). @default every connection is handled */
  accept?(client: Socket): boolean;
  /** Where a connection accepted now goes; null refuses it (accepted, then destroyed). */
  target(): { host: string; port: number } | null;
  /** Joins client and upstream. @default `client.pipe(upstream).pipe(client)` */
  join?(client: Socket, upstream: Socket): void;
}

export interface PipeProxy {
  port: number;
  dropAll(): void;
  close(): Promise<void>;
}

export async function startPipeProxy(options: PipeProxyOptions): Promise<PipeProxy> {
  const sockets = new Set<Socket>();
  const join = options.join ?? ((client: Socket, upstream: Socket) => client.pipe(upstream).pipe(client));
  const server: Server = createServer((client) => {
    if (options.accept && !options.accept(client)) return;
    const target = options.target();
    if (!target) {
      client.destroy();
      return;
    }
    const upstream = createConnection(target);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => {
        client.destroy();
        upstream.destroy();
      });
    }
    join(client, upstream);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const dropAll = () => {
    for (const s of sockets) s.destroy();
  };
  return {
    port: (server.address() as AddressInfo).port,
    dropAll,
    close: () =>
      new Promise<void>((resolve) => {
        dropAll();
        server.close(() => resolve());
      }),
  };
}
