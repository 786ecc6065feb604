import type { IncomingMessage } from 'node:http';

/**
 * The address of the client a request comes from, for limits per IP (failed authentications).
 * With `trustedHops` proxies in front (TRUST_PROXY_HOPS), each appending the address it received
 * the request from to `X-Forwarded-For`, the client is that many hops from the socket's peer;
 * entries further left were written by the client and are never trusted.
 */
export function clientIp(req: IncomingMessage, trustedHops: number): string {
  const peer = req.socket.remoteAddress ?? 'unknown';
  if (trustedHops === 0) return normalise(peer);
  const header = req.headers['x-forwarded-for'];
  const forwarded = (Array.isArray(header) ? header.join(',') : (header ?? ''))
    .split(',')
    .map((entry) => entry.trim())
    .filter(Boolean);
  // nearest first: the peer (the last proxy), then what each proxy appended, right to left
  const hops = [peer, ...forwarded.reverse()];
  return normalise(hops[Math.min(trustedHops, hops.length - 1)] as string);
}

/** `::ffff:10.0.0.1` (an IPv4 peer on a dual-stack socket) and `10.0.0.1` are one client. */
function normalise(address: string): string {
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address;
}
