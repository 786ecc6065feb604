import http from 'node:http';
import type { NetConnectOpts } from 'node:net';

/**
 * A route for a client process (test/testkit/resumable-child.ts): node:http connections to one
 * host:port go to another (a proxy the parent controls), as a router would send them — the SDK
 * runs unchanged with its own transport, the URLs it is given (storage's SAS URLs) untouched.
 * `route` is `from-host:port=to-host:port`; without it nothing changes.
 */
export function routeConnections(route: string | undefined): void {
  if (!route) return;
  const match = /^([^:=]+):(\d+)=([^:=]+):(\d+)$/.exec(route);
  if (!match) throw new Error(`bad route ${route}: expected from-host:port=to-host:port`);
  const [, fromHost, fromPort, toHost, toPort] = match;
  const original = http.Agent.prototype.createConnection as unknown as (this: http.Agent, ...args: unknown[]) => unknown;
  http.Agent.prototype.createConnection = function (this: http.Agent, options: NetConnectOpts & { host?: string }, ...rest: unknown[]) {
    const opts = options as { host?: string; hostname?: string; port?: number | string };
    const host = opts.hostname ?? opts.host;
    if (host === fromHost && String(opts.port) === fromPort) {
      return original.call(this, { ...options, host: toHost, hostname: toHost, port: Number(toPort) }, ...rest);
    }
    return original.call(this, options, ...rest);
  } as unknown as typeof http.Agent.prototype.createConnection;
}
