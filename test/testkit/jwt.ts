import { createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';
import { calculateJwkThumbprint, type JWTPayload, SignJWT, UnsecuredJWT } from 'jose';
import { TEST_GRANT_KEY_PEM } from './server.ts';

/**
 * Odd tokens for authentication tests: signed with any secret/algorithm/claims, unsigned
 * (`alg: none`), or tampered. Claim shapes mirror server/auth/tokens.ts (bearer tokens) and
 * server/auth/grants.ts (job grants); nothing here is imported from the server on purpose.
 */

export const BEARER_ISSUER = 'lora-vault';
export const GRANT_ISSUER = 'lora-vault';
export const GRANT_AUDIENCE = 'lora-vault:job-grant';

const nowSeconds = () => Math.floor(Date.now() / 1000);

export interface RawJwtOptions {
  /** HMAC secret; default: a secret the server does not know. */
  secret: string;
  /** Claims written as given (role, sub, machine_id, job_id, ...). */
  claims?: JWTPayload & Record<string, unknown>;
  /** `iss`; null = omitted. Default 'lora-vault'. */
  issuer?: string | null;
  /** `aud`; default omitted. */
  audience?: string;
  /** Seconds relative to now; null = no `exp`. Default +3600. */
  expiresIn?: number | null;
  /** `nbf`, seconds relative to now. */
  notBeforeIn?: number;
  alg?: 'HS256' | 'HS384' | 'HS512';
}

/** An HMAC-signed JWT with exactly the claims asked for. */
export async function signRawJwt(options: RawJwtOptions): Promise<string> {
  const now = nowSeconds();
  const jwt = new SignJWT({ ...(options.claims ?? {}) }).setProtectedHeader({ alg: options.alg ?? 'HS256', typ: 'JWT' }).setIssuedAt(now);
  const issuer = options.issuer === undefined ? BEARER_ISSUER : options.issuer;
  if (issuer !== null) jwt.setIssuer(issuer);
  if (options.audience) jwt.setAudience(options.audience);
  const expiresIn = options.expiresIn === undefined ? 3600 : options.expiresIn;
  if (expiresIn !== null) jwt.setExpirationTime(now + expiresIn);
  if (options.notBeforeIn !== undefined) jwt.setNotBefore(now + options.notBeforeIn);
  return jwt.sign(new TextEncoder().encode(options.secret));
}

/** `{"alg":"none"}` + payload + empty signature: what a forger without the key would send. */
export function unsignedJwt(claims: JWTPayload & Record<string, unknown>, issuer: string | null = BEARER_ISSUER): string {
  const jwt = new UnsecuredJWT({ ...claims }).setIssuedAt().setExpirationTime(nowSeconds() + 3600);
  if (issuer !== null) jwt.setIssuer(issuer);
  return jwt.encode();
}

/** Replaces a signed token's payload (keeping its header and signature): a tampered token. */
export function withPayload(token: string, patch: Record<string, unknown>): string {
  const [header, payload, signature] = token.split('.');
  if (!header || !payload || signature === undefined) throw new Error('not a compact JWS');
  const claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as Record<string, unknown>;
  const tampered = Buffer.from(JSON.stringify({ ...claims, ...patch }), 'utf8').toString('base64url');
  return `${header}.${tampered}.${signature}`;
}

/** The decoded payload of a compact JWT (no verification). */
export function decodePayload(token: string): Record<string, unknown> {
  const payload = token.split('.')[1];
  if (!payload) throw new Error('not a compact JWT');
  return JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as Record<string, unknown>;
}

/** An Ed25519 private key with the kid the server gives it (the RFC 7638 thumbprint of its public JWK). */
export interface GrantSigningKey {
  key: KeyObject;
  kid: string;
}

/** A grant signing key from a PEM (default: the test servers' TEST_GRANT_KEY_PEM). */
export async function grantSigningKey(pem: string = TEST_GRANT_KEY_PEM): Promise<GrantSigningKey> {
  const key = createPrivateKey(pem);
  const { kty, crv, x } = createPublicKey(key).export({ format: 'jwk' });
  return { key, kid: await calculateJwkThumbprint({ kty: kty as string, crv: crv as string, x: x as string }) };
}

/** The decoded protected header of a compact JWS. */
export function decodeHeader(token: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(token.split('.')[0] ?? '', 'base64url').toString('utf8')) as Record<string, unknown>;
}

/**
 * A job grant as server/auth/grants.ts mints it (EdDSA, `kid` header), with any key, kid, expiry,
 * audience or subject. Default key: the test servers'. `hmacSecret`: signed HS256 with it instead
 * (the alg-swap forgery: a public key used as an HMAC secret).
 */
export async function signGrant(options: {
  userId: string;
  jobId?: string;
  expiresIn?: number;
  audience?: string;
  issuer?: string | null;
  signer?: GrantSigningKey;
  /** The header's kid; default the signer's; null = none. */
  kid?: string | null;
  hmacSecret?: Uint8Array | string;
}): Promise<string> {
  const signer = options.signer ?? (await grantSigningKey());
  const kid = options.kid === undefined ? signer.kid : options.kid;
  const now = Math.floor(Date.now() / 1000);
  const jwt = new SignJWT({ job_id: options.jobId ?? 'job-test' })
    .setProtectedHeader({ alg: options.hmacSecret ? 'HS256' : 'EdDSA', typ: 'JWT', ...(kid === null ? {} : { kid }) })
    .setSubject(options.userId)
    .setAudience(options.audience ?? GRANT_AUDIENCE)
    .setIssuedAt(now)
    .setExpirationTime(now + (options.expiresIn ?? 3600));
  const issuer = options.issuer === undefined ? GRANT_ISSUER : options.issuer;
  if (issuer !== null) jwt.setIssuer(issuer);
  const secret = typeof options.hmacSecret === 'string' ? new TextEncoder().encode(options.hmacSecret) : options.hmacSecret;
  return jwt.sign(secret ?? signer.key);
}

/** `alg: none` grant claims (with a kid header if given): unsigned. */
export function unsignedGrant(userId: string, kid?: string): string {
  const now = Math.floor(Date.now() / 1000);
  const header = { alg: 'none', typ: 'JWT', ...(kid ? { kid } : {}) };
  const claims = { sub: userId, job_id: 'job-test', aud: GRANT_AUDIENCE, iss: GRANT_ISSUER, iat: now, exp: now + 3600 };
  return `${Buffer.from(JSON.stringify(header)).toString('base64url')}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.`;
}
