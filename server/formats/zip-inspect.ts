/**
 * Strict structural validation of a zip archive (PKWARE APPNOTE 6.3) WITHOUT extracting anything:
 * the end of central directory (classic and zip64), the central directory, and each local header
 * cross-checked against it. The archive must tile exactly — local header, data, optional data
 * descriptor, next entry, …, central directory, [zip64 end record, locator,] end record — so no
 * prefix, gap, overlap, trailing byte or comment can hide a second archive or a different reading.
 */
import { InvalidFileError } from '../domain/errors.ts';
import { type RandomAccessReader, readAheadReader, readExact } from './zip-reader.ts';

export { bufferReader, fileReader, type RandomAccessReader, readZipEntry } from './zip-reader.ts';

export const ZIP_LIMITS = {
  maxEntries: 10_000,
  maxNameBytes: 1_024,
  maxCentralDirectoryBytes: 16 * 1024 * 1024,
  /** Declared uncompressed size over compressed size, for deflated entries. */
  maxCompressionRatio: 100,
  maxEntryBytes: 4 * 1024 * 1024 * 1024,
} as const;

export interface ZipEntry {
  name: string;
  /** 0 stored, 8 deflate. */
  method: number;
  flags: number;
  crc32: number;
  compressedSize: number;
  uncompressedSize: number;
  localHeaderOffset: number;
  /** First byte of the (compressed) data. */
  dataOffset: number;
  /** Bytes of the data descriptor after the data (0 when there is none). */
  descriptorSize: number;
  isDirectory: boolean;
}

const SIG = { local: 0x04034b50, central: 0x02014b50, eocd: 0x06054b50, eocd64: 0x06064b50, locator: 0x07064b50, descriptor: 0x08074b50 };
const U16_MAX = 0xffff;
const U32_MAX = 0xffffffff;
const NESTED_NAME = /\.(zip|pt|pth|ckpt|bin|tar|gz|tgz|bz2|xz|zst|7z|rar|jar|whl|npz|safetensors)$/i;
const UNSAFE_CHAR = /[\p{Cc}\p{Default_Ignorable_Code_Point}]/u;

type Fail = (reason: string) => InvalidFileError;
const failer =
  (format: string): Fail =>
  (reason) =>
    new InvalidFileError(format, reason);

interface Central {
  name: string;
  nameBytes: Buffer;
  flags: number;
  method: number;
  crc32: number;
  compressedSize: number;
  uncompressedSize: number;
  localHeaderOffset: number;
  isDirectory: boolean;
}

/**
 * Validates the archive and lists its entries (central directory order). Throws
 * InvalidFileError (detectedFormat `format`, default "zip") naming the first rule broken.
 */
export async function inspectZip(reader: RandomAccessReader, options: { format?: string } = {}): Promise<ZipEntry[]> {
  const format = options.format ?? 'zip';
  const fail = failer(format);
  if (!Number.isSafeInteger(reader.size) || reader.size < 22) throw fail('too small to be a zip archive');

  const end = await readEnd(reader, format);
  if (end.entries > ZIP_LIMITS.maxEntries) throw fail(`too many entries (${end.entries}; at most ${ZIP_LIMITS.maxEntries})`);
  if (end.cdOffset + end.cdSize !== end.cdEnd) {
    throw fail(
      end.cdOffset + end.cdSize > end.cdEnd
        ? 'central directory is truncated or overlaps the end record'
        : 'unaccounted bytes between the central directory and the end record',
    );
  }
  if (end.cdSize > ZIP_LIMITS.maxCentralDirectoryBytes) throw fail('central directory is too large');
  const cd = await readExact(reader, end.cdOffset, end.cdSize, 'central directory', format);
  const centrals = parseCentralDirectory(cd, end.entries, fail);

  // Local headers are visited in file order (read-ahead friendly); results keep central directory order.
  const entries: ZipEntry[] = new Array(centrals.length);
  const local = readAheadReader(reader);
  const byOffset = centrals.map((c, i) => [c, i] as const).sort(([a], [b]) => a.localHeaderOffset - b.localHeaderOffset);
  for (const [c, i] of byOffset) entries[i] = await checkLocal(local, c, end.cdOffset, format);
  checkTiling(entries, end.cdOffset, fail);
  return entries;
}

interface End {
  entries: number;
  cdSize: number;
  cdOffset: number;
  /** Where the central directory must end: the zip64 end record, or the classic one. */
  cdEnd: number;
}

async function readEnd(reader: RandomAccessReader, format: string): Promise<End> {
  const fail = failer(format);
  const tailLength = Math.min(reader.size, 22 + U16_MAX);
  const tailStart = reader.size - tailLength;
  const tail = await readExact(reader, tailStart, tailLength, 'end of central directory', format);
  // Every position where an end record would reach exactly to the end of the file. More than one
  // means an archive's end record sits inside another's comment: readers would disagree.
  const candidates: number[] = [];
  for (let i = tailLength - 22; i >= 0; i--) {
    if (tail.readUInt32LE(i) === SIG.eocd && i + 22 + tail.readUInt16LE(i + 20) === tailLength) candidates.push(i);
  }
  const at = candidates.at(-1);
  if (at === undefined) throw fail('no end-of-central-directory record (not a zip archive, truncated, or trailing data)');
  if (candidates.length > 1) throw fail('two end-of-central-directory records: the archive comment hides another archive');
  const comment = tail.subarray(at + 22);
  if (hidesArchive(comment)) throw fail('the archive comment contains zip records (a hidden archive)');
  const eocdPos = tailStart + at;
  const disk = tail.readUInt16LE(at + 4);
  const cdDisk = tail.readUInt16LE(at + 6);
  const onDisk = tail.readUInt16LE(at + 8);
  let entries = tail.readUInt16LE(at + 10);
  let cdSize = tail.readUInt32LE(at + 12);
  let cdOffset = tail.readUInt32LE(at + 16);
  if (disk !== 0 || cdDisk !== 0 || onDisk !== entries) throw fail('multi-disk (spanned) archives are not supported');

  const locatorPos = eocdPos - 20;
  const locator = locatorPos >= 0 ? await readExact(reader, locatorPos, 20, 'zip64 locator', format) : null;
  if (!locator || locator.readUInt32LE(0) !== SIG.locator) {
    if (entries === U16_MAX || cdSize === U32_MAX || cdOffset === U32_MAX) throw fail('zip64 values without a zip64 end record');
    return { entries, cdSize, cdOffset, cdEnd: eocdPos };
  }
  if (locator.readUInt32LE(4) !== 0 || locator.readUInt32LE(16) > 1) throw fail('multi-disk (spanned) archives are not supported');
  const z64Pos = safe(locator.readBigUInt64LE(8), fail);
  if (z64Pos + 56 > locatorPos) throw fail('zip64 end record is misplaced');
  const z64 = await readExact(reader, z64Pos, 56, 'zip64 end record', format);
  const recordSize = safe(z64.readBigUInt64LE(4), fail);
  if (z64.readUInt32LE(0) !== SIG.eocd64 || recordSize < 44 || z64Pos + 12 + recordSize !== locatorPos) {
    throw fail('zip64 end record is malformed or not adjacent to its locator');
  }
  if (z64.readUInt32LE(16) !== 0 || z64.readUInt32LE(20) !== 0 || z64.readBigUInt64LE(24) !== z64.readBigUInt64LE(32)) {
    throw fail('multi-disk (spanned) archives are not supported');
  }
  const e64 = safe(z64.readBigUInt64LE(32), fail);
  const size64 = safe(z64.readBigUInt64LE(40), fail);
  const off64 = safe(z64.readBigUInt64LE(48), fail);
  const agree = (classic: number, max: number, wide: number) => classic === max || classic === wide;
  if (!agree(entries, U16_MAX, e64) || !agree(cdSize, U32_MAX, size64) || !agree(cdOffset, U32_MAX, off64)) {
    throw fail('the zip64 and classic end records disagree');
  }
  [entries, cdSize, cdOffset] = [e64, size64, off64];
  return { entries, cdSize, cdOffset, cdEnd: z64Pos };
}

function parseCentralDirectory(cd: Buffer, count: number, fail: Fail): Central[] {
  const out: Central[] = [];
  const seen = new Set<string>();
  let p = 0;
  for (let i = 0; i < count; i++) {
    if (p + 46 > cd.length || cd.readUInt32LE(p) !== SIG.central) throw fail(`central directory entry ${i} is truncated or malformed`);
    const madeBy = cd.readUInt16LE(p + 4);
    const flags = cd.readUInt16LE(p + 8);
    const method = cd.readUInt16LE(p + 10);
    const nameLen = cd.readUInt16LE(p + 28);
    const extraLen = cd.readUInt16LE(p + 30);
    const commentLen = cd.readUInt16LE(p + 32);
    const next = p + 46 + nameLen + extraLen + commentLen;
    if (next > cd.length) throw fail(`central directory entry ${i} is truncated`);
    const nameBytes = cd.subarray(p + 46, p + 46 + nameLen);
    const name = checkName(nameBytes, flags, fail);
    const label = `entry ${JSON.stringify(name)}`;
    const key = name.normalize('NFC').toLowerCase();
    if (seen.has(key)) throw fail(`duplicate ${label} (names are compared ignoring case)`);
    seen.add(key);
    if (hidesArchive(cd.subarray(next - commentLen, next))) throw fail(`${label} has a comment containing zip records`);

    const z64 = zip64Extra(cd.subarray(p + 46 + nameLen, p + 46 + nameLen + extraLen), label, fail);
    let uncompressedSize = cd.readUInt32LE(p + 24);
    let compressedSize = cd.readUInt32LE(p + 20);
    let localHeaderOffset = cd.readUInt32LE(p + 42);
    let disk = cd.readUInt16LE(p + 34);
    const take = () => {
      const v = z64.shift();
      if (v === undefined) throw fail(`${label}: zip64 extra field is missing a value`);
      return v;
    };
    if (uncompressedSize === U32_MAX) uncompressedSize = take();
    if (compressedSize === U32_MAX) compressedSize = take();
    if (localHeaderOffset === U32_MAX) localHeaderOffset = take();
    if (disk === U16_MAX) disk = take();
    if (disk !== 0) throw fail(`${label} is on another disk`);

    if (flags & 0x2041) throw fail(`${label} is encrypted`);
    if (method !== 0 && method !== 8)
      throw fail(
        `${label} uses compression method ${method}${method === 99 ? ' (AES encryption)' : ''}; only stored and deflate are allowed`,
      );
    const unixMode = madeBy >> 8 === 3 ? cd.readUInt32LE(p + 38) >>> 16 : 0;
    if ((unixMode & 0o170000) === 0o120000) throw fail(`${label} is a symbolic link`);
    if (uncompressedSize > ZIP_LIMITS.maxEntryBytes) throw fail(`${label} declares ${uncompressedSize} bytes (more than 4 GiB)`);
    if (method === 0 && compressedSize !== uncompressedSize) throw fail(`${label} is stored but its sizes differ`);
    if (method === 8 && uncompressedSize > ZIP_LIMITS.maxCompressionRatio * compressedSize) {
      throw fail(`${label} declares a compression ratio above ${ZIP_LIMITS.maxCompressionRatio}:1 (zip bomb?)`);
    }
    const isDirectory = name.endsWith('/');
    if (isDirectory && uncompressedSize !== 0) throw fail(`${label} is a directory with data`);
    if (NESTED_NAME.test(name)) throw fail(`${label} is a nested archive or model file`);
    out.push({
      name,
      nameBytes,
      flags,
      method,
      crc32: cd.readUInt32LE(p + 16),
      compressedSize,
      uncompressedSize,
      localHeaderOffset,
      isDirectory,
    });
    p = next;
  }
  if (p !== cd.length) throw fail('central directory holds more data than its entries');
  return out;
}

/** Cross-checks the local header (and data descriptor) of one entry against its central record. */
async function checkLocal(reader: RandomAccessReader, c: Central, cdOffset: number, format: string): Promise<ZipEntry> {
  const fail = failer(format);
  const label = `entry ${JSON.stringify(c.name)}`;
  if (c.localHeaderOffset + 30 > cdOffset) throw fail(`${label}: local header offset points past the entries`);
  const head = await readExact(reader, c.localHeaderOffset, 30, `${label} local header`, format);
  if (head.readUInt32LE(0) !== SIG.local) throw fail(`${label}: no local header at its offset`);
  const nameLen = head.readUInt16LE(26);
  const extraLen = head.readUInt16LE(28);
  const dataOffset = c.localHeaderOffset + 30 + nameLen + extraLen;
  const peek = c.method === 0 ? Math.min(4, c.compressedSize) : 0;
  if (dataOffset + peek > reader.size) throw fail(`${label}: local header runs past the end of the file`);
  const rest = await readExact(reader, c.localHeaderOffset + 30, nameLen + extraLen + peek, `${label} local header`, format);
  if (!rest.subarray(0, nameLen).equals(c.nameBytes)) throw fail(`${label}: local header names a different file`);
  if (head.readUInt16LE(6) !== c.flags || head.readUInt16LE(8) !== c.method)
    throw fail(`${label}: local header flags or method differ from the central directory`);

  const localExtra = rest.subarray(nameLen, nameLen + extraLen);
  const z64 = zip64Extra(localExtra, label, fail);
  const crc = head.readUInt32LE(14);
  let compressed = head.readUInt32LE(18);
  let uncompressed = head.readUInt32LE(22);
  if (uncompressed === U32_MAX || compressed === U32_MAX) {
    // APPNOTE 4.5.3: a local zip64 field carries both sizes, uncompressed first.
    [uncompressed, compressed] = [z64[0] ?? -1, z64[1] ?? -1];
  }
  const dataEnd = dataOffset + c.compressedSize;
  if (dataEnd > reader.size) throw fail(`${label}: declared size runs past the end of the file`);
  if (dataEnd > cdOffset) throw fail(`${label}: data overlaps the central directory`);

  let descriptorSize = 0;
  if (c.flags & 0x08) {
    const zeroOrSame = (v: number, want: number) => v === 0 || v === want;
    if (!zeroOrSame(crc, c.crc32) || !zeroOrSame(compressed, c.compressedSize) || !zeroOrSame(uncompressed, c.uncompressedSize)) {
      throw fail(`${label}: local header sizes differ from the central directory`);
    }
    descriptorSize = await checkDescriptor(reader, c, dataEnd, cdOffset, z64.length > 0, fail);
  } else if (crc !== c.crc32 || compressed !== c.compressedSize || uncompressed !== c.uncompressedSize) {
    throw fail(`${label}: local header sizes or CRC differ from the central directory`);
  }
  if (peek === 4 && hidesArchive(rest.subarray(nameLen + extraLen), true)) throw fail(`${label} contains a nested zip archive`);
  return {
    name: c.name,
    method: c.method,
    flags: c.flags,
    crc32: c.crc32,
    compressedSize: c.compressedSize,
    uncompressedSize: c.uncompressedSize,
    localHeaderOffset: c.localHeaderOffset,
    dataOffset,
    descriptorSize,
    isDirectory: c.isDirectory,
  };
}

/** The data descriptor after an entry's data must exist and repeat the central directory's values. */
async function checkDescriptor(
  reader: RandomAccessReader,
  c: Central,
  at: number,
  limit: number,
  wide: boolean,
  fail: Fail,
): Promise<number> {
  const label = `entry ${JSON.stringify(c.name)}`;
  const sizeBytes = wide ? 8 : 4;
  const avail = Math.min(limit - at, 8 + 2 * sizeBytes);
  const buf = avail > 0 ? await reader.read(at, avail) : Buffer.alloc(0);
  const signed = buf.length >= 4 && buf.readUInt32LE(0) === SIG.descriptor;
  const base = signed ? 4 : 0;
  const total = base + 4 + 2 * sizeBytes;
  if (buf.length < total) throw fail(`${label}: data descriptor is missing`);
  const read = (o: number) => (wide ? Number(buf.readBigUInt64LE(o)) : buf.readUInt32LE(o));
  if (buf.readUInt32LE(base) !== c.crc32 || read(base + 4) !== c.compressedSize || read(base + 4 + sizeBytes) !== c.uncompressedSize) {
    throw fail(`${label}: data descriptor differs from the central directory`);
  }
  return total;
}

/** Entries, sorted by offset, must cover [0, central directory) exactly: no prefix, gap or overlap. */
function checkTiling(entries: ZipEntry[], cdOffset: number, fail: Fail): void {
  const sorted = [...entries].sort((a, b) => a.localHeaderOffset - b.localHeaderOffset);
  let expected = 0;
  let previous: ZipEntry | undefined;
  for (const e of sorted) {
    const name = JSON.stringify(e.name);
    if (previous && e.localHeaderOffset < expected) throw fail(`entry ${name} overlaps entry ${JSON.stringify(previous.name)}`);
    if (e.localHeaderOffset > expected) {
      const gap = e.localHeaderOffset - expected;
      throw fail(previous ? `${gap} unaccounted bytes before entry ${name}` : `${gap} bytes of prefix data before the first entry`);
    }
    expected = e.dataOffset + e.compressedSize + e.descriptorSize;
    previous = e;
  }
  if (expected !== cdOffset) throw fail(`${cdOffset - expected} unaccounted bytes before the central directory`);
}

/** Values of the zip64 extended-information field (id 1), in order; validates the extra field layout. */
function zip64Extra(extra: Buffer, label: string, fail: Fail): number[] {
  let values: number[] = [];
  let seen = false;
  for (let p = 0; p < extra.length; ) {
    if (p + 4 > extra.length) throw fail(`${label}: malformed extra field`);
    const id = extra.readUInt16LE(p);
    const len = extra.readUInt16LE(p + 2);
    if (p + 4 + len > extra.length) throw fail(`${label}: malformed extra field`);
    if (id === 1) {
      if (seen || len % 8 > 4) throw fail(`${label}: malformed zip64 extra field`);
      seen = true;
      values = [];
      for (let q = p + 4; q + 8 <= p + 4 + len; q += 8) values.push(safe(extra.readBigUInt64LE(q), fail));
    }
    p += 4 + len;
  }
  return values;
}

function checkName(bytes: Buffer, flags: number, fail: Fail): string {
  if (bytes.length === 0) throw fail('an entry has an empty name');
  if (bytes.length > ZIP_LIMITS.maxNameBytes) throw fail(`an entry name is longer than ${ZIP_LIMITS.maxNameBytes} bytes`);
  let name: string;
  if (flags & 0x800) {
    try {
      name = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
    } catch {
      throw fail('an entry name is not valid UTF-8');
    }
  } else {
    if (bytes.some((b) => b >= 0x80)) throw fail('an entry name is not ASCII and not flagged UTF-8');
    name = bytes.toString('latin1');
  }
  const shown = JSON.stringify(name.length > 120 ? `${name.slice(0, 120)}…` : name);
  if (UNSAFE_CHAR.test(name)) throw fail(`entry name ${shown} contains control or invisible characters`);
  if (name.includes('\\')) throw fail(`entry name ${shown} contains a backslash`);
  if (name.startsWith('/') || /^[A-Za-z]:/.test(name)) throw fail(`entry name ${shown} is an absolute path`);
  const segments = (name.endsWith('/') ? name.slice(0, -1) : name).split('/');
  if (segments.includes('..')) throw fail(`entry name ${shown} has a ".." segment`);
  if (segments.some((s) => s === '' || s === '.')) throw fail(`entry name ${shown} has an empty or "." segment`);
  return name;
}

/** Whether `buf` contains a zip record signature (`atStart`: only at offset 0 — a nested archive). */
function hidesArchive(buf: Buffer, atStart = false): boolean {
  const last = atStart && buf.length >= 4 ? 0 : buf.length - 4;
  for (let i = 0; i <= last; i++) {
    if (buf[i] !== 0x50 || buf[i + 1] !== 0x4b) continue;
    const kind = buf.readUInt16BE(i + 2);
    if ([0x0102, 0x0304, 0x0506, 0x0606, 0x0607, 0x0708].includes(kind)) return true;
  }
  return false;
}

function safe(v: bigint, fail: Fail): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw fail('a zip64 value is absurdly large');
  return Number(v);
}
