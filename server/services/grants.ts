import type { GrantSigner, JobGrant } from '../auth/grants.ts';
import { GrantError } from '../auth/grants.ts';
import { actorOf, type Principal } from '../auth/principal.ts';
import type { Db } from '../db/client.ts';
import { InvalidGrantError, ValidationError } from '../domain/errors.ts';
import { jobGrantInput, parseArgs } from '../domain/validation.ts';
import { Limit, type RateLimits } from '../limits/rate-limits.ts';
import { assertAccountActive } from './accounts.ts';
import { AuditAction, audit } from './audit.ts';

/** Minting (dispatcher) and checking (machine requests) of job grants. */
export class GrantService {
  constructor(
    private readonly db: Db,
    private readonly signer: GrantSigner,
    private readonly maxTtlSeconds: number,
    private readonly limits: RateLimits,
  ) {}

  async create(principal: Principal, input: { userId: string; jobId: string; ttlSeconds: number }): Promise<JobGrant & { token: string }> {
    const args = parseArgs(jobGrantInput, input);
    const { role, id } = actorOf(principal);
    await this.limits.consume(Limit.GRANTS, `${role}:${id}`); // RATE_LIMITED, per service (or admin)
    if (args.ttlSeconds > this.maxTtlSeconds) {
      throw new ValidationError([{ path: 'ttlSeconds', message: `at most ${this.maxTtlSeconds}` }]);
    }
    await assertAccountActive(this.db, args.userId); // a deleted account gets no grants (ACCOUNT_DELETED)
    const { token, grant } = await this.signer.sign(args);
    await this.db.$transaction((tx) =>
      audit(tx, principal, {
        action: AuditAction.GRANT_CREATED,
        userId: grant.userId,
        details: { jobId: grant.jobId, expiresAt: grant.expiresAt },
      }),
    );
    return { ...grant, token };
  }

  /** The grant's user and job, or INVALID_GRANT (missing, forged, expired, malformed). */
  async check(token: string | null | undefined): Promise<JobGrant> {
    try {
      return await this.signer.verify(token);
    } catch (error) {
      if (error instanceof GrantError) throw new InvalidGrantError(error.reason);
      throw error;
    }
  }
}
