import { Redis } from 'ioredis';
import { type RateLimiterAbstract, RateLimiterMemory, RateLimiterRedis, RateLimiterRes } from 'rate-limiter-flexible';
import type { Principal } from '../auth/principal.ts';
import type { RateLimitConfig, RateLimitsConfig } from '../config.ts';
import { RateLimitedError, TooManyUploadsError } from '../domain/errors.ts';

/**
 * The rate limits of API.md "Rate limits", with rate-limiter-flexible: fixed windows per key, in
 * this process's memory, or in Redis when `REDIS_URL` is set so that a limit holds across replicas.
 * With Redis unreachable, each limit falls back to this process's memory (the library's insurance
 * limiter) rather than refusing everyone or waiting: limits then hold per replica until it is back.
 */

/** The limits, each with its own key space. */
export const Limit = {
  /** Uploads started, per user. */
  UPLOADS: 'uploads',
  /** Mutations (root fields), per user. */
  USER_MUTATIONS: 'user-mutations',
  /** Mutations (root fields), per machine. */
  MACHINE_MUTATIONS: 'machine-mutations',
  /** Job grants minted, per service (or admin). */
  GRANTS: 'grants',
  /** Failed authentications, per client IP. */
  AUTH_FAILURES: 'auth-failures',
  /** WebSocket connections opened, per principal. */
  WS_CONNECTIONS: 'ws-connections',
} as const;
export type Limit = (typeof Limit)[keyof typeof Limit];

/** What each limit counts, for the refusal's message. */
const WHAT: Record<Limit, string> = {
  uploads: 'uploads started',
  'user-mutations': 'mutations',
  'machine-mutations': 'mutations from this machine',
  grants: 'job grants minted',
  'auth-failures': 'failed authentications from this address',
  'ws-connections': 'WebSocket connections opened',
};

const KEY_PREFIX = 'lora-vault:rl';

export interface RateLimitsHandle {
  limits: RateLimits;
  connect(): Promise<void>;
  close(): Promise<void>;
}

export interface RateLimitsOptions {
  config: RateLimitsConfig;
  /** Redis for limits across replicas; unset = this process's memory. */
  redisUrl?: string | undefined;
  /** Uploads one user may run at once; held across replicas with Redis (per process, exactly, by UploadSlots). */
  uploadsPerUser: number;
  /** How long a running upload may hold its place if its release never comes (a crashed replica). */
  uploadLeaseSeconds: number;
  onError?: (error: Error) => void;
}

export function createRateLimits(options: RateLimitsOptions): RateLimitsHandle {
  // No offline queue: while Redis is unreachable a command fails at once, and the limiter falls
  // back to memory instead of holding the request until Redis returns.
  const redis = options.redisUrl
    ? new Redis(options.redisUrl, { lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 1, enableAutoPipelining: true })
    : undefined;
  redis?.on('error', (error: Error) => options.onError?.(error));
  const limiter = (name: string, limit: RateLimitConfig, insurance = true): RateLimiterAbstract => {
    const base = { keyPrefix: `${KEY_PREFIX}:${name}`, points: limit.points, duration: limit.windowSeconds };
    if (!redis) return new RateLimiterMemory(base);
    return new RateLimiterRedis({
      ...base,
      storeClient: redis,
      rejectIfRedisNotReady: true,
      ...(insurance ? { insuranceLimiter: new RateLimiterMemory(base) } : {}),
    });
  };
  const { config } = options;
  const limiters = Object.fromEntries(
    (
      [
        [Limit.UPLOADS, config.uploads],
        [Limit.USER_MUTATIONS, config.userMutations],
        [Limit.MACHINE_MUTATIONS, config.machineMutations],
        [Limit.GRANTS, config.grants],
        [Limit.AUTH_FAILURES, config.authFailures],
        [Limit.WS_CONNECTIONS, config.wsConnections],
      ] as const
    ).map(([name, limit]) => [name, { limit, limiter: limiter(name, limit) }]),
  ) as Record<Limit, { limit: RateLimitConfig; limiter: RateLimiterAbstract }>;
  // Uploads running per user across replicas: a place taken at the start and given back at the
  // end. Without Redis, UploadSlots counts them exactly in this process; no memory fallback here
  // (a place taken in Redis must be given back there).
  const running = redis
    ? limiter('uploads-running', { points: options.uploadsPerUser, windowSeconds: options.uploadLeaseSeconds }, false)
    : undefined;
  const limits = new RateLimits(limiters, running, options.uploadsPerUser, options.onError);
  return {
    limits,
    async connect() {
      await redis?.connect();
    },
    async close() {
      await redis?.quit().catch(() => redis.disconnect());
    },
  };
}

export class RateLimits {
  constructor(
    private readonly limiters: Record<Limit, { limit: RateLimitConfig; limiter: RateLimiterAbstract }>,
    private readonly running: RateLimiterAbstract | undefined,
    private readonly uploadsPerUser: number,
    private readonly onError: ((error: Error) => void) | undefined,
  ) {}

  /** Counts one for `key` under `limit`, or throws RATE_LIMITED with the seconds until its window ends. */
  async consume(limit: Limit, key: string): Promise<void> {
    try {
      await this.limiters[limit].limiter.consume(key);
    } catch (rejection) {
      if (rejection instanceof RateLimiterRes) throw new RateLimitedError(secondsOf(rejection), WHAT[limit]);
      throw rejection;
    }
  }

  /** Gives back one point taken by `consume` (the operation was refused for another reason). */
  async refund(limit: Limit, key: string): Promise<void> {
    await this.limiters[limit].limiter.reward(key).catch((error: Error) => this.onError?.(error));
  }

  /** Counts one for `key` without refusing (e.g. a failed authentication). */
  async count(limit: Limit, key: string): Promise<void> {
    await this.limiters[limit].limiter.penalty(key).catch((error: Error) => this.onError?.(error));
  }

  /** Seconds until `key` may pass again when its window is used up under `limit`, else null. */
  async exhausted(limit: Limit, key: string): Promise<number | null> {
    const { limiter, limit: config } = this.limiters[limit];
    const res = await limiter.get(key).catch((error: Error) => {
      this.onError?.(error);
      return null; // the store is down: let the request through, as the memory fallback would have nothing
    });
    return res && res.consumedPoints >= config.points ? secondsOf(res) : null;
  }

  /**
   * The per-principal mutation limit, counted once per root mutation field (schema/rate-limit-plugin.ts):
   * users and machines each under their own budget; services (whose only mutation, grant minting, has
   * its own limit) and admins are not limited (docs/decisions.md).
   */
  async mutation(principal: Principal): Promise<void> {
    if (principal.role === 'user') await this.consume(Limit.USER_MUTATIONS, principal.userId);
    else if (principal.role === 'machine') await this.consume(Limit.MACHINE_MUTATIONS, principal.machineId);
  }

  /**
   * Takes one of the user's places for a running upload across replicas (TOO_MANY_UPLOADS, scope
   * USER, when none is free); returns the release, run once in every outcome. Without Redis this
   * is a no-op (UploadSlots counts exactly in the one process). A Redis failure lets the upload
   * through (UploadSlots still limits it on this replica).
   */
  async takeUploadPlace(userId: string): Promise<() => void> {
    const running = this.running;
    if (!running) return () => {};
    try {
      await running.consume(userId);
    } catch (rejection) {
      if (rejection instanceof RateLimiterRes) {
        // a refused consume has still counted itself: give that back, or the place stays taken
        await running.reward(userId).catch((error: Error) => this.onError?.(error));
        throw new TooManyUploadsError('USER', this.uploadsPerUser);
      }
      this.onError?.(rejection as Error);
      return () => {};
    }
    let released = false;
    return () => {
      if (released) return;
      released = true;
      void running
        .reward(userId)
        // the key expired while the upload ran (it outlived the lease): never go below zero
        .then((res) => (res.consumedPoints < 0 ? running.delete(userId) : undefined))
        .catch((error: Error) => this.onError?.(error));
    };
  }
}

function secondsOf(res: RateLimiterRes): number {
  return Math.max(1, Math.ceil(res.msBeforeNext / 1000));
}
