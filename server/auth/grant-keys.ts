import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { JWK } from 'jose';

/**
 * The Ed25519 keys job grants are signed with (GRANT_SIGNING_KEY), and the public half every
 * machine verifies with (`GET /.well-known/jwks.json`).
 *
 * GRANT_SIGNING_KEY holds one of:
 * - a PEM private key (PKCS#8, `-----BEGIN PRIVATE KEY-----`), or several PEM blocks one after another;
 * - a JWK (`{"kty":"OKP","crv":"Ed25519","d":…,"x":…}`);
 * - a JWK Set (`{"keys":[…]}`).
 * The FIRST key signs new grants; every key is published. Later keys may be public only (no `d`):
 * an old key kept published so the grants it signed verify until they expire. A key's `kid` is its
 * JWK `kid` when given, else its RFC 7638 thumbprint. Rotation: put the new key first, keep the old
 * one after it for GRANT_MAX_TTL_SECONDS, then remove it.
 */

export interface GrantKey {
  kid: string;
  /** Present for keys that may sign (the first must). */
  privateKey: KeyObject | null;
  publicKey: KeyObject;
  /** The public JWK as published: kty, crv, x, kid, alg, use. */
  publicJwk: JWK & { kid: string };
}

export interface GrantKeySet {
  /** The key that signs (the first). */
  signing: GrantKey & { privateKey: KeyObject };
  /** Every published key, the signing key first. */
  keys: GrantKey[];
}

export class GrantKeyError extends Error {
  override name = 'GrantKeyError';
}

const PEM_BLOCK = /-----BEGIN ([A-Z ]+)-----[\s\S]+?-----END \1-----/g;

/** Parses GRANT_SIGNING_KEY (see above); throws GrantKeyError saying what is wrong (never the key). */
export function parseGrantKeys(text: string): GrantKeySet {
  // A PEM pasted into a one-line env file often arrives with literal "\n".
  const value = text.includes('-----BEGIN') && !text.includes('\n') ? text.replaceAll('\\n', '\n') : text.trim();
  const keys = value.startsWith('{') ? fromJson(value) : fromPem(value);
  if (keys.length === 0) throw new GrantKeyError('no key found: expected a PEM private key, a JWK or a JWK Set');
  const kids = new Set<string>();
  for (const key of keys) {
    if (kids.has(key.kid)) throw new GrantKeyError(`two keys share the kid ${JSON.stringify(key.kid)}`);
    kids.add(key.kid);
  }
  const first = keys[0] as GrantKey;
  if (!first.privateKey) throw new GrantKeyError('the first key signs new grants and must be a private key (a JWK with "d")');
  return { signing: { ...first, privateKey: first.privateKey }, keys };
}

function fromPem(value: string): GrantKey[] {
  const blocks = value.match(PEM_BLOCK) ?? [];
  if (blocks.length === 0) throw new GrantKeyError('not a PEM key, a JWK or a JWK Set');
  return blocks.map((pem, i) => {
    const isPublic = /^-----BEGIN PUBLIC KEY-----/.test(pem);
    try {
      return grantKey(isPublic ? null : createPrivateKey(pem), isPublic ? createPublicKey(pem) : null, undefined);
    } catch (error) {
      throw error instanceof GrantKeyError ? error : new GrantKeyError(`PEM block ${i + 1} is not a valid key`);
    }
  });
}

function fromJson(value: string): GrantKey[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(value);
  } catch {
    throw new GrantKeyError('not valid JSON (expected a JWK or a JWK Set)');
  }
  const list = isObject(parsed) && Array.isArray(parsed.keys) ? (parsed.keys as unknown[]) : [parsed];
  return list.map((jwk, i) => {
    if (!isObject(jwk) || jwk.kty !== 'OKP' || jwk.crv !== 'Ed25519' || typeof jwk.x !== 'string')
      throw new GrantKeyError(`key ${i + 1} is not an Ed25519 JWK (kty "OKP", crv "Ed25519")`);
    if (jwk.kid !== undefined && (typeof jwk.kid !== 'string' || jwk.kid.length === 0 || jwk.kid.length > 200))
      throw new GrantKeyError(`key ${i + 1}: kid must be a non-empty string`);
    try {
      const privateKey = typeof jwk.d === 'string' ? createPrivateKey({ key: jwk as never, format: 'jwk' }) : null;
      const publicKey = privateKey ? null : createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: jwk.x } as never, format: 'jwk' });
      return grantKey(privateKey, publicKey, jwk.kid as string | undefined);
    } catch (error) {
      throw error instanceof GrantKeyError ? error : new GrantKeyError(`key ${i + 1} is not a valid Ed25519 JWK`);
    }
  });
}

function grantKey(privateKey: KeyObject | null, publicKeyIn: KeyObject | null, kid: string | undefined): GrantKey {
  const publicKey = publicKeyIn ?? createPublicKey(privateKey as KeyObject);
  if (publicKey.asymmetricKeyType !== 'ed25519') throw new GrantKeyError(`grant keys must be Ed25519, not ${publicKey.asymmetricKeyType}`);
  const { x } = publicKey.export({ format: 'jwk' });
  const bare = { kty: 'OKP', crv: 'Ed25519', x: x as string };
  const keyId = kid ?? thumbprintSync(bare);
  return { kid: keyId, privateKey, publicKey, publicJwk: { ...bare, kid: keyId, alg: 'EdDSA', use: 'sig' } };
}

/** RFC 7638 thumbprint over {crv, kty, x} (what jose's calculateJwkThumbprint computes, synchronously). */
function thumbprintSync(jwk: { kty: string; crv: string; x: string }): string {
  return createHash('sha256')
    .update(JSON.stringify({ crv: jwk.crv, kty: jwk.kty, x: jwk.x }))
    .digest('base64url');
}

/** The published JWK Set: public keys only. */
export function publicJwks(set: GrantKeySet): { keys: GrantKey['publicJwk'][] } {
  return { keys: set.keys.map((k) => k.publicJwk) };
}

/** A new Ed25519 private key as PKCS#8 PEM (what GRANT_SIGNING_KEY takes; `npm run -s grant-key` prints one). */
export function generateGrantKeyPem(): string {
  return generateKeyPairSync('ed25519').privateKey.export({ format: 'pem', type: 'pkcs8' }) as string;
}

/**
 * The development key: generated once into `{DATA_DIR}/grant-signing-key.pem` (mode 0600), so grants
 * minted by one `npm start` still verify on the next (the kid stays the same).
 */
export async function readOrCreateDevGrantKey(dataDir: string): Promise<GrantKeySet> {
  const file = join(dataDir, 'grant-signing-key.pem');
  try {
    return parseGrantKeys(await readFile(file, 'utf8'));
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  await mkdir(dataDir, { recursive: true });
  const pem = generateGrantKeyPem();
  try {
    await writeFile(file, pem, { mode: 0o600, flag: 'wx' });
    return parseGrantKeys(pem);
  } catch (error) {
    // Another process created it first: use theirs.
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return parseGrantKeys(await readFile(file, 'utf8'));
    throw error;
  }
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
