/**
 * Timestamps of `model_cache.db`, the SQLite index shared with the Python ComfyUI nodes.
 *
 * Python writes `datetime.now().isoformat()`: NAIVE LOCAL time, `2025-11-13T12:00:00.123456`, or
 * `2025-11-13T12:00:00` when the microseconds happen to be 0, and sorts LRU by `last_used` AS TEXT.
 * Rows may also hold NULL, SQLite's `CURRENT_TIMESTAMP` form `2025-11-13 12:00:00` (UTC), numbers, or
 * garbage. Pure: no clock reads, no I/O. The local time zone is the process's (`TZ`), which must be
 * the one the Python nodes run in — naive local times carry no offset, so nothing else can be assumed.
 */

/** Python's `datetime` range: MINYEAR..MAXYEAR. */
const MIN_YEAR = 1;
const MAX_YEAR = 9999;

/** Numbers below this are epoch seconds (1e11 s is the year 5138), the rest epoch milliseconds (1e11 ms is 1973-03-03). */
const SECONDS_LIMIT = 1e11;

/** ECMAScript's time value range, ±8.64e15 ms around the epoch. */
const MAX_TIME = 8.64e15;

/** One Gregorian 400-year cycle (146,097 days), to dodge `Date`'s mapping of years 0–99 to 1900–1999. */
const CYCLE_400Y_MS = 146_097 * 86_400_000;

const DAYS_IN_MONTH = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

const pad2 = (n: number): string => (n < 10 ? `0${n}` : `${n}`);
const pad3 = (n: number): string => (n < 10 ? `00${n}` : n < 100 ? `0${n}` : `${n}`);
const pad4 = (n: number): string => (n < 10 ? `000${n}` : n < 100 ? `00${n}` : n < 1000 ? `0${n}` : `${n}`);

/**
 * `date` as Python's `datetime.isoformat()` of the same naive local time, but always with the 6-digit
 * fraction (`YYYY-MM-DDTHH:MM:SS.ffffff`, microseconds = ms × 1000; Python omits it when the
 * microseconds are 0). Fixed width, so comparing these strings as text — as the Python nodes' `ORDER
 * BY last_used` does — orders them by time, as long as the UTC offset does not change between them (a
 * DST fall-back hour repeats local times; naive local time cannot tell them apart).
 *
 * @throws RangeError for an invalid Date, or a local year outside Python's 1..9999.
 */
export function toPythonIso(date: Date): string {
  if (Number.isNaN(date.getTime())) throw new RangeError('toPythonIso: invalid Date');
  const year = date.getFullYear();
  if (year < MIN_YEAR || year > MAX_YEAR) throw new RangeError(`toPythonIso: year ${year} is outside Python's datetime range`);
  return (
    `${pad4(year)}-${pad2(date.getMonth() + 1)}-${pad2(date.getDate())}` +
    `T${pad2(date.getHours())}:${pad2(date.getMinutes())}:${pad2(date.getSeconds())}.${pad3(date.getMilliseconds())}000`
  );
}

/**
 * A `model_cache.db` timestamp as epoch milliseconds, or null when it is NULL, empty or not a
 * timestamp this format knows. Accepted:
 *
 * - `YYYY-MM-DDTHH:MM:SS[.f{1,6}]` — Python's naive `isoformat()`: LOCAL time.
 * - the same with `Z` or `±HH:MM` (an aware Python datetime, or an ISO writer): that offset.
 * - `YYYY-MM-DD HH:MM:SS[.f{1,3}]` — SQLite's form. Taken as UTC, because SQLite's own
 *   `CURRENT_TIMESTAMP`, `datetime('now')` and `strftime('%Y-%m-%d %H:%M:%f', 'now')` are the only
 *   writers of a space-separated value without an offset and they always produce UTC; Python's
 *   `isoformat()` always uses `T`.
 * - `YYYY-MM-DD HH:MM:SS.f{4,6}` — LOCAL time: SQLite never writes more than 3 fraction digits, so a
 *   space-separated value with microseconds comes from Python's `isoformat(' ')`, `str(datetime)` or
 *   the `sqlite3` module's default datetime adapter, all of which write naive local time.
 * - a space-separated value with `Z`/`±HH:MM`: that offset.
 * - a finite number (SQLite's NUMERIC affinity of a `TIMESTAMP` column stores numeric text as a
 *   number): epoch seconds when below 1e11, else epoch milliseconds. A bigint likewise.
 *
 * Fractions beyond milliseconds are truncated (truncation keeps text order). Out-of-range fields
 * (month 13, Feb 30, hour 24, second 60) are rejected rather than rolled over, as Python would.
 */
export function parseCacheTime(text: unknown): number | null {
  if (typeof text === 'string') return parseString(text);
  if (typeof text === 'number') return fromNumber(text);
  if (typeof text === 'bigint') return fromNumber(Number(text));
  return null;
}

function fromNumber(n: number): number | null {
  if (!Number.isFinite(n)) return null;
  const ms = n < SECONDS_LIMIT ? n * 1000 : n;
  return ms >= -MAX_TIME && ms <= MAX_TIME ? ms : null;
}

const CHAR_0 = 48;
const CHAR_T = 84;
const CHAR_SPACE = 32;
const CHAR_DOT = 46;
const CHAR_Z = 90;
const CHAR_PLUS = 43;
const CHAR_MINUS = 45;
const CHAR_COLON = 58;

/** The digit at `i`, or -1 (past the end, charCodeAt gives NaN, which fails both comparisons). */
function digitAt(s: string, i: number): number {
  const d = s.charCodeAt(i) - CHAR_0;
  return d >= 0 && d <= 9 ? d : -1;
}

/** The two-digit number at `i`, or -1. */
function twoDigitsAt(s: string, i: number): number {
  const hi = digitAt(s, i);
  const lo = digitAt(s, i + 1);
  return hi < 0 || lo < 0 ? -1 : hi * 10 + lo;
}

/**
 * `YYYY-MM-DD(T| )HH:MM:SS(.f{1,6})?(Z|[+-]HH:MM)?`, scanned by hand: a capturing regex allocates
 * a match array and a dozen substrings per call and was several times slower on 100k rows.
 */
function parseString(s: string): number | null {
  const len = s.length;
  // The shortest accepted form is 19 characters, the longest 32.
  if (len < 19 || len > 32) return null;
  // Within the first 19 characters charCodeAt never gives NaN, so `(c - 48) >>> 0 > 9` spots any non-digit.
  const c0 = s.charCodeAt(0) - CHAR_0;
  const c1 = s.charCodeAt(1) - CHAR_0;
  const c2 = s.charCodeAt(2) - CHAR_0;
  const c3 = s.charCodeAt(3) - CHAR_0;
  const c5 = s.charCodeAt(5) - CHAR_0;
  const c6 = s.charCodeAt(6) - CHAR_0;
  const c8 = s.charCodeAt(8) - CHAR_0;
  const c9 = s.charCodeAt(9) - CHAR_0;
  const c11 = s.charCodeAt(11) - CHAR_0;
  const c12 = s.charCodeAt(12) - CHAR_0;
  const c14 = s.charCodeAt(14) - CHAR_0;
  const c15 = s.charCodeAt(15) - CHAR_0;
  const c17 = s.charCodeAt(17) - CHAR_0;
  const c18 = s.charCodeAt(18) - CHAR_0;
  const separator = s.charCodeAt(10);
  if (
    c0 >>> 0 > 9 ||
    c1 >>> 0 > 9 ||
    c2 >>> 0 > 9 ||
    c3 >>> 0 > 9 ||
    c5 >>> 0 > 9 ||
    c6 >>> 0 > 9 ||
    c8 >>> 0 > 9 ||
    c9 >>> 0 > 9 ||
    c11 >>> 0 > 9 ||
    c12 >>> 0 > 9 ||
    c14 >>> 0 > 9 ||
    c15 >>> 0 > 9 ||
    c17 >>> 0 > 9 ||
    c18 >>> 0 > 9 ||
    s.charCodeAt(4) !== CHAR_MINUS ||
    s.charCodeAt(7) !== CHAR_MINUS ||
    (separator !== CHAR_T && separator !== CHAR_SPACE) ||
    s.charCodeAt(13) !== CHAR_COLON ||
    s.charCodeAt(16) !== CHAR_COLON
  ) {
    return null;
  }
  const year = c0 * 1000 + c1 * 100 + c2 * 10 + c3;
  const month = c5 * 10 + c6;
  const day = c8 * 10 + c9;
  const hour = c11 * 10 + c12;
  const minute = c14 * 10 + c15;
  const second = c17 * 10 + c18;
  if (year < MIN_YEAR || month < 1 || month > 12 || day < 1 || hour > 23 || minute > 59 || second > 59) return null;
  if (day > (DAYS_IN_MONTH[month - 1] as number) && !(month === 2 && day === 29 && isLeapYear(year))) return null;

  let i = 19;
  let ms = 0;
  let fractionDigits = 0;
  if (i < len && s.charCodeAt(i) === CHAR_DOT) {
    i++;
    for (let d = digitAt(s, i); d >= 0; d = digitAt(s, ++i)) {
      if (++fractionDigits > 6) return null;
      if (fractionDigits <= 3) ms = ms * 10 + d; // beyond milliseconds: truncated
    }
    if (fractionDigits === 0) return null;
    if (fractionDigits === 1) ms *= 100;
    else if (fractionDigits === 2) ms *= 10;
  }

  let time: number;
  if (i === len) {
    // No offset: SQLite's UTC, unless it has microseconds only Python writes (see parseCacheTime).
    time =
      separator === CHAR_SPACE && fractionDigits <= 3
        ? utc(year, month, day, hour, minute, second, ms)
        : local(year, month, day, hour, minute, second, ms);
  } else {
    const sign = s.charCodeAt(i);
    if (sign === CHAR_Z) {
      if (i + 1 !== len) return null;
      time = utc(year, month, day, hour, minute, second, ms);
    } else {
      if ((sign !== CHAR_PLUS && sign !== CHAR_MINUS) || i + 6 !== len || s.charCodeAt(i + 3) !== CHAR_COLON) return null;
      const offsetHours = twoDigitsAt(s, i + 1);
      const offsetMinutes = twoDigitsAt(s, i + 4);
      if (offsetHours < 0 || offsetHours > 23 || offsetMinutes < 0 || offsetMinutes > 59) return null;
      const offsetMs = (offsetHours * 60 + offsetMinutes) * 60_000;
      time = utc(year, month, day, hour, minute, second, ms) - (sign === CHAR_MINUS ? -offsetMs : offsetMs);
    }
  }
  return Number.isFinite(time) ? time : null;
}

function isLeapYear(y: number): boolean {
  return y % 4 === 0 && (y % 100 !== 0 || y % 400 === 0);
}

function utc(y: number, mo: number, d: number, h: number, mi: number, s: number, ms: number): number {
  // Date.UTC maps years 0–99 to 1900–1999; shift by a whole Gregorian cycle instead.
  if (y < 100) return Date.UTC(y + 400, mo - 1, d, h, mi, s, ms) - CYCLE_400Y_MS;
  return Date.UTC(y, mo - 1, d, h, mi, s, ms);
}

function local(y: number, mo: number, d: number, h: number, mi: number, s: number, ms: number): number {
  if (y >= 100) return new Date(y, mo - 1, d, h, mi, s, ms).getTime();
  const date = new Date(2000, mo - 1, d, h, mi, s, ms);
  date.setFullYear(y, mo - 1, d);
  return date.getTime();
}
