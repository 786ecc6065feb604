/**
 * Counts what runs at once in this process, per key and in all (owner downloads streaming through
 * the API: OWNER_DOWNLOADS_PER_USER / _PER_PROCESS). `take` answers the release function, run once
 * in every outcome (releasing twice is harmless), or which limit refused.
 */
export type SlotRefusal = { refused: 'USER' | 'PROCESS'; limit: number };

export class ConcurrencySlots {
  private total = 0;
  private readonly perKey = new Map<string, number>();

  constructor(private readonly limits: { perKey: number; total: number }) {}

  take(key: string): (() => void) | SlotRefusal {
    const mine = this.perKey.get(key) ?? 0;
    if (mine >= this.limits.perKey) return { refused: 'USER', limit: this.limits.perKey };
    if (this.total >= this.limits.total) return { refused: 'PROCESS', limit: this.limits.total };
    this.total += 1;
    this.perKey.set(key, mine + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.total -= 1;
      const left = (this.perKey.get(key) ?? 1) - 1;
      if (left > 0) this.perKey.set(key, left);
      else this.perKey.delete(key);
    };
  }

  /** Slots held now (all keys). */
  get active(): number {
    return this.total;
  }
}
