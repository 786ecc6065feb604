import { createRemoteJWKSet, type JWTPayload, jwtVerify, SignJWT } from 'jose';
import { z } from 'zod';
import type { Principal, Role } from './principal.ts';

/**
 * Bearer tokens. Claims: `role` (user | admin | machine | service); `sub` (the user's UUID for
 * users, any stable id otherwise); `machine_id` for machines (falls back to `sub`).
 * HS256 with a shared secret, or a JWKS URL with issuer and audience for production.
 */

export const TOKEN_ISSUER = 'lora-vault';
const UUID = z.uuid();
const MACHINE_ID = /^[A-Za-z0-9._:-]{1,128}$/;

export class InvalidTokenError extends Error {
  override name = 'InvalidTokenError';
}

export interface TokenVerifierOptions {
  secret?: string | undefined;
  jwksUrl?: string | undefined;
  issuer?: string | undefined;
  audience?: string | undefined;
}

export type TokenVerifier = (token: string) => Promise<Principal>;

export function createTokenVerifier(options: TokenVerifierOptions): TokenVerifier {
  const verifyOptions = {
    issuer: options.issuer ?? (options.jwksUrl ? undefined : TOKEN_ISSUER),
    audience: options.audience,
    clockTolerance: 5,
    requiredClaims: ['exp'],
  };
  const verifyWith = options.jwksUrl
    ? (() => {
        const jwks = createRemoteJWKSet(new URL(options.jwksUrl));
        return (token: string) => jwtVerify(token, jwks, verifyOptions);
      })()
    : (() => {
        if (!options.secret) throw new Error('token verifier needs a secret or a JWKS URL');
        const key = new TextEncoder().encode(options.secret);
        return (token: string) => jwtVerify(token, key, { ...verifyOptions, algorithms: ['HS256'] });
      })();
  return async (token) => {
    let payload: JWTPayload;
    try {
      ({ payload } = await verifyWith(token));
    } catch (error) {
      throw new InvalidTokenError(`invalid token: ${(error as Error).message}`, { cause: error });
    }
    return principalFromClaims(payload);
  };
}

export function principalFromClaims(payload: JWTPayload): Principal {
  const role = payload.role;
  const sub = typeof payload.sub === 'string' ? payload.sub : undefined;
  switch (role) {
    case 'user':
      if (!sub || !UUID.safeParse(sub).success) throw new InvalidTokenError('user token needs a UUID sub');
      return { role, userId: sub.toLowerCase() };
    case 'machine': {
      const machineId = typeof payload.machine_id === 'string' ? payload.machine_id : sub;
      if (!machineId || !MACHINE_ID.test(machineId))
        throw new InvalidTokenError('machine token needs a machine_id of [A-Za-z0-9._:-]{1,128}');
      return { role, machineId };
    }
    case 'admin':
    case 'service':
      return { role, subject: sub ?? role };
    default:
      throw new InvalidTokenError('token has no known role');
  }
}

export interface TokenClaims {
  role: Role;
  sub: string;
  machineId?: string;
}

/** Signs an HS256 bearer token (dev tokens, the `token` script, tests). */
export async function signToken(secret: string, claims: TokenClaims, ttlSeconds = 30 * 24 * 3600): Promise<string> {
  const jwt = new SignJWT({ role: claims.role, ...(claims.machineId ? { machine_id: claims.machineId } : {}) })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setSubject(claims.sub)
    .setIssuer(TOKEN_ISSUER)
    .setIssuedAt()
    .setExpirationTime(Math.floor(Date.now() / 1000) + ttlSeconds);
  return jwt.sign(new TextEncoder().encode(secret));
}
