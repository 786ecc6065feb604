import { timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { BlockList, isIPv4, isIPv6 } from 'node:net';
import type { PrometheusExporter } from '@opentelemetry/exporter-prometheus';

/**
 * `GET /metrics`: the process's metrics as Prometheus text. Who may scrape: anyone when no rule is
 * configured (development, tests); otherwise a caller from one of the allowed networks, or one
 * sending `Authorization: Bearer <token>`. Production without a rule allows loopback only
 * (server/config.ts). Off entirely with METRICS_ENABLED=false (404, like any unknown path).
 */

export interface MetricsAccess {
  enabled: boolean;
  /** Bearer token that may scrape from anywhere. */
  token: string | undefined;
  /** CIDRs (or addresses) that may scrape without a token; null = anyone. */
  allowedNetworks: readonly string[] | null;
}

export type MetricsHandler = (req: IncomingMessage, res: ServerResponse) => void;

/** Parses `10.0.0.0/8`, `::1/128`, `192.168.1.7` into a BlockList; throws on anything else. */
export function networkList(cidrs: readonly string[]): BlockList {
  const list = new BlockList();
  for (const cidr of cidrs) {
    const [address = '', prefixText] = cidr.split('/');
    const type = isIPv4(address) ? 'ipv4' : isIPv6(address) ? 'ipv6' : null;
    const prefix = prefixText === undefined ? (type === 'ipv4' ? 32 : 128) : Number(prefixText);
    if (!type || !Number.isInteger(prefix) || prefix < 0 || prefix > (type === 'ipv4' ? 32 : 128))
      throw new Error(`not a network: ${cidr}`);
    list.addSubnet(address, prefix, type);
  }
  return list;
}

export function createMetricsHandler(access: MetricsAccess, prometheus: () => PrometheusExporter | null): MetricsHandler | null {
  if (!access.enabled) return null;
  const networks = access.allowedNetworks ? networkList(access.allowedNetworks) : null;
  const token = access.token ? Buffer.from(access.token) : null;
  const open = !networks && !token;
  return (req, res) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET' }).end();
      return;
    }
    if (!open && !fromAllowedNetwork(req, networks) && !hasToken(req, token)) {
      res.writeHead(token ? 401 : 403, { 'content-type': 'text/plain', ...(token ? { 'www-authenticate': 'Bearer' } : {}) });
      res.end(token ? 'a bearer token is required for /metrics\n' : '/metrics is not served to this network\n');
      return;
    }
    const exporter = prometheus();
    if (!exporter) {
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }).end('');
      return;
    }
    exporter.getMetricsRequestHandler(req, res);
  };
}

function fromAllowedNetwork(req: IncomingMessage, networks: BlockList | null): boolean {
  if (!networks) return false;
  let address = req.socket.remoteAddress ?? '';
  if (address.startsWith('::ffff:') && isIPv4(address.slice(7))) address = address.slice(7);
  const type = isIPv4(address) ? 'ipv4' : isIPv6(address) ? 'ipv6' : null;
  return type !== null && networks.check(address, type);
}

function hasToken(req: IncomingMessage, token: Buffer | null): boolean {
  if (!token) return false;
  const given = /^Bearer (.+)$/i.exec(req.headers.authorization ?? '')?.[1];
  if (!given) return false;
  const bytes = Buffer.from(given);
  return bytes.length === token.length && timingSafeEqual(bytes, token);
}
