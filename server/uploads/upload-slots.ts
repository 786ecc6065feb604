import { TooManyUploadsError } from '../domain/errors.ts';
import { ConcurrencySlots } from '../limits/concurrency-slots.ts';

/**
 * Counts the uploads running in this process, per user and in all, and refuses one over either
 * limit (TOO_MANY_UPLOADS) before it reads a byte. `take` returns the release function, which
 * the caller runs once in every outcome (`finally`); releasing twice is harmless.
 */
export class UploadSlots {
  private readonly slots: ConcurrencySlots;

  constructor(limits: { perUser: number; perProcess: number }) {
    this.slots = new ConcurrencySlots({ perKey: limits.perUser, total: limits.perProcess });
  }

  take(userId: string): () => void {
    const taken = this.slots.take(userId);
    if (typeof taken !== 'function') throw new TooManyUploadsError(taken.refused, taken.limit);
    return taken;
  }

  /** Uploads running now (all users). */
  get active(): number {
    return this.slots.active;
  }
}
