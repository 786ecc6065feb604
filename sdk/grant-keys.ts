/**
 * The public keys job grants are signed with, as the API publishes them at
 * `GET /.well-known/jwks.json` (a JWK Set of Ed25519 keys, `alg: EdDSA`). Machines verify every grant
 * against these offline; `LoraClient.getGrantKeys()` fetches them.
 */
import { LoraSdkError } from './errors.ts';

export interface GrantPublicKey {
  kty: 'OKP';
  crv: 'Ed25519';
  /** The public key (base64url). */
  x: string;
  /** Named in the `kid` header of every grant it signed. */
  kid: string;
  alg?: 'EdDSA';
  use?: 'sig';
}

export interface GrantKeySet {
  keys: GrantPublicKey[];
}

/** The JWK Set's address beside the GraphQL endpoint: `https://h/graphql` → `https://h/.well-known/jwks.json`. */
export function grantKeysUrl(graphqlUrl: string): string {
  return new URL('.well-known/jwks.json', graphqlUrl).toString();
}

/** The answer as a GrantKeySet: Ed25519 public keys with a kid only (anything else is left out). */
export function grantKeysFromResponse(status: number, text: string): GrantKeySet {
  if (status !== 200) {
    const retryable = status >= 500 || status === 429 || status === 408;
    throw LoraSdkError.network(`HTTP_${status}`, `Could not fetch the grant keys (HTTP ${status})`, { status, retryable });
  }
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    body = undefined;
  }
  const keys = (body as { keys?: unknown } | undefined)?.keys;
  if (!Array.isArray(keys)) {
    throw LoraSdkError.network('BAD_RESPONSE', 'The grant keys are not a JWK Set', { status, retryable: false });
  }
  return {
    keys: keys.filter(
      (k): k is GrantPublicKey =>
        typeof k === 'object' &&
        k !== null &&
        k.kty === 'OKP' &&
        k.crv === 'Ed25519' &&
        typeof k.x === 'string' &&
        typeof k.kid === 'string' &&
        !('d' in k) &&
        (k.alg === undefined || k.alg === 'EdDSA'),
    ),
  };
}
