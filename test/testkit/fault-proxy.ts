import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * A small HTTP proxy for fault injection in front of a real service (Azurite): forwards every
 * request, except that a rule may answer some of them with an error status instead.
 */

export interface FaultRule {
  /** Which requests to hit, e.g. (m) => m === 'DELETE'. */
  match: (method: string, url: string) => boolean;
  status: number;
  /** How many matching requests to fail; afterwards they pass through. */
  times: number;
}

export interface FaultProxy {
  port: number;
  /** Requests answered with an injected failure so far. */
  injected: number;
  /** Requests forwarded to the real service so far, by method. */
  forwarded: Record<string, number>;
  fail(rule: FaultRule): void;
  close(): Promise<void>;
}

export async function startFaultProxy(targetPort: number): Promise<FaultProxy> {
  let rule: FaultRule | undefined;
  const state: FaultProxy = {
    port: 0,
    injected: 0,
    forwarded: {},
    fail(r) {
      rule = { ...r };
    },
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
  const server: Server = createServer((req, res) => {
    const method = req.method ?? 'GET';
    if (rule && rule.times > 0 && rule.match(method, req.url ?? '')) {
      rule.times--;
      state.injected++;
      req.resume();
      res.writeHead(rule.status, { 'content-type': 'application/xml' });
      res.end('<?xml version="1.0" encoding="utf-8"?><Error><Code>ServerBusy</Code><Message>injected</Message></Error>');
      return;
    }
    state.forwarded[method] = (state.forwarded[method] ?? 0) + 1;
    const upstream = request({ host: '127.0.0.1', port: targetPort, method, path: req.url, headers: req.headers }, (up) => {
      res.writeHead(up.statusCode ?? 502, up.headers);
      up.pipe(res);
    });
    upstream.on('error', () => res.destroy());
    req.pipe(upstream);
  });
  server.keepAliveTimeout = 1000;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  state.port = (server.address() as AddressInfo).port;
  return state;
}
