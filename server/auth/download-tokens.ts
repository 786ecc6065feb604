import { createHash } from 'node:crypto';
import { createLocalJWKSet, jwtVerify, SignJWT } from 'jose';
import { z } from 'zod';
import { type GrantKeySet, publicJwks } from './grant-keys.ts';

/**
 * Owner download links (`createLoraDownload` → `GET /downloads/loras/<token>`): the token is a
 * short-lived capability, an EdDSA JWT signed with the job grants' keys (GRANT_SIGNING_KEY: the
 * same on every replica, rotated the same way) under its own audience, so a download token is
 * never a job grant and a grant never a download token. It names one LoRA, the exact stored
 * object it was made for (`obj`: a hash of container, blob path and snapshot — a hash, so the
 * link shows no storage name: a path another user's upload created would tell its holder that
 * somebody else stored the same file first), the file name the browser saves it under, and who
 * asked (`sub`, for the per-holder concurrency limit). Anyone may read the claims; only the
 * server can make them.
 */

const AUDIENCE = 'lora-vault:owner-download';
const ISSUER = 'lora-vault';

const claimsSchema = z.object({
  sub: z.string().min(1).max(200),
  lora: z.string().regex(/^\d{1,19}$/),
  obj: z.string().length(43),
  fn: z.string().min(1).max(300),
  exp: z.number(),
});

export interface DownloadClaims {
  /** Who asked for the link (a user id, or an admin's subject). */
  holder: string;
  loraId: string;
  /** `storedObjectTag` of the object the link reads. */
  objectTag: string;
  fileName: string;
  expiresAt: Date;
}

/** A hash naming one stored object exactly (container, path, snapshot) without revealing it. */
export function storedObjectTag(container: string, path: string, snapshot: string | null): string {
  return createHash('sha256')
    .update(JSON.stringify([container, path, snapshot ?? '']))
    .digest('base64url');
}

export interface DownloadTokens {
  sign(input: Omit<DownloadClaims, 'expiresAt'> & { ttlSeconds: number }): Promise<{ token: string; expiresAt: Date }>;
  /** The claims of a token this server made and that has not expired; null for anything else (forged, tampered, expired, malformed). */
  verify(token: string): Promise<DownloadClaims | null>;
}

export function createDownloadTokens(keys: GrantKeySet): DownloadTokens {
  const published = createLocalJWKSet(publicJwks(keys));
  return {
    async sign({ holder, loraId, objectTag, fileName, ttlSeconds }) {
      const exp = Math.floor(Date.now() / 1000) + ttlSeconds;
      const token = await new SignJWT({ lora: loraId, obj: objectTag, fn: fileName })
        .setProtectedHeader({ alg: 'EdDSA', typ: 'JWT', kid: keys.signing.kid })
        .setSubject(holder)
        .setAudience(AUDIENCE)
        .setIssuer(ISSUER)
        .setIssuedAt()
        .setExpirationTime(exp)
        .sign(keys.signing.privateKey);
      return { token, expiresAt: new Date(exp * 1000) };
    },
    async verify(token) {
      try {
        const { payload } = await jwtVerify(token, published, { audience: AUDIENCE, issuer: ISSUER, algorithms: ['EdDSA'] });
        const claims = claimsSchema.parse(payload);
        return {
          holder: claims.sub,
          loraId: claims.lora,
          objectTag: claims.obj,
          fileName: claims.fn,
          expiresAt: new Date(claims.exp * 1000),
        };
      } catch {
        return null;
      }
    },
  };
}
