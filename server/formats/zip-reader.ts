/**
 * Random access to an upload's bytes (a spooled temp file, or a Buffer in tests), and reading one
 * zip entry's bytes with hard caps. Pure apart from reading the handle it is given.
 */
import type { FileHandle } from 'node:fs/promises';
import { crc32, inflateRawSync } from 'node:zlib';
import { InvalidFileError } from '../domain/errors.ts';

/** Reads byte ranges of a file of known size. `read` may return fewer bytes only at the end of the file. */
export interface RandomAccessReader {
  size: number;
  read(offset: number, length: number): Promise<Buffer>;
}

/** A reader over an in-memory buffer (tests, small files). */
export function bufferReader(buf: Buffer): RandomAccessReader {
  return {
    size: buf.length,
    read: async (offset, length) => buf.subarray(Math.max(0, offset), Math.max(0, Math.min(buf.length, offset + length))),
  };
}

/** A reader over an open file handle; `size` is the byte count the caller counted while writing it. */
export function fileReader(handle: FileHandle, size: number): RandomAccessReader {
  return {
    size,
    async read(offset, length) {
      const out = Buffer.alloc(Math.max(0, Math.min(length, size - offset)));
      let done = 0;
      while (done < out.length) {
        const { bytesRead } = await handle.read(out, done, out.length - done, offset + done);
        if (bytesRead === 0) break;
        done += bytesRead;
      }
      return out.subarray(0, done);
    },
  };
}

/**
 * Serves small reads from one cached block (default 64 KiB) read ahead from the underlying reader:
 * walking local headers in file order then costs one read per block instead of several per entry.
 */
export function readAheadReader(reader: RandomAccessReader, blockSize = 64 * 1024): RandomAccessReader {
  let blockStart = -1;
  let block: Buffer = Buffer.alloc(0);
  return {
    size: reader.size,
    async read(offset, length) {
      if (length > blockSize) return reader.read(offset, length);
      if (blockStart < 0 || offset < blockStart || offset + length > blockStart + block.length) {
        block = await reader.read(offset, Math.min(blockSize, reader.size - offset));
        blockStart = offset;
      }
      return block.subarray(offset - blockStart, offset - blockStart + length);
    },
  };
}

/** Exactly `length` bytes at `offset`, or InvalidFileError naming `what` was cut off. */
export async function readExact(reader: RandomAccessReader, offset: number, length: number, what: string, format: string): Promise<Buffer> {
  if (offset < 0 || length < 0 || offset + length > reader.size) {
    throw new InvalidFileError(format, `${what} runs past the end of the file (truncated?)`);
  }
  const buf = await reader.read(offset, length);
  if (buf.length !== length) throw new InvalidFileError(format, `${what}: short read (file truncated while reading)`);
  return buf;
}

/** What {@link readZipEntry} needs to know about an entry (a ZipEntry from zip-inspect.ts). */
export interface EntryLocation {
  name: string;
  method: number;
  crc32: number;
  compressedSize: number;
  uncompressedSize: number;
  dataOffset: number;
}

/**
 * An entry's uncompressed bytes, at most `maxBytes` of them: stored entries are read as they are,
 * deflated ones inflated with a hard output cap. The length and CRC-32 must match the central
 * directory. Throws InvalidFileError otherwise.
 */
export async function readZipEntry(reader: RandomAccessReader, entry: EntryLocation, maxBytes: number, format = 'zip'): Promise<Buffer> {
  const label = `entry ${JSON.stringify(entry.name)}`;
  if (entry.uncompressedSize > maxBytes) throw new InvalidFileError(format, `${label} is larger than ${maxBytes} bytes`);
  const raw = await readExact(reader, entry.dataOffset, entry.compressedSize, label, format);
  let data = raw;
  if (entry.method === 8) {
    try {
      data = inflateRawSync(raw, { maxOutputLength: Math.max(1, entry.uncompressedSize) });
    } catch {
      throw new InvalidFileError(format, `${label}: deflate data is corrupt or inflates beyond its declared size`);
    }
  } else if (entry.method !== 0) {
    throw new InvalidFileError(format, `${label}: compression method ${entry.method} is not supported`);
  }
  if (data.length !== entry.uncompressedSize) throw new InvalidFileError(format, `${label}: size differs from the central directory`);
  if (crc32(data) >>> 0 !== entry.crc32 >>> 0) throw new InvalidFileError(format, `${label}: CRC-32 mismatch`);
  return data;
}
