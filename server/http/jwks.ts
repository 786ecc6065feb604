import type { IncomingMessage, ServerResponse } from 'node:http';
import { type GrantKeySet, publicJwks } from '../auth/grant-keys.ts';

/**
 * `GET /.well-known/jwks.json`: the public keys job grants verify with (every published key, the
 * signing one first). Public, no token; cacheable for a few minutes (agents refresh sooner when a
 * grant names a `kid` they do not know).
 */
export const JWKS_PATH = '/.well-known/jwks.json';

/** How long HTTP caches may keep the key set. */
export const JWKS_MAX_AGE_SECONDS = 300;

export function serveJwks(req: IncomingMessage, res: ServerResponse, keys: GrantKeySet): void {
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'application/json; charset=utf-8' });
    res.end(JSON.stringify({ error: 'method not allowed' }));
    return;
  }
  const body = JSON.stringify(publicJwks(keys));
  res.writeHead(200, {
    'content-type': 'application/jwk-set+json; charset=utf-8',
    'cache-control': `public, max-age=${JWKS_MAX_AGE_SECONDS}`,
    'content-length': Buffer.byteLength(body),
  });
  res.end(req.method === 'HEAD' ? undefined : body);
}
