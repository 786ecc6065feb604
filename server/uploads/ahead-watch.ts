import { AheadBreak } from './ahead-breaks.ts';
import type { ValidationAhead } from './validation-ahead.ts';

/**
 * The sessions this process validates ahead (validation-ahead.ts), each looked at every `pollMs`
 * until completion takes it, it breaks, it has validated everything, its session expires, or no
 * block arrived for `idleMs` (a client gone; completion then reads the whole file). At most `max`
 * at once per process, and `perUser` of one user's (each may spool a .pt up to MAX_UPLOAD_BYTES,
 * outside the upload-slot limits): beyond that, sessions are validated at completion as before.
 */

export interface AheadWatchOptions {
  max: number;
  pollMs: number;
  /** @default 2 */
  perUser?: number;
  /** @default 10 minutes */
  idleMs?: number;
}

interface Watched {
  ahead: ValidationAhead;
  userId: string;
  timer: NodeJS.Timeout | undefined;
  lastProgress: number;
  expiresAt: number;
}

export class AheadWatch {
  private readonly watched = new Map<string, Watched>();

  constructor(private readonly options: AheadWatchOptions) {}

  /** Starts watching a session (no-op when watched already or at the limit). */
  watch(sessionId: string, userId: string, expiresAt: Date, open: () => ValidationAhead): void {
    if (this.watched.has(sessionId) || this.watched.size >= this.options.max) return;
    let ofUser = 0;
    for (const w of this.watched.values()) if (w.userId === userId) ofUser++;
    if (ofUser >= (this.options.perUser ?? 2)) return;
    const entry: Watched = { ahead: open(), userId, timer: undefined, lastProgress: Date.now(), expiresAt: expiresAt.getTime() };
    this.watched.set(sessionId, entry);
    this.schedule(sessionId, entry);
  }

  /** Ends the watch and hands the session's validation over (after a step in flight). */
  async take(sessionId: string): Promise<ValidationAhead | undefined> {
    const entry = this.watched.get(sessionId);
    if (!entry) return undefined;
    this.watched.delete(sessionId);
    clearTimeout(entry.timer);
    await entry.ahead.idle();
    return entry.ahead;
  }

  /** Ends the watch and the validation (the session was aborted or failed). */
  drop(sessionId: string, reason: AheadBreak, detail?: string): void {
    const entry = this.watched.get(sessionId);
    if (!entry) return;
    this.watched.delete(sessionId);
    clearTimeout(entry.timer);
    entry.ahead.break(reason, detail);
  }

  get size(): number {
    return this.watched.size;
  }

  stop(): void {
    for (const id of [...this.watched.keys()]) this.drop(id, AheadBreak.STOPPING, 'the server is stopping');
  }

  private schedule(sessionId: string, entry: Watched): void {
    entry.timer = setTimeout(() => void this.look(sessionId, entry), this.options.pollMs);
    entry.timer.unref();
  }

  private async look(sessionId: string, entry: Watched): Promise<void> {
    if (this.watched.get(sessionId) !== entry) return;
    const now = Date.now();
    // all validated: nothing to look for in storage, only the time limits below
    if (!entry.ahead.complete && (await entry.ahead.step())) entry.lastProgress = now;
    if (this.watched.get(sessionId) !== entry) return; // taken or dropped meanwhile
    if (entry.ahead.brokenBy) return this.drop(sessionId, entry.ahead.brokenBy); // broken (and reported) already
    if (now > entry.expiresAt) return this.drop(sessionId, AheadBreak.EXPIRED, 'the session expired');
    if (now - entry.lastProgress > (this.options.idleMs ?? 600_000))
      return this.drop(sessionId, AheadBreak.IDLE, 'no block arrived for a while');
    this.schedule(sessionId, entry);
  }
}
