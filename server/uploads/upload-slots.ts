import { TooManyUploadsError } from '../domain/errors.ts';

/**
 * Counts the uploads running in this process, per user and in all, and refuses one over either
 * limit (TOO_MANY_UPLOADS) before it reads a byte. `take` returns the release function, which
 * the caller runs once in every outcome (`finally`); releasing twice is harmless.
 */
export class UploadSlots {
  private total = 0;
  private readonly perUser = new Map<string, number>();

  constructor(private readonly limits: { perUser: number; perProcess: number }) {}

  take(userId: string): () => void {
    const mine = this.perUser.get(userId) ?? 0;
    if (mine >= this.limits.perUser) throw new TooManyUploadsError('USER', this.limits.perUser);
    if (this.total >= this.limits.perProcess) throw new TooManyUploadsError('PROCESS', this.limits.perProcess);
    this.total += 1;
    this.perUser.set(userId, mine + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.total -= 1;
      const left = (this.perUser.get(userId) ?? 1) - 1;
      if (left > 0) this.perUser.set(userId, left);
      else this.perUser.delete(userId);
    };
  }

  /** Uploads running now (all users). */
  get active(): number {
    return this.total;
  }
}
