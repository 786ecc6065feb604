import { createLocalJWKSet, errors as joseErrors, jwtVerify, SignJWT } from 'jose';
import { z } from 'zod';
import { type GrantKeySet, publicJwks } from './grant-keys.ts';

/**
 * Job grants: short-lived EdDSA (Ed25519) tokens naming one user and one job, minted by the
 * dispatcher (`createJobGrant`) and handed to the machine that runs the job. A machine needs one for
 * user U before it can learn anything about U's LoRAs. Signed with GRANT_SIGNING_KEY's first key
 * (its `kid` in the header); verified against every published key (grant-keys.ts), EdDSA only.
 */

const GRANT_AUDIENCE = 'lora-vault:job-grant';
const GRANT_ISSUER = 'lora-vault';
const claimsSchema = z.object({ sub: z.uuid(), job_id: z.string().min(1), exp: z.number() });

export interface JobGrant {
  userId: string;
  jobId: string;
  expiresAt: Date;
}

export type GrantFailure = 'missing' | 'malformed' | 'expired' | 'bad-signature';

export class GrantError extends Error {
  override name = 'GrantError';
  constructor(readonly reason: GrantFailure) {
    super(`job grant ${reason}`);
  }
}

export interface GrantSigner {
  sign(input: { userId: string; jobId: string; ttlSeconds: number }): Promise<{ token: string; grant: JobGrant }>;
  verify(token: string | null | undefined): Promise<JobGrant>;
}

export function createGrantSigner(keys: GrantKeySet): GrantSigner {
  const { signing } = keys;
  const published = createLocalJWKSet(publicJwks(keys));
  return {
    async sign({ userId, jobId, ttlSeconds }) {
      const exp = Math.floor(Date.now() / 1000) + ttlSeconds;
      const token = await new SignJWT({ job_id: jobId })
        .setProtectedHeader({ alg: 'EdDSA', typ: 'JWT', kid: signing.kid })
        .setSubject(userId)
        .setAudience(GRANT_AUDIENCE)
        .setIssuer(GRANT_ISSUER)
        .setIssuedAt()
        .setExpirationTime(exp)
        .sign(signing.privateKey);
      return { token, grant: { userId, jobId, expiresAt: new Date(exp * 1000) } };
    },
    async verify(token) {
      if (!token) throw new GrantError('missing');
      try {
        const { payload } = await jwtVerify(token, published, {
          audience: GRANT_AUDIENCE,
          issuer: GRANT_ISSUER,
          algorithms: ['EdDSA'],
        });
        const claims = claimsSchema.parse(payload);
        return { userId: claims.sub.toLowerCase(), jobId: claims.job_id, expiresAt: new Date(claims.exp * 1000) };
      } catch (error) {
        if (error instanceof joseErrors.JWTExpired) throw new GrantError('expired');
        // another key, or a kid none of the published keys has
        if (error instanceof joseErrors.JWSSignatureVerificationFailed || error instanceof joseErrors.JWKSNoMatchingKey)
          throw new GrantError('bad-signature');
        throw new GrantError('malformed');
      }
    },
  };
}
