/**
 * Streaming safetensors header reader. A safetensors file is an 8-byte little-endian header
 * length N, N bytes of UTF-8 JSON (possibly padded with spaces), then the tensor data. The upload
 * pipeline feeds chunks as they arrive; the reader decides as early as possible (the length
 * prefix, the first header byte, each invalid UTF-8 sequence) and keeps nothing but the header
 * bytes received so far (never a buffer sized from the declared length). Every rejection is `InvalidFileError('safetensors', reason)`. Pure: no I/O.
 */
import { MAX_HEADER_BYTES, picklePrologue, reject, type SafetensorsHeader, validateHeaderText } from './safetensors-rules.ts';
import { describeFormat, sniffFormat } from './sniff.ts';

export type { SafetensorsHeader, SafetensorsTensor } from './safetensors-rules.ts';
export { DTYPE_BITS, MAX_HEADER_BYTES, MAX_TENSOR_NAME_LENGTH, MAX_TENSORS } from './safetensors-rules.ts';

const PREFIX_BYTES = 8;

export interface SafetensorsReaderOptions {
  /** The whole file's size when known up front: lets the reader reject a header running past it, and check the total at once. */
  fileSize?: number;
}

/** A hint for the reason when the bytes look like some other known format, else ''. */
function looksLike(head: Uint8Array): string {
  const sniffed = sniffFormat(head);
  if (sniffed.kind === 'safetensors' || (sniffed.kind === 'unknown' && sniffed.detected === 'unknown')) return '';
  return ` (the file looks like ${describeFormat(sniffed.kind === 'unknown' ? sniffed.detected : sniffed.kind)})`;
}

/**
 * Incremental header parser: `push` each chunk in order; it returns the parsed header once the
 * 8 + N header bytes are in (later pushes return the same header and ignore their bytes), and
 * throws as soon as something is wrong (and again on every later call).
 */
export class SafetensorsHeaderReader {
  private readonly prefix = new Uint8Array(PREFIX_BYTES);
  private prefixLength = 0;
  private headerLength = -1;
  private received = 0;
  /** The header bytes received so far; grows with them (never sized from N up front), at most N. */
  private bytes: Uint8Array | undefined;
  /** Validates UTF-8 as bytes arrive; its output is dropped (the text is decoded once at the end). */
  private readonly decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
  private header: SafetensorsHeader | undefined;
  private failure: unknown;

  constructor(private readonly options: SafetensorsReaderOptions = {}) {}

  /** Feeds the next chunk; returns the header once complete, else undefined. */
  push(chunk: Uint8Array): SafetensorsHeader | undefined {
    if (this.failure !== undefined) throw this.failure;
    if (this.header) return this.header;
    try {
      return this.consume(chunk);
    } catch (error) {
      this.failure = error;
      this.bytes = undefined;
      throw error;
    }
  }

  /** Call when the stream has ended: throws if the file stopped before its header was complete. */
  finish(): SafetensorsHeader {
    if (this.failure !== undefined) throw this.failure;
    if (this.header) return this.header;
    if (this.prefixLength === 0) reject('file is empty');
    if (this.prefixLength < PREFIX_BYTES) reject(`file is ${this.prefixLength} bytes, shorter than the 8-byte header length prefix`);
    return reject(
      `file ends after ${PREFIX_BYTES + this.received} bytes, inside its ${this.headerLength}-byte header (truncated, or the header length is wrong)`,
    );
  }

  private consume(chunk: Uint8Array): SafetensorsHeader | undefined {
    let offset = 0;
    if (this.prefixLength < PREFIX_BYTES) {
      const take = Math.min(PREFIX_BYTES - this.prefixLength, chunk.length);
      this.prefix.set(chunk.subarray(0, take), this.prefixLength);
      this.prefixLength += take;
      offset = take;
      if (this.prefixLength < PREFIX_BYTES) return undefined;
      this.headerLength = this.readHeaderLength();
    }
    const take = Math.min(this.headerLength - this.received, chunk.length - offset);
    if (take <= 0) return undefined;
    const slice = chunk.subarray(offset, offset + take);
    if (this.received === 0 && slice[0] !== 0x7b) {
      reject(`header does not start with '{'${looksLike(Uint8Array.of(...this.prefix, slice[0] ?? 0))}`);
    }
    this.checkUtf8(slice, true);
    this.append(slice);
    if (this.received < this.headerLength) return undefined;
    this.checkUtf8(new Uint8Array(0), false);
    const text = new TextDecoder('utf-8', { ignoreBOM: true }).decode(this.bytes?.subarray(0, this.received));
    this.bytes = undefined;
    const header = validateHeaderText(text, this.headerLength);
    if (this.options.fileSize !== undefined) assertCompleteSize(header, this.options.fileSize);
    this.header = header;
    return header;
  }

  /** Checks N before anything is allocated for the header. */
  private readHeaderLength(): number {
    const n = Buffer.from(this.prefix.buffer, this.prefix.byteOffset, PREFIX_BYTES).readBigUInt64LE(0);
    if (n > BigInt(MAX_HEADER_BYTES)) reject(`header length ${n} exceeds ${MAX_HEADER_BYTES} bytes${looksLike(this.prefix)}`);
    if (n < 2n) reject(`header length ${n} is too small to hold a JSON object`);
    const pickle = picklePrologue(this.prefix);
    if (pickle) reject(pickle);
    const length = Number(n);
    const size = this.options.fileSize;
    if (size !== undefined && PREFIX_BYTES + length > size) {
      reject(`header length ${length} runs past the end of the ${size}-byte file`);
    }
    return length;
  }

  /** Copies `slice` in, growing the buffer geometrically but never past the header length. */
  private append(slice: Uint8Array): void {
    const needed = this.received + slice.length;
    if (!this.bytes || this.bytes.length < needed) {
      const grown = new Uint8Array(Math.min(this.headerLength, Math.max(needed, 2 * (this.bytes?.length ?? 0), 65_536)));
      if (this.bytes) grown.set(this.bytes.subarray(0, this.received));
      this.bytes = grown;
    }
    this.bytes.set(slice, this.received);
    this.received = needed;
  }

  private checkUtf8(bytes: Uint8Array, stream: boolean): void {
    try {
      this.decoder.decode(bytes, { stream });
    } catch {
      reject('header is not valid UTF-8');
    }
  }
}

/**
 * After the last byte: the file must be exactly 8 + N + the last tensor's end. Shorter means
 * truncated, longer means trailing bytes; either throws `InvalidFileError`.
 */
export function assertCompleteSize(header: SafetensorsHeader, totalBytes: number): void {
  const expected = header.dataStart + header.dataEnd;
  if (totalBytes < expected) {
    reject(
      `file is truncated: its header describes ${expected} bytes (8 + ${header.headerLength} header + ${header.dataEnd} data) but it has ${totalBytes}`,
    );
  }
  if (totalBytes > expected) {
    reject(`file has ${totalBytes - expected} trailing bytes after the last tensor (expected exactly ${expected} bytes)`);
  }
}

/** Parses and fully validates a whole safetensors file held in memory (tests, small files). */
export function parseSafetensorsFile(bytes: Uint8Array): SafetensorsHeader {
  const reader = new SafetensorsHeaderReader();
  reader.push(bytes);
  const header = reader.finish();
  assertCompleteSize(header, bytes.length);
  return header;
}
