import { errors as joseErrors, jwtVerify, SignJWT } from 'jose';
import { z } from 'zod';

/**
 * Job grants: short-lived HS256 tokens naming one user and one job, minted by the dispatcher
 * (`createJobGrant`) and handed to the machine that runs the job. A machine needs one for user U
 * before it can learn anything about U's LoRAs.
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

export function createGrantSigner(secret: string): GrantSigner {
  const key = new TextEncoder().encode(secret);
  return {
    async sign({ userId, jobId, ttlSeconds }) {
      const exp = Math.floor(Date.now() / 1000) + ttlSeconds;
      const token = await new SignJWT({ job_id: jobId })
        .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
        .setSubject(userId)
        .setAudience(GRANT_AUDIENCE)
        .setIssuer(GRANT_ISSUER)
        .setIssuedAt()
        .setExpirationTime(exp)
        .sign(key);
      return { token, grant: { userId, jobId, expiresAt: new Date(exp * 1000) } };
    },
    async verify(token) {
      if (!token) throw new GrantError('missing');
      try {
        const { payload } = await jwtVerify(token, key, {
          audience: GRANT_AUDIENCE,
          issuer: GRANT_ISSUER,
          algorithms: ['HS256'],
        });
        const claims = claimsSchema.parse(payload);
        return { userId: claims.sub.toLowerCase(), jobId: claims.job_id, expiresAt: new Date(claims.exp * 1000) };
      } catch (error) {
        if (error instanceof joseErrors.JWTExpired) throw new GrantError('expired');
        if (error instanceof joseErrors.JWSSignatureVerificationFailed) throw new GrantError('bad-signature');
        throw new GrantError('malformed');
      }
    },
  };
}
