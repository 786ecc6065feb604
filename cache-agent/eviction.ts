/**
 * Eviction planners for the local LoRA cache. Pure: no I/O and no clock reads (`now` is an
 * argument); the agent parses `model_cache.db` rows into {@link CacheRow}s, plans, then deletes the
 * victims' files and rows itself.
 */

export interface CacheRow {
  path: string;
  modelType: string;
  sizeBytes: number;
  /** Parsed `last_used` (null = never used → `downloadDateMs`, then the oldest possible). */
  lastUsedMs: number | null;
  downloadDateMs: number | null;
  protected: boolean;
  ignored: boolean;
  /**
   * Rows with the same key are one file on disk (hard links of identical content, `dev:ino`): its
   * bytes count once, it is evicted whole or not at all, and its last use is its most recent row's.
   * Null or absent: a file of its own.
   */
  contentKey?: string | null;
}

export interface SpacePlanInput {
  rows: readonly CacheRow[];
  /** Size of the file about to be downloaded. Finite, ≥ 0. */
  neededBytes: number;
  /** `lora_cache_max_gb`: cap on the bytes of evictable-policy rows (user LoRAs) incl. the new file. ≥ 0; Infinity = no cap. */
  maxCacheBytes: number;
  /** Free space on the disk now. ≥ 0; Infinity = unbounded. */
  diskFreeBytes: number;
  /** `min_free_space_gb` to keep free after the download. Finite, ≥ 0. */
  minFreeBytes: number;
  /** Paths in use by jobs. */
  leased: ReadonlySet<string>;
  /** @default row.modelType === 'user_lora' */
  evictable?: (row: CacheRow) => boolean;
}

export interface EvictionPlan {
  /** In eviction order: least recently used first. */
  victims: CacheRow[];
  bytesFreed: number;
  /** After evicting the victims, both limits hold. */
  fits: boolean;
  /** 0 when fits; else what could not be freed. */
  shortfallBytes: number;
  /** Which limits the download would break before any eviction. */
  reason: 'none-needed' | 'cache-cap' | 'disk-free' | 'cache-cap+disk-free';
}

export interface AgePlanInput {
  rows: readonly CacheRow[];
  now: number;
  maxAgeDays: number;
  leased: ReadonlySet<string>;
  /** @default row.modelType === 'user_lora' */
  evictable?: (row: CacheRow) => boolean;
}

const DAY_MS = 86_400_000;

const isUserLora = (row: CacheRow): boolean => row.modelType === 'user_lora';

/** A row's size for accounting: negative, NaN or infinite sizes count as 0. */
function byteSize(size: number): number {
  return size > 0 && size < Number.POSITIVE_INFINITY ? size : 0;
}

/** Last use for LRU order: `lastUsedMs ?? downloadDateMs ?? -Infinity` (NaN counts as missing). */
function lruKey(row: CacheRow): number {
  const used = row.lastUsedMs;
  if (typeof used === 'number' && !Number.isNaN(used)) return used;
  const downloaded = row.downloadDateMs;
  if (typeof downloaded === 'number' && !Number.isNaN(downloaded)) return downloaded;
  return Number.NEGATIVE_INFINITY;
}

function requireBytes(name: string, value: number, allowInfinity: boolean): void {
  if (!(value >= 0) || (!allowInfinity && value === Number.POSITIVE_INFINITY)) {
    throw new RangeError(`planSpaceEviction: ${name} must be ${allowInfinity ? '≥ 0' : 'finite and ≥ 0'}, got ${value}`);
  }
}

/**
 * What to evict so that a file of `neededBytes` can be downloaded.
 *
 * - The cap: `usedBytes + neededBytes ≤ maxCacheBytes`, where usedBytes sums the evictable-policy rows
 *   (user LoRAs by default) — including protected, ignored and leased ones, which count but stay.
 * - The disk: `diskFreeBytes + bytesFreed ≥ minFreeBytes + neededBytes`.
 *
 * Need = `max(0, usedBytes + neededBytes − maxCacheBytes, minFreeBytes + neededBytes − diskFreeBytes)`.
 * Candidates are the evictable rows that are not protected, ignored or leased, taken least recently
 * used first (`lastUsedMs ?? downloadDateMs ?? -Infinity` ascending, ties by path as text) and only
 * until the need is met: the victims are the shortest LRU prefix of the candidates that fits, so
 * nothing is evicted beyond what the download requires. Rows sharing a `contentKey` (hard links of
 * one file) are one candidate: counted once in usedBytes, last used when its latest row was, evicted
 * together, and not a candidate at all while any of its rows is protected, ignored, leased or of
 * another policy (evicting the others would free nothing).
 *
 * When even every candidate would not free enough — including when `neededBytes` alone exceeds
 * `maxCacheBytes` (the rows that remain count as ≥ 0, so that case always lands here) — the plan has
 * `fits: false`, NO victims and the `shortfallBytes` left over after all candidates: the download
 * cannot happen anyway, and emptying the cache for it would only cost every other job its warm LoRAs.
 *
 * Runs in O(n + k log n) for n rows and k victims: one pass into typed arrays, then a binary heap
 * popped only k times (no full sort, no per-row objects).
 *
 * @throws RangeError when neededBytes or minFreeBytes is not finite and ≥ 0, or maxCacheBytes or
 *   diskFreeBytes is NaN or negative — a bad input must not turn into a silent eviction.
 */
export function planSpaceEviction(input: SpacePlanInput): EvictionPlan {
  const { rows, neededBytes, maxCacheBytes, diskFreeBytes, minFreeBytes, leased } = input;
  requireBytes('neededBytes', neededBytes, false);
  requireBytes('minFreeBytes', minFreeBytes, false);
  requireBytes('maxCacheBytes', maxCacheBytes, true);
  requireBytes('diskFreeBytes', diskFreeBytes, true);
  const evictable = input.evictable ?? isUserLora;

  // One pass: rows → units (a unit is one file on disk: a row, or the rows of one contentKey).
  const n = rows.length;
  const unitKey = new Float64Array(n); // by unit: most recent use of its rows
  const unitSize = new Float64Array(n); // by unit
  const unitFirst = new Uint32Array(n); // by unit: its first row (ties by that row's path)
  const unitLast = new Uint32Array(n); // by unit: its last row, to chain the next one
  const nextRow = new Int32Array(n).fill(-1); // by row: the next row of its unit
  const pinned = new Uint8Array(n); // by unit: a protected, ignored or leased row holds the file
  const heap = new Uint32Array(n); // candidate units
  const checkLeases = leased.size > 0;
  let groups: Map<string, number> | null = null;
  let heldElsewhere: string[] | null = null; // content keys of rows of another policy (their file stays)
  let units = 0;
  let usedBytes = 0;
  for (let i = 0; i < n; i++) {
    const row = rows[i] as CacheRow;
    if (!evictable(row)) {
      if (row.contentKey) {
        heldElsewhere ??= [];
        heldElsewhere.push(row.contentKey);
      }
      continue;
    }
    const contentKey = row.contentKey;
    if (contentKey && !groups) groups = new Map();
    let unit = contentKey ? (groups?.get(contentKey) ?? -1) : -1;
    if (unit < 0) {
      unit = units++;
      if (contentKey) groups?.set(contentKey, unit);
      const size = byteSize(row.sizeBytes);
      unitSize[unit] = size;
      unitKey[unit] = Number.NEGATIVE_INFINITY;
      unitFirst[unit] = i;
      usedBytes += size;
    } else nextRow[unitLast[unit] as number] = i;
    unitLast[unit] = i;
    if (row.protected || row.ignored || (checkLeases && leased.has(row.path))) pinned[unit] = 1;
    const key = lruKey(row);
    if (key > (unitKey[unit] as number)) unitKey[unit] = key;
  }
  for (const contentKey of heldElsewhere ?? []) {
    const unit = groups?.get(contentKey);
    if (unit !== undefined) pinned[unit] = 1;
  }
  let candidates = 0;
  let candidateBytes = 0;
  for (let u = 0; u < units; u++) {
    if (pinned[u]) continue;
    candidateBytes += unitSize[u] as number;
    heap[candidates++] = u;
  }

  const capExcess = usedBytes + neededBytes - maxCacheBytes;
  const diskExcess = minFreeBytes + neededBytes - diskFreeBytes;
  const reason = capExcess > 0 ? (diskExcess > 0 ? 'cache-cap+disk-free' : 'cache-cap') : diskExcess > 0 ? 'disk-free' : 'none-needed';
  const need = Math.max(0, capExcess, diskExcess);
  if (need === 0) return { victims: [], bytesFreed: 0, fits: true, shortfallBytes: 0, reason };
  if (candidateBytes < need) return { victims: [], bytesFreed: 0, fits: false, shortfallBytes: need - candidateBytes, reason };

  // Min-heap of candidate units by (key, first row's path); pop the LRU one until the need is met.
  const before = (a: number, b: number): boolean => {
    const ka = unitKey[a] as number;
    const kb = unitKey[b] as number;
    return ka < kb || (ka === kb && (rows[unitFirst[a] as number] as CacheRow).path < (rows[unitFirst[b] as number] as CacheRow).path);
  };
  const siftDown = (start: number, size: number): void => {
    const item = heap[start] as number;
    let at = start;
    for (;;) {
      let child = 2 * at + 1;
      if (child >= size) break;
      const right = child + 1;
      if (right < size && before(heap[right] as number, heap[child] as number)) child = right;
      const childItem = heap[child] as number;
      if (!before(childItem, item)) break;
      heap[at] = childItem;
      at = child;
    }
    heap[at] = item;
  };
  for (let i = (candidates >> 1) - 1; i >= 0; i--) siftDown(i, candidates);

  const victims: CacheRow[] = [];
  let bytesFreed = 0;
  let size = candidates;
  while (bytesFreed < need && size > 0) {
    const top = heap[0] as number;
    for (let r = unitFirst[top] as number; r >= 0; r = nextRow[r] as number) victims.push(rows[r] as CacheRow);
    bytesFreed += unitSize[top] as number;
    size--;
    // Floyd's pop: walk the hole down along the smaller children to a leaf (one comparison per
    // level), then sift the last entry up from there — about half the comparisons of a plain sift-down.
    const last = heap[size] as number;
    let hole = 0;
    for (let child = 1; child < size; child = 2 * hole + 1) {
      if (child + 1 < size && before(heap[child + 1] as number, heap[child] as number)) child++;
      heap[hole] = heap[child] as number;
      hole = child;
    }
    while (hole > 0) {
      const parent = (hole - 1) >> 1;
      const parentItem = heap[parent] as number;
      if (!before(last, parentItem)) break;
      heap[hole] = parentItem;
      hole = parent;
    }
    heap[hole] = last;
  }
  // candidateBytes ≥ need, so only float rounding in absurd totals (beyond 2^53 bytes) can get here.
  if (bytesFreed < need) return { victims: [], bytesFreed: 0, fits: false, shortfallBytes: need - bytesFreed, reason };
  return { victims, bytesFreed, fits: true, shortfallBytes: 0, reason };
}

/**
 * The evictable rows, not protected, ignored or leased, whose last use (`lastUsedMs ??
 * downloadDateMs`) is older than `now − maxAgeDays` days; oldest first, ties by path. A row with
 * neither timestamp has an unknown age and is left alone — a row the Python nodes inserted without
 * dates is not evidence of a stale file, and space pressure still evicts it first (see
 * {@link planSpaceEviction}). `maxAgeDays ≤ 0` (or NaN) disables age eviction.
 *
 * @throws RangeError when `now` is not finite.
 */
export function planAgeEviction(input: AgePlanInput): { victims: CacheRow[]; bytesFreed: number } {
  const { rows, now, maxAgeDays, leased } = input;
  if (!Number.isFinite(now)) throw new RangeError(`planAgeEviction: now must be finite, got ${now}`);
  if (!(maxAgeDays > 0)) return { victims: [], bytesFreed: 0 };
  const evictable = input.evictable ?? isUserLora;
  const cutoff = now - maxAgeDays * DAY_MS;
  const checkLeases = leased.size > 0;

  const found: { row: CacheRow; key: number }[] = [];
  for (const row of rows) {
    if (row.protected || row.ignored || !evictable(row) || (checkLeases && leased.has(row.path))) continue;
    const key = lruKey(row);
    if (key === Number.NEGATIVE_INFINITY || !(key < cutoff)) continue;
    found.push({ row, key });
  }
  found.sort((a, b) => a.key - b.key || (a.row.path < b.row.path ? -1 : a.row.path > b.row.path ? 1 : 0));
  // A file with hard links is freed only when every row naming it goes.
  const rowsOfContent = new Map<string, number>();
  for (const row of rows) if (row.contentKey) rowsOfContent.set(row.contentKey, (rowsOfContent.get(row.contentKey) ?? 0) + 1);
  let bytesFreed = 0;
  const victims = found.map(({ row }) => {
    const left = row.contentKey ? (rowsOfContent.get(row.contentKey) as number) - 1 : 0;
    if (row.contentKey) rowsOfContent.set(row.contentKey, left);
    if (left === 0) bytesFreed += byteSize(row.sizeBytes);
    return row;
  });
  return { victims, bytesFreed };
}
