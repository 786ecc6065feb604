import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type CacheRow, type EvictionPlan, planAgeEviction, planSpaceEviction, type SpacePlanInput } from '../../cache-agent/eviction.ts';

const DAY = 86_400_000;
const NONE: ReadonlySet<string> = new Set();

function row(path: string, over: Partial<CacheRow> = {}): CacheRow {
  return { path, modelType: 'user_lora', sizeBytes: 10, lastUsedMs: null, downloadDateMs: null, protected: false, ignored: false, ...over };
}

/** Five 10-byte user LoRAs, a (oldest) … e (newest). */
const fiveRows = (): CacheRow[] => ['a', 'b', 'c', 'd', 'e'].map((p, i) => row(p, { lastUsedMs: 1000 + i }));

const paths = (rows: readonly CacheRow[]): string[] => rows.map((r) => r.path);

const spaceInput = (over: Partial<SpacePlanInput>): SpacePlanInput => ({
  rows: [],
  neededBytes: 0,
  maxCacheBytes: Number.POSITIVE_INFINITY,
  diskFreeBytes: Number.POSITIVE_INFINITY,
  minFreeBytes: 0,
  leased: NONE,
  ...over,
});

// ---- an independent model of the rules, for the properties ----

const isUserLora = (r: CacheRow): boolean => r.modelType === 'user_lora';
const sizeOf = (r: CacheRow): number => (Number.isFinite(r.sizeBytes) && r.sizeBytes > 0 ? r.sizeBytes : 0);
const sum = (rows: readonly CacheRow[]): number => rows.reduce((total, r) => total + sizeOf(r), 0);
const lastUse = (r: CacheRow): number => r.lastUsedMs ?? r.downloadDateMs ?? Number.NEGATIVE_INFINITY;

function candidatesInLruOrder(input: SpacePlanInput): CacheRow[] {
  const evictable = input.evictable ?? isUserLora;
  return input.rows
    .filter((r) => evictable(r) && !r.protected && !r.ignored && !input.leased.has(r.path))
    .sort((a, b) => (lastUse(a) !== lastUse(b) ? (lastUse(a) < lastUse(b) ? -1 : 1) : a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

/** Whether both limits hold once `victims` are gone and the new file is in. */
function holdsAfter(input: SpacePlanInput, victims: readonly CacheRow[]): boolean {
  const evictable = input.evictable ?? isUserLora;
  const gone = new Set(victims);
  const remaining = sum(input.rows.filter((r) => evictable(r) && !gone.has(r)));
  return (
    remaining + input.neededBytes <= input.maxCacheBytes && input.diskFreeBytes + sum(victims) >= input.minFreeBytes + input.neededBytes
  );
}

const sizeArb = fc.oneof(
  { weight: 12, arbitrary: fc.integer({ min: 0, max: 100 }) },
  { weight: 1, arbitrary: fc.constantFrom(-7, Number.NaN, Number.POSITIVE_INFINITY) },
);
const timeArb = fc.option(fc.integer({ min: 0, max: 20 }), { freq: 4 }); // a small range, for ties
const rarely = fc.integer({ min: 0, max: 5 }).map((n) => n === 0);

const rowsArb = fc
  .array(
    fc.record({
      name: fc.string({ maxLength: 2 }),
      modelType: fc.constantFrom('user_lora', 'user_lora', 'user_lora', 'shared_lora', 'checkpoint'),
      sizeBytes: sizeArb,
      lastUsedMs: timeArb,
      downloadDateMs: timeArb,
      protected: rarely,
      ignored: rarely,
      leased: rarely,
    }),
    { maxLength: 30 },
  )
  .map((specs) => {
    const leased = new Set<string>();
    const rows = specs.map(({ name, leased: isLeased, ...rest }, i): CacheRow => {
      const path = `${name}/${i}`;
      if (isLeased) leased.add(path);
      return { path, ...rest };
    });
    return { rows, leased };
  });

const spaceInputArb: fc.Arbitrary<SpacePlanInput> = fc
  .record({
    table: rowsArb,
    neededBytes: fc.integer({ min: 0, max: 200 }),
    maxCacheBytes: fc.oneof(
      { weight: 6, arbitrary: fc.integer({ min: 0, max: 800 }) },
      { weight: 1, arbitrary: fc.constant(Number.POSITIVE_INFINITY) },
    ),
    diskFreeBytes: fc.oneof(
      { weight: 6, arbitrary: fc.integer({ min: 0, max: 500 }) },
      { weight: 1, arbitrary: fc.constant(Number.POSITIVE_INFINITY) },
    ),
    minFreeBytes: fc.integer({ min: 0, max: 300 }),
    sharedToo: rarely,
  })
  .map(({ table, sharedToo, ...limits }) => ({
    rows: table.rows,
    leased: table.leased,
    ...limits,
    ...(sharedToo ? { evictable: (r: CacheRow) => r.modelType !== 'checkpoint' } : {}),
  }));

describe('planSpaceEviction', () => {
  it('evicts in LRU order exactly enough to fit the cap, counting the new file', () => {
    // 50 used + 10 new − 35 cap = 25 to free: three 10-byte files (two would leave 30 + 10 > 35).
    const plan = planSpaceEviction(spaceInput({ rows: fiveRows(), neededBytes: 10, maxCacheBytes: 35 }));
    expect(plan).toEqual({ victims: fiveRows().slice(0, 3), bytesFreed: 30, fits: true, shortfallBytes: 0, reason: 'cache-cap' });
    // 50 + 10 − 45 = 15 to free: exactly the two oldest.
    expect(paths(planSpaceEviction(spaceInput({ rows: fiveRows(), neededBytes: 10, maxCacheBytes: 45 })).victims)).toEqual(['a', 'b']);
    // 50 + 10 − 50 = 10: exactly one, landing on the cap.
    expect(paths(planSpaceEviction(spaceInput({ rows: fiveRows(), neededBytes: 10, maxCacheBytes: 50 })).victims)).toEqual(['a']);
  });

  it('returns the input rows themselves, oldest first, whatever the input order', () => {
    const rows = fiveRows().reverse();
    const plan = planSpaceEviction(spaceInput({ rows, neededBytes: 10, maxCacheBytes: 45 }));
    expect(plan.victims).toEqual([rows[4], rows[3]]);
    expect(plan.victims[0]).toBe(rows[4]);
  });

  it('needs nothing when both limits hold', () => {
    expect(
      planSpaceEviction(spaceInput({ rows: fiveRows(), neededBytes: 10, maxCacheBytes: 60, diskFreeBytes: 100, minFreeBytes: 90 })),
    ).toEqual({
      victims: [],
      bytesFreed: 0,
      fits: true,
      shortfallBytes: 0,
      reason: 'none-needed',
    });
    expect(planSpaceEviction(spaceInput({})).reason).toBe('none-needed');
  });

  it('spares protected, ignored, leased and shared rows, which still count toward the cap only when evictable', () => {
    const rows = [
      row('protected', { lastUsedMs: 1, protected: true }),
      row('ignored', { lastUsedMs: 2, ignored: true }),
      row('leased', { lastUsedMs: 3 }),
      row('shared', { lastUsedMs: 4, modelType: 'shared_lora', sizeBytes: 1000 }),
      row('x', { lastUsedMs: 5 }),
      row('y', { lastUsedMs: 6 }),
      row('z', { lastUsedMs: 7 }),
    ];
    // used = 6 × 10 = 60 (not the 1000-byte shared row); 60 + 10 − 50 = 20 → x and y.
    const plan = planSpaceEviction(spaceInput({ rows, neededBytes: 10, maxCacheBytes: 50, leased: new Set(['leased']) }));
    expect(paths(plan.victims)).toEqual(['x', 'y']);
    expect(plan.fits).toBe(true);
  });

  it('lets a custom policy make shared rows evictable', () => {
    const rows = [row('shared', { lastUsedMs: 1, modelType: 'shared_lora' }), ...fiveRows()];
    const plan = planSpaceEviction(
      spaceInput({ rows, neededBytes: 10, maxCacheBytes: 55, evictable: (r) => r.modelType !== 'checkpoint' }),
    );
    expect(paths(plan.victims)).toEqual(['shared', 'a']);
  });

  it('frees disk for min_free_space even when the cap holds', () => {
    // 20 new + 100 to keep free − 50 free = 70 → seven of ten 10-byte files.
    const rows = Array.from({ length: 10 }, (_, i) => row(`r${i}`, { lastUsedMs: i }));
    const plan = planSpaceEviction(spaceInput({ rows, neededBytes: 20, diskFreeBytes: 50, minFreeBytes: 100 }));
    expect(plan).toMatchObject({ bytesFreed: 70, fits: true, shortfallBytes: 0, reason: 'disk-free' });
    expect(paths(plan.victims)).toEqual(['r0', 'r1', 'r2', 'r3', 'r4', 'r5', 'r6']);
  });

  it('frees the larger of the two needs when both limits break', () => {
    // cap: 50 + 10 − 45 = 15; disk: 0 + 10 − 0 = 10 → 15 → two files.
    const plan = planSpaceEviction(spaceInput({ rows: fiveRows(), neededBytes: 10, maxCacheBytes: 45, diskFreeBytes: 0 }));
    expect(plan).toMatchObject({ bytesFreed: 20, fits: true, reason: 'cache-cap+disk-free' });
    // disk: 35 + 10 − 5 = 40 → four files, more than the cap's two.
    const diskHeavy = planSpaceEviction(
      spaceInput({ rows: fiveRows(), neededBytes: 10, maxCacheBytes: 45, diskFreeBytes: 5, minFreeBytes: 35 }),
    );
    expect(paths(diskHeavy.victims)).toEqual(['a', 'b', 'c', 'd']);
  });

  it('evicts nothing when the download cannot fit anyway', () => {
    const rows = [
      ...fiveRows()
        .slice(0, 3)
        .map((r) => ({ ...r, protected: true })),
      ...fiveRows().slice(3),
    ];
    // 50 + 10 − 20 = 40 to free, but only d and e (20 bytes) may go.
    expect(planSpaceEviction(spaceInput({ rows, neededBytes: 10, maxCacheBytes: 20 }))).toEqual({
      victims: [],
      bytesFreed: 0,
      fits: false,
      shortfallBytes: 20,
      reason: 'cache-cap',
    });
    // Not enough disk even with every candidate gone: 5 + 100 − 0 = 105 > 50.
    expect(planSpaceEviction(spaceInput({ rows: fiveRows(), neededBytes: 100, diskFreeBytes: 0, minFreeBytes: 5 }))).toMatchObject({
      victims: [],
      fits: false,
      shortfallBytes: 55,
      reason: 'disk-free',
    });
  });

  it('evicts nothing when the file alone is bigger than the cap', () => {
    expect(planSpaceEviction(spaceInput({ rows: fiveRows(), neededBytes: 40, maxCacheBytes: 39 }))).toEqual({
      victims: [],
      bytesFreed: 0,
      fits: false,
      shortfallBytes: 1, // 50 + 40 − 39 = 51 to free, 50 evictable
      reason: 'cache-cap',
    });
    expect(planSpaceEviction(spaceInput({ neededBytes: 40, maxCacheBytes: 39 }))).toMatchObject({
      victims: [],
      fits: false,
      shortfallBytes: 1,
    });
  });

  it('orders never-used rows by download date, then rows with neither first, ties by path', () => {
    const rows = [
      row('used-5', { lastUsedMs: 5, downloadDateMs: 0 }),
      row('downloaded-3', { downloadDateMs: 3 }),
      row('b-unknown'),
      row('a-unknown'),
      row('b-used-4', { lastUsedMs: 4 }),
      row('a-used-4', { lastUsedMs: 4, downloadDateMs: 100 }),
      row('nan', { lastUsedMs: Number.NaN, downloadDateMs: 3.5 }),
    ];
    const plan = planSpaceEviction(spaceInput({ rows, neededBytes: 0, maxCacheBytes: 0 }));
    expect(paths(plan.victims)).toEqual(['a-unknown', 'b-unknown', 'downloaded-3', 'nan', 'a-used-4', 'b-used-4', 'used-5']);
  });

  it('counts negative, NaN and infinite sizes as 0', () => {
    const rows = [
      row('neg', { lastUsedMs: 1, sizeBytes: -100 }),
      row('nan', { lastUsedMs: 2, sizeBytes: Number.NaN }),
      row('inf', { lastUsedMs: 3, sizeBytes: Number.POSITIVE_INFINITY }),
      row('real', { lastUsedMs: 4, sizeBytes: 10 }),
    ];
    // used = 10; 10 + 5 − 10 = 5: the zero-sized rows go first (LRU) but only 'real' frees anything.
    const plan = planSpaceEviction(spaceInput({ rows, neededBytes: 5, maxCacheBytes: 10 }));
    expect(plan).toMatchObject({ bytesFreed: 10, fits: true });
    expect(paths(plan.victims)).toEqual(['neg', 'nan', 'inf', 'real']);
  });

  it.each([
    ['neededBytes', { neededBytes: -1 }],
    ['neededBytes', { neededBytes: Number.NaN }],
    ['neededBytes', { neededBytes: Number.POSITIVE_INFINITY }],
    ['minFreeBytes', { minFreeBytes: Number.NaN }],
    ['maxCacheBytes', { maxCacheBytes: -1 }],
    ['maxCacheBytes', { maxCacheBytes: Number.NaN }],
    ['diskFreeBytes', { diskFreeBytes: Number.NaN }],
  ])('refuses a bad %s (%j)', (name, over) => {
    expect(() => planSpaceEviction(spaceInput(over))).toThrow(new RegExp(name));
  });

  describe('properties', () => {
    const check = (name: string, predicate: (input: SpacePlanInput, plan: EvictionPlan) => void): void => {
      it(name, () => {
        fc.assert(
          fc.property(spaceInputArb, (input) => predicate(input, planSpaceEviction(input))),
          { numRuns: 500 },
        );
      });
    };

    check('(a) a plan that fits leaves the cap and the free-space rule satisfied', (input, plan) => {
      if (plan.fits) expect(holdsAfter(input, plan.victims)).toBe(true);
    });

    check('(b) victims are never protected, ignored, leased or outside the policy', (input, plan) => {
      const evictable = input.evictable ?? isUserLora;
      for (const v of plan.victims) {
        expect(input.rows).toContain(v);
        expect(v.protected || v.ignored || input.leased.has(v.path) || !evictable(v)).toBe(false);
      }
    });

    check('(c) minimal: without the last victim the plan would not fit', (input, plan) => {
      if (plan.victims.length > 0) expect(holdsAfter(input, plan.victims.slice(0, -1))).toBe(false);
    });

    check('(d) victims are a prefix of the candidates in LRU order', (input, plan) => {
      expect(plan.victims).toEqual(candidatesInLruOrder(input).slice(0, plan.victims.length));
    });

    check('fits exactly when evicting every candidate would make it fit; otherwise evicts nothing', (input, plan) => {
      expect(plan.fits).toBe(holdsAfter(input, candidatesInLruOrder(input)));
      if (!plan.fits) {
        expect(plan.victims).toEqual([]);
        expect(plan.shortfallBytes).toBeGreaterThan(0);
      } else expect(plan.shortfallBytes).toBe(0);
    });

    check('accounts bytes and reasons consistently', (input, plan) => {
      expect(plan.bytesFreed).toBe(sum(plan.victims));
      const evictable = input.evictable ?? isUserLora;
      const used = sum(input.rows.filter(evictable));
      const capBroken = used + input.neededBytes > input.maxCacheBytes;
      const diskBroken = input.minFreeBytes + input.neededBytes > input.diskFreeBytes;
      expect(plan.reason).toBe(
        capBroken && diskBroken ? 'cache-cap+disk-free' : capBroken ? 'cache-cap' : diskBroken ? 'disk-free' : 'none-needed',
      );
      if (plan.reason === 'none-needed') expect(plan.victims).toEqual([]);
      if (!plan.fits) {
        const need = Math.max(used + input.neededBytes - input.maxCacheBytes, input.minFreeBytes + input.neededBytes - input.diskFreeBytes);
        expect(plan.shortfallBytes).toBe(need - sum(candidatesInLruOrder(input)));
      }
    });

    it('matches the model on larger tables (deeper heaps, many ties)', () => {
      const bigInputArb = fc
        .record({
          table: fc.array(rowsArb, { maxLength: 40 }),
          neededBytes: fc.integer({ min: 0, max: 200 }),
          capShare: fc.double({ min: 0, max: 1, noNaN: true }),
        })
        .map(({ table, neededBytes, capShare }) => {
          const rows = table.flatMap((t, j) => t.rows.map((r) => ({ ...r, path: `${j}:${r.path}` })));
          const leased = new Set(table.flatMap((t, j) => [...t.leased].map((p) => `${j}:${p}`)));
          const used = sum(rows.filter(isUserLora));
          return spaceInput({ rows, leased, neededBytes, maxCacheBytes: Math.floor(used * capShare) });
        });
      fc.assert(
        fc.property(bigInputArb, (input) => {
          const plan = planSpaceEviction(input);
          const lru = candidatesInLruOrder(input);
          if (!plan.fits) expect(plan.victims).toEqual([]);
          else {
            expect(plan.victims).toEqual(lru.slice(0, plan.victims.length));
            expect(holdsAfter(input, plan.victims)).toBe(true);
            if (plan.victims.length > 0) expect(holdsAfter(input, plan.victims.slice(0, -1))).toBe(false);
          }
        }),
        { numRuns: 100 },
      );
    });

    it('does not depend on the order of the rows', () => {
      fc.assert(
        fc.property(
          spaceInputArb.chain((input) =>
            fc.tuple(fc.constant(input), fc.shuffledSubarray([...input.rows], { minLength: input.rows.length })),
          ),
          ([input, shuffled]) => {
            expect(planSpaceEviction({ ...input, rows: shuffled })).toEqual(planSpaceEviction(input));
          },
        ),
      );
    });
  });
});

describe('hard links: rows naming one file (contentKey)', () => {
  // a (oldest) and d are links of one 10-byte file; b, c, e are files of their own.
  const linked = (): CacheRow[] => fiveRows().map((r) => (r.path === 'a' || r.path === 'd' ? { ...r, contentKey: '1:42' } : r));

  it('counts a linked file once toward the cap', () => {
    // five rows, four files: 40 used + 10 new ≤ 50 → nothing to evict (fifty without the links)
    expect(planSpaceEviction(spaceInput({ rows: linked(), neededBytes: 10, maxCacheBytes: 50 }))).toMatchObject({
      victims: [],
      fits: true,
      reason: 'none-needed',
    });
    expect(planSpaceEviction(spaceInput({ rows: fiveRows(), neededBytes: 10, maxCacheBytes: 50 })).reason).toBe('cache-cap');
  });

  it('evicts all links of a file together, at the last use of any of them', () => {
    // 40 + 10 − 35 = 15 to free. The file of a and d was used when d was (1003): b (1001) and c
    // (1002) go first, freeing 20; a alone would have freed nothing.
    const plan = planSpaceEviction(spaceInput({ rows: linked(), neededBytes: 10, maxCacheBytes: 35 }));
    expect(paths(plan.victims)).toEqual(['b', 'c']);
    expect(plan.bytesFreed).toBe(20);
    // 40 + 10 − 15 = 35 to free: b, c, then a and d together (one file, 10 bytes), 30 < 35 → and e.
    const more = planSpaceEviction(spaceInput({ rows: linked(), neededBytes: 10, maxCacheBytes: 15 }));
    expect(paths(more.victims)).toEqual(['b', 'c', 'a', 'd', 'e']);
    expect(more.bytesFreed).toBe(40);
  });

  it('never evicts links of a file that a leased, protected or other-policy row keeps', () => {
    const leased = planSpaceEviction(spaceInput({ rows: linked(), neededBytes: 10, maxCacheBytes: 15, leased: new Set(['d']) }));
    expect(leased).toMatchObject({ victims: [], fits: false, shortfallBytes: 5 });
    const rows = [...linked(), row('shared', { modelType: 'shared_lora', contentKey: '1:42' })];
    const plan = planSpaceEviction(spaceInput({ rows, neededBytes: 10, maxCacheBytes: 25 }));
    // 40 + 10 − 25 = 25 to free: b, c, then e — not a and d (1003, before e), which would free
    // nothing while the shared row holds their file
    expect(paths(plan.victims)).toEqual(['b', 'c', 'e']);
  });

  it('age eviction frees a linked file only with its last link', () => {
    const now = 1000 + 30 * DAY;
    const rows = linked().map((r) => (r.path === 'd' ? { ...r, lastUsedMs: now } : r)); // d in use today
    const old = planAgeEviction({ rows, now, maxAgeDays: 7, leased: NONE });
    expect(paths(old.victims)).toEqual(['a', 'b', 'c', 'e']);
    expect(old.bytesFreed).toBe(30); // a's file stays with d
    const all = planAgeEviction({ rows: linked(), now, maxAgeDays: 7, leased: NONE });
    expect(all.bytesFreed).toBe(40); // a and d both go: their file once
  });
});

describe('planAgeEviction', () => {
  const now = Date.UTC(2025, 10, 13, 12);
  const rows = [
    row('fresh', { lastUsedMs: now - 29 * DAY }),
    row('stale', { lastUsedMs: now - 31 * DAY, downloadDateMs: now }),
    row('at-cutoff', { lastUsedMs: now - 30 * DAY }),
    row('never-used-old', { downloadDateMs: now - 40 * DAY, sizeBytes: 7 }),
    row('never-used-new', { downloadDateMs: now - DAY }),
    row('recent-use-old-download', { lastUsedMs: now - DAY, downloadDateMs: now - 400 * DAY }),
    row('unknown-age'),
    row('protected', { lastUsedMs: now - 100 * DAY, protected: true }),
    row('ignored', { lastUsedMs: now - 100 * DAY, ignored: true }),
    row('leased', { lastUsedMs: now - 100 * DAY }),
    row('shared', { lastUsedMs: now - 100 * DAY, modelType: 'shared_lora' }),
  ];
  const leased = new Set(['leased']);

  it('evicts evictable rows unused for longer than maxAgeDays, oldest first', () => {
    const plan = planAgeEviction({ rows, now, maxAgeDays: 30, leased });
    expect(paths(plan.victims)).toEqual(['never-used-old', 'stale']);
    expect(plan.bytesFreed).toBe(17);
  });

  it('leaves rows with no timestamp at all (unknown age)', () => {
    expect(paths(planAgeEviction({ rows, now: now + 10_000 * DAY, maxAgeDays: 1, leased }).victims)).not.toContain('unknown-age');
  });

  it('moves with now, and honours a custom policy', () => {
    expect(paths(planAgeEviction({ rows, now: now + 2 * DAY, maxAgeDays: 30, leased }).victims)).toEqual([
      'never-used-old',
      'stale',
      'at-cutoff',
      'fresh',
    ]);
    expect(paths(planAgeEviction({ rows, now, maxAgeDays: 30, leased, evictable: () => true }).victims)).toEqual([
      'shared',
      'never-used-old',
      'stale',
    ]);
  });

  it('is disabled by maxAgeDays ≤ 0 and refuses a non-finite now', () => {
    for (const maxAgeDays of [0, -1, Number.NaN])
      expect(planAgeEviction({ rows, now, maxAgeDays, leased })).toEqual({ victims: [], bytesFreed: 0 });
    expect(() => planAgeEviction({ rows, now: Number.NaN, maxAgeDays: 30, leased })).toThrow(RangeError);
  });

  it('evicts exactly the eligible rows older than the cutoff, oldest first (property)', () => {
    const inDays = (t: number | null): number | null => (t === null ? null : t * DAY);
    fc.assert(
      fc.property(rowsArb, fc.integer({ min: 0, max: 30 }), fc.integer({ min: -2, max: 20 }), (table, today, maxAgeDays) => {
        const rows = table.rows.map((r) => ({ ...r, lastUsedMs: inDays(r.lastUsedMs), downloadDateMs: inDays(r.downloadDateMs) }));
        const now = today * DAY;
        const plan = planAgeEviction({ rows, now, maxAgeDays, leased: table.leased });
        const expected = rows
          .filter((r) => {
            const t = r.lastUsedMs ?? r.downloadDateMs;
            const eligible = isUserLora(r) && !r.protected && !r.ignored && !table.leased.has(r.path);
            return maxAgeDays > 0 && eligible && t !== null && t < now - maxAgeDays * DAY;
          })
          .sort((a, b) => lastUse(a) - lastUse(b) || (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
        expect(plan.victims).toEqual(expected);
        expect(plan.bytesFreed).toBe(sum(expected));
      }),
    );
  });
});
