import { createPublicKey, type KeyObject } from 'node:crypto';
import type { GrantKeySet } from '@lora-vault/sdk';
import { decodeProtectedHeader, errors as joseErrors, jwtVerify } from 'jose';
import type { Logger } from 'pino';
import { AgentError } from './errors.ts';

/**
 * Verifies job grants on the machine, offline: every grant, on hits and misses alike, against the
 * API's published Ed25519 keys (`GET /.well-known/jwks.json`, fetched through the SDK and cached).
 * EdDSA only: `alg: none`, HS256 (e.g. with the public key as an HMAC secret) and every other
 * algorithm are refused before any key is looked up. A grant naming a `kid` the cache does not hold
 * makes the agent fetch the keys again, at most once per `minRefreshMs` (a flood of unknown kids
 * costs the API one request per interval); keys older than `maxAgeMs` are refreshed in the
 * background while the cached ones keep serving, so hits never wait on the API.
 */

const GRANT_ISSUER = 'lora-vault';
const GRANT_AUDIENCE = 'lora-vault:job-grant';
const USER_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export interface GrantClaims {
  /** The user the grant names (lowercase). */
  sub: string;
  /** Expiry, seconds since the epoch. */
  exp: number;
  jobId: string;
}

export interface GrantKeySource {
  getGrantKeys(options?: { signal?: AbortSignal }): Promise<GrantKeySet>;
}

/** How long one fetch of the keys may take, retries included (a grant naming a new kid waits for it). */
const FETCH_TIMEOUT_MS = 15_000;

export interface GrantVerifierOptions {
  /** Where the keys come from (the SDK client); null = no API configured: no grant can be verified. */
  source: GrantKeySource | null;
  logger: Logger;
  /** The clock grants' `exp` is checked against (tests move it). */
  now: () => Date;
  /** Least time between two fetches of the keys (unknown kids, failures). */
  minRefreshMs: number;
  /** Keys this old are refreshed in the background on the next grant. */
  maxAgeMs: number;
}

export class GrantVerifier {
  private keys = new Map<string, KeyObject>();
  /** When the keys were last fetched successfully, and last tried (Date.now(), real time). */
  private fetchedAt: number | null = null;
  private triedAt: number | null = null;
  private inflight: Promise<void> | null = null;
  /** Fetches of the key set (tests and /stats read it). */
  readonly keyFetches = { started: 0, failed: 0 };

  constructor(private readonly options: GrantVerifierOptions) {}

  /** The grant's claims when it verifies; otherwise INVALID_GRANT (API_UNAVAILABLE when no key could ever be had). */
  async verify(grant: string): Promise<GrantClaims> {
    let header: { alg?: unknown; kid?: unknown };
    try {
      header = decodeProtectedHeader(grant);
    } catch {
      throw invalid('the job grant is malformed');
    }
    if (header.alg !== 'EdDSA')
      throw invalid(`the job grant's algorithm ${JSON.stringify(header.alg ?? null)} is not accepted (EdDSA only)`);
    if (typeof header.kid !== 'string' || header.kid === '') throw invalid('the job grant names no key (kid)');
    const key = await this.keyFor(header.kid);
    let payload: Record<string, unknown>;
    try {
      ({ payload } = await jwtVerify(grant, key, {
        algorithms: ['EdDSA'],
        issuer: GRANT_ISSUER,
        audience: GRANT_AUDIENCE,
        currentDate: this.options.now(),
      }));
    } catch (error) {
      if (error instanceof joseErrors.JWTExpired) throw invalid('the job grant has expired');
      if (error instanceof joseErrors.JWSSignatureVerificationFailed) throw invalid('the job grant does not verify (signature)');
      throw invalid('the job grant is malformed');
    }
    const { sub, exp, job_id: jobId } = payload;
    if (typeof sub !== 'string' || !USER_ID.test(sub) || typeof exp !== 'number' || typeof jobId !== 'string' || jobId === '')
      throw invalid('the job grant is malformed');
    return { sub: sub.toLowerCase(), exp, jobId };
  }

  private async keyFor(kid: string): Promise<KeyObject> {
    const { source, minRefreshMs, maxAgeMs } = this.options;
    if (!source)
      throw new AgentError('API_UNAVAILABLE', 'no API configured (LORA_VAULT_URL / LORA_VAULT_TOKEN): job grants cannot be verified');
    const now = Date.now();
    let key = this.keys.get(kid);
    if (key) {
      if (this.fetchedAt !== null && now - this.fetchedAt > maxAgeMs && this.mayFetch(now, minRefreshMs)) void this.refresh();
      return key;
    }
    if (this.inflight) await this.inflight;
    else if (this.mayFetch(now, minRefreshMs)) await this.refresh();
    key = this.keys.get(kid);
    if (key) return key;
    if (this.fetchedAt === null)
      throw new AgentError('API_UNAVAILABLE', 'the API grant keys could not be fetched: job grants cannot be verified yet', {
        retryable: true,
      });
    throw invalid(`the job grant is signed with a key the API does not publish (kid ${JSON.stringify(kid.slice(0, 100))})`);
  }

  private mayFetch(now: number, minRefreshMs: number): boolean {
    return this.inflight === null && (this.triedAt === null || now - this.triedAt >= minRefreshMs);
  }

  /** One fetch at a time; the new set replaces the old (a key the API stopped publishing is dropped). */
  private refresh(): Promise<void> {
    if (this.inflight) return this.inflight;
    const source = this.options.source as GrantKeySource;
    this.triedAt = Date.now();
    this.keyFetches.started++;
    this.inflight = source
      .getGrantKeys({ signal: AbortSignal.timeout(FETCH_TIMEOUT_MS) })
      .then((set) => {
        const keys = new Map<string, KeyObject>();
        for (const jwk of set.keys) {
          try {
            keys.set(jwk.kid, createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: jwk.x }, format: 'jwk' }));
          } catch {
            this.options.logger.warn({ kid: jwk.kid }, 'the API published a grant key that is not a valid Ed25519 key; ignored');
          }
        }
        this.keys = keys;
        this.fetchedAt = Date.now();
        this.options.logger.debug({ kids: [...keys.keys()] }, 'grant keys fetched');
      })
      .catch((error: unknown) => {
        this.keyFetches.failed++;
        this.options.logger.warn({ err: error }, 'could not fetch the API grant keys; keeping the ones cached');
      })
      .finally(() => {
        this.inflight = null;
      });
    return this.inflight;
  }
}

function invalid(message: string): AgentError {
  return new AgentError('INVALID_GRANT', message);
}
