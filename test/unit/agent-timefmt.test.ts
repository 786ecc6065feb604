import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseCacheTime, toPythonIso } from '../../cache-agent/timefmt.ts';

/** Runs the enclosed tests with the process in time zone `tz` (Node re-reads TZ when it is assigned). */
function inTimeZone(tz: string): void {
  let saved: string | undefined;
  beforeAll(() => {
    saved = process.env.TZ;
    process.env.TZ = tz;
  });
  afterAll(() => {
    if (saved === undefined) delete process.env.TZ;
    else process.env.TZ = saved;
  });
}

const dates1971to2100 = fc.date({ min: new Date('1971-01-01T00:00:00Z'), max: new Date('2100-12-31T23:59:59.999Z'), noInvalidDate: true });

describe('toPythonIso', () => {
  inTimeZone('America/New_York');

  it('writes naive local time with six fraction digits', () => {
    expect(toPythonIso(new Date(2025, 10, 13, 12, 0, 0, 123))).toBe('2025-11-13T12:00:00.123000');
    expect(toPythonIso(new Date(2025, 10, 13, 12, 0, 0, 0))).toBe('2025-11-13T12:00:00.000000');
    expect(toPythonIso(new Date(2025, 0, 2, 3, 4, 5, 6))).toBe('2025-01-02T03:04:05.006000');
    // 17:00 UTC is noon in New York in November (EST, −05:00): local, not UTC.
    expect(toPythonIso(new Date('2025-11-13T17:00:00.000Z'))).toBe('2025-11-13T12:00:00.000000');
  });

  it('pads small years and refuses what Python cannot hold', () => {
    const year42 = new Date(2000, 5, 1, 8, 30);
    year42.setFullYear(42);
    expect(toPythonIso(year42)).toBe('0042-06-01T08:30:00.000000');
    expect(() => toPythonIso(new Date(Number.NaN))).toThrow(RangeError);
    expect(() => toPythonIso(new Date(10_000, 0, 1))).toThrow(RangeError);
  });
});

describe('parseCacheTime', () => {
  inTimeZone('America/New_York');

  it('reads Python naive isoformat as local time, with 0–6 fraction digits', () => {
    const noon = new Date(2025, 10, 13, 12, 0, 0).getTime();
    expect(parseCacheTime('2025-11-13T12:00:00')).toBe(noon);
    expect(parseCacheTime('2025-11-13T12:00:00.123456')).toBe(noon + 123);
    expect(parseCacheTime('2025-11-13T12:00:00.999999')).toBe(noon + 999); // truncated, not rounded into the next second
    expect(parseCacheTime('2025-11-13T12:00:00.5')).toBe(noon + 500);
    expect(parseCacheTime('2025-11-13T12:00:00.05')).toBe(noon + 50);
    expect(parseCacheTime('2025-11-13T12:00:00.123')).toBe(noon + 123);
    expect(parseCacheTime('2025-11-13T12:00:00.1234')).toBe(noon + 123);
    expect(noon).toBe(Date.UTC(2025, 10, 13, 17)); // really local: EST
    expect(parseCacheTime('2025-07-01T12:00:00')).toBe(Date.UTC(2025, 6, 1, 16)); // EDT
  });

  it('honours Z and ±HH:MM offsets', () => {
    expect(parseCacheTime('2025-11-13T12:00:00Z')).toBe(Date.UTC(2025, 10, 13, 12));
    expect(parseCacheTime('2025-11-13T12:00:00.250Z')).toBe(Date.UTC(2025, 10, 13, 12, 0, 0, 250));
    expect(parseCacheTime('2025-11-13T12:00:00+00:00')).toBe(Date.UTC(2025, 10, 13, 12));
    expect(parseCacheTime('2025-11-13T12:00:00.123456+05:30')).toBe(Date.UTC(2025, 10, 13, 6, 30, 0, 123));
    expect(parseCacheTime('2025-11-13T12:00:00-08:00')).toBe(Date.UTC(2025, 10, 13, 20));
    expect(parseCacheTime('2025-11-13 12:00:00+01:00')).toBe(Date.UTC(2025, 10, 13, 11));
  });

  it("reads SQLite's CURRENT_TIMESTAMP form as UTC", () => {
    expect(parseCacheTime('2025-11-13 12:00:00')).toBe(Date.UTC(2025, 10, 13, 12));
    expect(parseCacheTime('2025-11-13 12:00:00.250')).toBe(Date.UTC(2025, 10, 13, 12, 0, 0, 250));
  });

  it("reads a space-separated value with microseconds as Python's local time (SQLite writes at most 3 digits)", () => {
    expect(parseCacheTime('2025-11-13 12:00:00.123456')).toBe(new Date(2025, 10, 13, 12, 0, 0, 123).getTime());
  });

  it('reads numbers as epoch seconds below 1e11, else epoch milliseconds', () => {
    expect(parseCacheTime(1_763_035_200)).toBe(1_763_035_200_000);
    expect(parseCacheTime(1_763_035_200.5)).toBe(1_763_035_200_500);
    expect(parseCacheTime(1_763_035_200_123)).toBe(1_763_035_200_123);
    expect(parseCacheTime(0)).toBe(0);
    expect(parseCacheTime(99_999_999_999)).toBe(99_999_999_999_000);
    expect(parseCacheTime(100_000_000_000)).toBe(100_000_000_000);
    expect(parseCacheTime(1_763_035_200n)).toBe(1_763_035_200_000);
  });

  it('handles years before 100 without the 1900s mapping', () => {
    const utc = new Date(0);
    utc.setUTCFullYear(50, 0, 1);
    expect(parseCacheTime('0050-01-01 00:00:00')).toBe(utc.getTime());
    expect(parseCacheTime('0050-01-01T00:00:00Z')).toBe(utc.getTime());
    const local = new Date(2000, 0, 1);
    local.setFullYear(50, 0, 1);
    expect(parseCacheTime('0050-01-01T00:00:00')).toBe(local.getTime());
  });

  it('accepts leap days only in leap years', () => {
    expect(parseCacheTime('2024-02-29T00:00:00')).toBe(new Date(2024, 1, 29).getTime());
    expect(parseCacheTime('2000-02-29 00:00:00')).toBe(Date.UTC(2000, 1, 29));
    expect(parseCacheTime('2023-02-29T00:00:00')).toBeNull();
    expect(parseCacheTime('1900-02-29T00:00:00')).toBeNull();
  });

  it.each([
    null,
    undefined,
    '',
    'garbage',
    'now',
    '2025-11-13',
    '2025-11-13T12:00',
    '2025-11-13T12:00:00.',
    '2025-11-13T12:00:00.1234567',
    '2025-11-13T12:00:00z',
    '2025-11-13T12:00:00+0500',
    '2025-11-13T12:00:00+24:00',
    '2025-11-13T12:00:00+05:60',
    ' 2025-11-13T12:00:00',
    '2025-11-13T12:00:00 ',
    '2025-13-01T00:00:00',
    '2025-00-01T00:00:00',
    '2025-11-00T00:00:00',
    '2025-11-31T00:00:00',
    '2025-11-13T24:00:00',
    '2025-11-13T12:60:00',
    '2025-11-13T12:00:60',
    '0000-01-01T00:00:00',
    '+2025-11-13T12:00:00',
    '2025/11/13 12:00:00',
    '２０２５-11-13T12:00:00',
    Number.NaN,
    Number.POSITIVE_INFINITY,
    Number.NEGATIVE_INFINITY,
    1e20,
    true,
    {},
    [],
    new Date(2025, 0, 1),
  ])('rejects %j', (value) => {
    expect(parseCacheTime(value)).toBeNull();
  });

  it('reads any well-formed UTC or offset timestamp like Date.UTC', () => {
    const two = (n: number): string => String(n).padStart(2, '0');
    fc.assert(
      fc.property(
        fc.record({
          y: fc.integer({ min: 100, max: 9999 }),
          mo: fc.integer({ min: 1, max: 12 }),
          d: fc.integer({ min: 1, max: 28 }),
          h: fc.integer({ min: 0, max: 23 }),
          mi: fc.integer({ min: 0, max: 59 }),
          s: fc.integer({ min: 0, max: 59 }),
          micro: fc.option(fc.integer({ min: 0, max: 999_999 })),
          offset: fc.integer({ min: -(23 * 60 + 59), max: 23 * 60 + 59 }),
          form: fc.constantFrom('Z', 'offset', 'sqlite'),
        }),
        ({ y, mo, d, h, mi, s, micro, offset, form }) => {
          const fraction =
            micro === null
              ? ''
              : form === 'sqlite'
                ? `.${String(micro).padStart(6, '0').slice(0, 3)}`
                : `.${String(micro).padStart(6, '0')}`;
          const abs = Math.abs(offset);
          const suffix =
            form === 'Z' ? 'Z' : form === 'offset' ? `${offset < 0 ? '-' : '+'}${two(Math.floor(abs / 60))}:${two(abs % 60)}` : '';
          const text = `${String(y).padStart(4, '0')}-${two(mo)}-${two(d)}${form === 'sqlite' ? ' ' : 'T'}${two(h)}:${two(mi)}:${two(s)}${fraction}${suffix}`;
          const ms = micro === null ? 0 : Math.floor(micro / 1000);
          const expected = Date.UTC(y, mo - 1, d, h, mi, s, ms) - (form === 'offset' ? offset * 60_000 : 0);
          expect(parseCacheTime(text)).toBe(expected);
        },
      ),
    );
  });

  it('never throws, whatever the input', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.anything(), fc.double()), (value) => {
        const parsed = parseCacheTime(value);
        expect(parsed === null || Number.isFinite(parsed)).toBe(true);
      }),
    );
  });
});

describe.each([
  ['UTC', 0],
  ['Asia/Kolkata', -330],
  ['Etc/GMT+11', 660],
])('toPythonIso ↔ parseCacheTime in a fixed-offset zone (%s)', (tz, offsetMinutes) => {
  inTimeZone(tz);

  it('really runs in that zone', () => {
    expect(new Date(2025, 0, 1).getTimezoneOffset()).toBe(offsetMinutes);
    expect(new Date(2025, 6, 1).getTimezoneOffset()).toBe(offsetMinutes);
  });

  it('round-trips to the same millisecond', () => {
    fc.assert(
      fc.property(dates1971to2100, (date) => {
        expect(parseCacheTime(toPythonIso(date))).toBe(date.getTime());
      }),
    );
  });

  it('sorts as text exactly as it sorts by time', () => {
    fc.assert(
      fc.property(fc.array(dates1971to2100, { maxLength: 40 }), (dates) => {
        const byText = dates.map(toPythonIso).sort();
        const byTime = [...dates].sort((a, b) => a.getTime() - b.getTime()).map(toPythonIso);
        expect(byText).toEqual(byTime);
      }),
    );
  });

  it('orders any two dates the same as text and as time', () => {
    fc.assert(
      fc.property(dates1971to2100, dates1971to2100, (a, b) => {
        expect(toPythonIso(a) < toPythonIso(b)).toBe(a.getTime() < b.getTime());
        expect(toPythonIso(a) === toPythonIso(b)).toBe(a.getTime() === b.getTime());
      }),
    );
  });
});

/** A straightforward regex-and-Date reading of the documented grammar, to check the hand-rolled scanner against. */
function referenceParse(text: string): number | null {
  const m = /^(\d{4})-(\d\d)-(\d\d)([T ])(\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?(?:(Z)|([+-])(\d\d):(\d\d))?$/.exec(text);
  if (!m) return null;
  const [y, mo, d, h, mi, sec] = [1, 2, 3, 5, 6, 7].map((k) => Number(m[k]));
  if (y! < 1 || h! > 23 || mi! > 59 || sec! > 59) return null;
  const fraction = m[8];
  const ms = fraction === undefined ? 0 : Number(fraction.padEnd(3, '0').slice(0, 3));
  const probe = new Date(0);
  probe.setUTCFullYear(y!, mo! - 1, d!);
  if (probe.getUTCMonth() !== mo! - 1 || probe.getUTCDate() !== d) return null; // month 13, Feb 30…
  probe.setUTCHours(h!, mi!, sec!, ms);
  if (m[9]) return probe.getTime();
  if (m[10]) {
    const [oh, om] = [Number(m[11]), Number(m[12])];
    if (oh > 23 || om > 59) return null;
    return probe.getTime() - (m[10] === '-' ? -1 : 1) * (oh * 60 + om) * 60_000;
  }
  if (m[4] === ' ' && (fraction === undefined || fraction.length <= 3)) return probe.getTime();
  const local = new Date(2000, 0, 1);
  local.setFullYear(y!, mo! - 1, d!);
  local.setHours(h!, mi!, sec!, ms);
  return local.getTime();
}

const edit = fc.record({
  at: fc.nat({ max: 40 }),
  op: fc.constantFrom('set', 'delete', 'insert'),
  char: fc.constantFrom(...'0123456789012345678909-: T.Z+x'),
});

/** Valid timestamps of every accepted form, then up to three random single-character edits. */
const mangledTimestamps = fc
  .tuple(
    fc.date({ min: new Date('0001-01-01T00:00:00Z'), max: new Date('9999-12-30T00:00:00Z'), noInvalidDate: true }),
    fc.constantFrom('python', 'python-seconds', 'sqlite', 'sqlite-ms', 'z', 'offset'),
    fc.array(edit, { maxLength: 3 }),
  )
  .map(([date, form, edits]) => {
    const iso = date.toISOString(); // 2025-11-13T12:00:00.123Z
    let text =
      form === 'python'
        ? toPythonIso(new Date(Math.max(date.getTime(), -62_135_596_800_000 + 2 * 86_400_000)))
        : form === 'python-seconds'
          ? iso.slice(0, 19)
          : form === 'sqlite'
            ? iso.slice(0, 19).replace('T', ' ')
            : form === 'sqlite-ms'
              ? iso.slice(0, 23).replace('T', ' ')
              : form === 'z'
                ? iso
                : `${iso.slice(0, 23)}123-04:30`;
    for (const { at, op, char } of edits) {
      const i = Math.min(at, text.length);
      text =
        op === 'set'
          ? text.slice(0, i) + char + text.slice(i + 1)
          : op === 'delete'
            ? text.slice(0, i) + text.slice(i + 1)
            : text.slice(0, i) + char + text.slice(i);
    }
    return text;
  });

describe.each(['UTC', 'Asia/Kolkata'])('parseCacheTime against a reference reading (%s)', (tz) => {
  inTimeZone(tz);

  it('agrees on valid and almost-valid timestamps', () => {
    fc.assert(
      fc.property(mangledTimestamps, (text) => {
        expect(parseCacheTime(text)).toBe(referenceParse(text));
      }),
      { numRuns: 2000 },
    );
  });
});

describe('toPythonIso ↔ parseCacheTime across DST (America/New_York)', () => {
  inTimeZone('America/New_York');
  const HOUR = 3_600_000;
  const offsetAt = (ms: number): number => new Date(ms).getTimezoneOffset();

  it('round-trips to the same millisecond away from the fall-back hour, and as text always', () => {
    fc.assert(
      fc.property(dates1971to2100, (date) => {
        const iso = toPythonIso(date);
        const parsed = parseCacheTime(iso);
        expect(parsed).not.toBeNull();
        expect(toPythonIso(new Date(parsed as number))).toBe(iso);
        // Naive local time repeats during the fall-back hour; elsewhere the instant is unique.
        if (offsetAt(date.getTime() - 2 * HOUR) === offsetAt(date.getTime())) expect(parsed).toBe(date.getTime());
      }),
    );
  });

  it('reads the repeated fall-back hour as its first occurrence', () => {
    // 2025-11-02 01:30 happens at 05:30Z (EDT) and again at 06:30Z (EST).
    expect(toPythonIso(new Date(Date.UTC(2025, 10, 2, 6, 30)))).toBe('2025-11-02T01:30:00.000000');
    expect(parseCacheTime('2025-11-02T01:30:00.000000')).toBe(Date.UTC(2025, 10, 2, 5, 30));
  });
});
