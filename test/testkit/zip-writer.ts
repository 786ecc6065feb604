/**
 * A minimal zip writer laid out like torch's (miniz) writer: local header with a data descriptor
 * (flag bit 3, zero sizes), an "FB" extra field padding the data to 64 bytes, and a zip64 end
 * record plus locator before the classic end record. Every field can be overridden to corrupt it.
 */
import { crc32, deflateRawSync } from 'node:zlib';

export interface ZipEntrySpec {
  name: string;
  data: Buffer;
  /** 0 stored (default, as torch), 8 deflate. */
  method?: 0 | 8;
  /** Overrides of central directory fields. */
  cd?: Partial<{
    compressedSize: number;
    uncompressedSize: number;
    crc32: number;
    localHeaderOffset: number;
    flags: number;
    externalAttr: number;
    madeBy: number;
  }>;
  /** Overrides of local header fields. */
  local?: Partial<{ name: string; compressedSize: number; uncompressedSize: number; crc32: number; flags: number }>;
}

export interface ZipOptions {
  /** Data descriptors after each entry (default true, like torch). */
  descriptor?: boolean;
  /** Pad data to 64-byte boundaries with an "FB" extra field (default true, like torch). */
  align?: boolean;
  /** zip64 end record and locator (default true, like torch). */
  zip64?: boolean;
  prefix?: Buffer;
  comment?: Buffer;
  /** Overrides the entry count in the end records. */
  entryCount?: number;
  /** Overrides the central directory size in the end records. */
  cdSize?: number;
}

export interface PreparedEntry {
  spec: ZipEntrySpec;
  nameBytes: Buffer;
  stored: Buffer;
  crc: number;
  method: number;
  flags: number;
}

export function prepare(spec: ZipEntrySpec, descriptor: boolean): PreparedEntry {
  const method = spec.method ?? 0;
  return {
    spec,
    nameBytes: Buffer.from(spec.name, 'utf8'),
    stored: method === 8 ? deflateRawSync(spec.data) : spec.data,
    crc: crc32(spec.data) >>> 0,
    method,
    flags: descriptor ? 0x0808 : 0x0800,
  };
}

/** Local header + data (+ descriptor) for an entry written at `offset`. */
export function localRecord(e: PreparedEntry, offset: number, opts: ZipOptions = {}): Buffer {
  const descriptor = opts.descriptor ?? true;
  const l = e.spec.local ?? {};
  const name = l.name === undefined ? e.nameBytes : Buffer.from(l.name, 'utf8');
  let extra = Buffer.alloc(0);
  if (opts.align ?? true) {
    const start = offset + 30 + name.length + 4;
    const pad = (64 - (start % 64)) % 64;
    extra = Buffer.concat([Buffer.from('FB'), u16(pad), Buffer.alloc(pad, 'Z')]);
  }
  const h = Buffer.alloc(30);
  h.writeUInt32LE(0x04034b50, 0);
  h.writeUInt16LE(20, 4);
  h.writeUInt16LE(l.flags ?? e.flags, 6);
  h.writeUInt16LE(e.method, 8);
  h.writeUInt32LE(l.crc32 ?? (descriptor ? 0 : e.crc), 14);
  h.writeUInt32LE(l.compressedSize ?? (descriptor ? 0 : e.stored.length), 18);
  h.writeUInt32LE(l.uncompressedSize ?? (descriptor ? 0 : e.spec.data.length), 22);
  h.writeUInt16LE(name.length, 26);
  h.writeUInt16LE(extra.length, 28);
  const parts = [h, name, extra, e.stored];
  if (descriptor) {
    const d = Buffer.alloc(16);
    d.writeUInt32LE(0x08074b50, 0);
    d.writeUInt32LE(e.crc, 4);
    d.writeUInt32LE(e.stored.length, 8);
    d.writeUInt32LE(e.spec.data.length, 12);
    parts.push(d);
  }
  return Buffer.concat(parts);
}

export function centralRecord(e: PreparedEntry, offset: number): Buffer {
  const c = e.spec.cd ?? {};
  const h = Buffer.alloc(46);
  h.writeUInt32LE(0x02014b50, 0);
  h.writeUInt16LE(c.madeBy ?? 20, 4);
  h.writeUInt16LE(20, 6);
  h.writeUInt16LE(c.flags ?? e.flags, 8);
  h.writeUInt16LE(e.method, 10);
  h.writeUInt32LE(c.crc32 ?? e.crc, 16);
  h.writeUInt32LE(c.compressedSize ?? e.stored.length, 20);
  h.writeUInt32LE(c.uncompressedSize ?? e.spec.data.length, 24);
  h.writeUInt16LE(e.nameBytes.length, 28);
  h.writeUInt32LE(c.externalAttr ?? 0, 38);
  h.writeUInt32LE(c.localHeaderOffset ?? offset, 42);
  return Buffer.concat([h, e.nameBytes]);
}

/**
 * [zip64 end record + locator +] classic end record for a central directory at `cdOffset`;
 * `at` is where these records start (normally cdOffset + cdSize).
 */
export function endRecords(count: number, cdOffset: number, cdSize: number, at: number, opts: ZipOptions = {}): Buffer {
  const comment = opts.comment ?? Buffer.alloc(0);
  const parts: Buffer[] = [];
  if (opts.zip64 ?? true) {
    const z = Buffer.alloc(56);
    z.writeUInt32LE(0x06064b50, 0);
    z.writeBigUInt64LE(44n, 4);
    z.writeUInt16LE(45, 12);
    z.writeUInt16LE(45, 14);
    z.writeBigUInt64LE(BigInt(count), 24);
    z.writeBigUInt64LE(BigInt(count), 32);
    z.writeBigUInt64LE(BigInt(cdSize), 40);
    z.writeBigUInt64LE(BigInt(cdOffset), 48);
    const loc = Buffer.alloc(20);
    loc.writeUInt32LE(0x07064b50, 0);
    loc.writeBigUInt64LE(BigInt(at), 8);
    loc.writeUInt32LE(1, 16);
    parts.push(z, loc);
  }
  const e = Buffer.alloc(22);
  e.writeUInt32LE(0x06054b50, 0);
  e.writeUInt16LE(Math.min(count, 0xffff), 8);
  e.writeUInt16LE(Math.min(count, 0xffff), 10);
  e.writeUInt32LE(cdSize, 12);
  e.writeUInt32LE(cdOffset, 16);
  e.writeUInt16LE(comment.length, 20);
  parts.push(e, comment);
  return Buffer.concat(parts);
}

/** A whole archive. */
export function makeZip(specs: ZipEntrySpec[], opts: ZipOptions = {}): Buffer {
  const prefix = opts.prefix ?? Buffer.alloc(0);
  const entries = specs.map((s) => prepare(s, opts.descriptor ?? true));
  const locals: Buffer[] = [];
  const centrals: Buffer[] = [];
  let offset = prefix.length;
  for (const e of entries) {
    const local = localRecord(e, offset, opts);
    centrals.push(centralRecord(e, offset));
    locals.push(local);
    offset += local.length;
  }
  const cd = Buffer.concat(centrals);
  const end = endRecords(opts.entryCount ?? entries.length, offset, opts.cdSize ?? cd.length, offset + cd.length, opts);
  return Buffer.concat([prefix, ...locals, cd, end]);
}

function u16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16LE(n);
  return b;
}
