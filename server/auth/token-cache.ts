import { decodeJwt } from 'jose';
import type { Principal } from './principal.ts';
import type { TokenVerifier } from './tokens.ts';

/**
 * Verified bearer tokens remembered for a while, so a client sending the same token on every
 * request pays the signature check once (bench:api: the HMAC verify through WebCrypto was the
 * largest per-request cost after SQL). A token is served from here until the earlier of its
 * `exp` and `maxAgeMs` after it was verified (so a key removed from a JWKS stops working within
 * that); failures are not remembered. At most `max` tokens, the oldest forgotten first.
 */
export function cachedTokenVerifier(verify: TokenVerifier, options: { max?: number; maxAgeMs?: number } = {}): TokenVerifier {
  const max = options.max ?? 10_000;
  const maxAgeMs = options.maxAgeMs ?? 60_000;
  const verified = new Map<string, { principal: Principal; until: number }>();
  return async (token) => {
    const now = Date.now();
    const hit = verified.get(token);
    if (hit && hit.until > now) return hit.principal;
    if (hit) verified.delete(token);
    const principal = await verify(token);
    const exp = decodeJwt(token).exp; // verified: exp is a required claim
    const until = Math.min(typeof exp === 'number' ? exp * 1000 : now, now + maxAgeMs);
    if (until > now) {
      if (verified.size >= max) verified.delete(verified.keys().next().value as string);
      verified.set(token, { principal: Object.freeze(principal), until });
    }
    return principal;
  };
}
