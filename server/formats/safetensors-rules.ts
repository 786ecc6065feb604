/**
 * The rules a safetensors header must satisfy once its bytes are in. They follow
 * huggingface/safetensors (`safetensors/src/tensor.rs`: `read_metadata` / `Metadata::validate`)
 * and add ours: no duplicate or prototype keys, entries with exactly the three known fields,
 * bounded tensor count and name length, at least one tensor. Pure: no I/O.
 */
import { InvalidFileError } from '../domain/errors.ts';
import { type ArgKind, HIGHEST_PROTOCOL, OPCODES } from './pickle-opcodes.ts';
import { JsonNumber, JsonObject, type JsonValue, parseStrictJson, quoteKey, StrictJsonError } from './strict-json.ts';

/** The largest header the reference accepts (and so do we), in bytes. */
export const MAX_HEADER_BYTES = 100_000_000;
/** Most tensors one file may declare. */
export const MAX_TENSORS = 100_000;
/** Longest tensor name, in UTF-16 code units. */
export const MAX_TENSOR_NAME_LENGTH = 1_024;

/**
 * Bits per element of every dtype the reference knows (its `Dtype` enum, safetensors ≥ 0.6),
 * including the sub-byte MX formats: a tensor's bit count must be a whole number of bytes.
 */
export const DTYPE_BITS: ReadonlyMap<string, number> = new Map([
  ['BOOL', 8],
  ['F4', 4],
  ['F6_E2M3', 6],
  ['F6_E3M2', 6],
  ['U8', 8],
  ['I8', 8],
  ['F8_E5M2', 8],
  ['F8_E4M3', 8],
  ['F8_E8M0', 8],
  ['F8_E4M3FNUZ', 8],
  ['F8_E5M2FNUZ', 8],
  ['I16', 16],
  ['U16', 16],
  ['F16', 16],
  ['BF16', 16],
  ['I32', 32],
  ['U32', 32],
  ['F32', 32],
  ['C64', 64],
  ['F64', 64],
  ['I64', 64],
  ['U64', 64],
]);

export interface SafetensorsTensor {
  name: string;
  dtype: string;
  shape: number[];
  /** Byte range inside the data section (which starts at `dataStart`). */
  begin: number;
  end: number;
}

export interface SafetensorsHeader {
  /** N: the JSON header's length in bytes (padding included). */
  headerLength: number;
  /** 8 + N: where the data section starts in the file. */
  dataStart: number;
  /** Length of the data section = the last tensor's end offset. */
  dataEnd: number;
  /** Sorted by offsets. */
  tensors: SafetensorsTensor[];
  /** `__metadata__` (string → string), a null-prototype object. */
  metadata: Record<string, string>;
}

const U64_MAX = (1n << 64n) - 1n;
const JSON_LIMITS = { maxDepth: 3, maxObjectEntries: MAX_TENSORS + 1, maxArrayLength: 64 };
const TENSOR_FIELDS = ['dtype', 'shape', 'data_offsets'] as const;

/** Throws the one error type of this module. */
export function reject(reason: string): never {
  throw new InvalidFileError('safetensors', reason);
}

function kindOf(value: JsonValue): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  if (value instanceof JsonObject) return 'object';
  if (value instanceof JsonNumber) return 'number';
  return typeof value;
}

/** A non-negative JSON integer as a BigInt, or undefined (fractions, exponents, negatives). */
function nonNegativeInteger(value: JsonValue | undefined): bigint | undefined {
  if (!(value instanceof JsonNumber) || !/^(?:0|[1-9][0-9]*)$/.test(value.text) || value.text.length > 40) return undefined;
  return BigInt(value.text);
}

function readMetadata(value: JsonValue): Record<string, string> {
  if (!(value instanceof JsonObject)) reject(`__metadata__ must be an object of strings, got ${kindOf(value)}`);
  const metadata: Record<string, string> = Object.create(null);
  for (const [key, v] of value.entries) {
    if (typeof v !== 'string') reject(`__metadata__ value for ${quoteKey(key)} must be a string, got ${kindOf(v)}`);
    metadata[key] = v;
  }
  return metadata;
}

function readShape(name: string, value: JsonValue | undefined): { shape: number[]; elements: bigint } {
  const q = quoteKey(name);
  if (!Array.isArray(value)) return reject(`tensor ${q} shape must be an array of non-negative integers`);
  const shape: number[] = [];
  let elements = 1n;
  let overflowed = false;
  for (const item of value) {
    const dim = nonNegativeInteger(item);
    if (dim === undefined) reject(`tensor ${q} shape must be an array of non-negative integers`);
    if (dim > BigInt(Number.MAX_SAFE_INTEGER)) reject(`tensor ${q} shape dimension ${dim} is too large`);
    shape.push(Number(dim));
    elements *= dim;
    if (elements > U64_MAX) overflowed = true; // the reference multiplies in u64 with overflow checks
  }
  if (overflowed) reject(`tensor ${q} shape [${shape.join(', ')}] element count overflows`);
  return { shape, elements };
}

function readOffsets(name: string, value: JsonValue | undefined, dataStart: number): { begin: number; end: number } {
  const q = quoteKey(name);
  const pair = Array.isArray(value) && value.length === 2 ? value.map(nonNegativeInteger) : [];
  const [begin, end] = pair;
  if (begin === undefined || end === undefined) reject(`tensor ${q} data_offsets must be [begin, end] non-negative integers`);
  if (begin > end) reject(`tensor ${q} data_offsets run backwards (begin ${begin} > end ${end})`);
  if (end > BigInt(Number.MAX_SAFE_INTEGER - dataStart)) reject(`tensor ${q} data_offsets end ${end} is beyond any supported file size`);
  return { begin: Number(begin), end: Number(end) };
}

function readTensor(name: string, value: JsonValue, dataStart: number): SafetensorsTensor {
  const q = quoteKey(name);
  if (name.length === 0) reject('a tensor has an empty name');
  if (name.length > MAX_TENSOR_NAME_LENGTH) reject(`tensor name ${q} is longer than ${MAX_TENSOR_NAME_LENGTH} characters`);
  if (!(value instanceof JsonObject)) reject(`tensor ${q} must be an object with dtype, shape and data_offsets, got ${kindOf(value)}`);
  const fields = new Map(value.entries);
  for (const key of fields.keys()) {
    if (!(TENSOR_FIELDS as readonly string[]).includes(key)) reject(`tensor ${q} has unexpected field ${quoteKey(key)}`);
  }
  for (const key of TENSOR_FIELDS) if (!fields.has(key)) reject(`tensor ${q} is missing '${key}'`);
  const dtype = fields.get('dtype');
  const bits = typeof dtype === 'string' ? DTYPE_BITS.get(dtype) : undefined;
  if (typeof dtype !== 'string' || bits === undefined) {
    reject(`tensor ${q} has unknown dtype ${typeof dtype === 'string' ? quoteKey(dtype) : kindOf(dtype ?? null)}`);
  }
  const { shape, elements } = readShape(name, fields.get('shape'));
  const { begin, end } = readOffsets(name, fields.get('data_offsets'), dataStart);
  const totalBits = elements * BigInt(bits);
  if (totalBits % 8n !== 0n) reject(`tensor ${q} has ${elements} ${dtype} elements (${totalBits} bits), not a whole number of bytes`);
  const bytes = totalBits / 8n;
  if (bytes !== BigInt(end - begin)) {
    reject(`tensor ${q} shape [${shape.join(', ')}] of ${dtype} needs ${bytes} bytes but its data_offsets span ${end - begin}`);
  }
  return { name, dtype, shape, begin, end };
}

/** Sorted by offsets, tensors must tile the data section from 0 with no gap and no overlap. */
function checkLayout(tensors: SafetensorsTensor[]): number {
  tensors.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let expected = 0;
  let previous: SafetensorsTensor | undefined;
  for (const t of tensors) {
    if (t.begin > expected) {
      reject(
        previous
          ? `tensor ${quoteKey(t.name)} data_offsets start at ${t.begin}, leaving a gap after tensor ${quoteKey(previous.name)} (ends at ${expected})`
          : `tensor ${quoteKey(t.name)} data_offsets start at ${t.begin}, leaving a gap at the start of the data section`,
      );
    }
    if (t.begin < expected && previous) reject(`tensor ${quoteKey(t.name)} data_offsets overlap tensor ${quoteKey(previous.name)}`);
    expected = t.end;
    previous = t;
  }
  return expected;
}

/**
 * Validates a complete, UTF-8-decoded header of `headerLength` bytes and returns it parsed.
 * Throws `InvalidFileError('safetensors', reason)` naming the first rule that fails.
 */
export function validateHeaderText(text: string, headerLength: number): SafetensorsHeader {
  let root: JsonValue;
  try {
    root = parseStrictJson(text, JSON_LIMITS);
  } catch (error) {
    if (!(error instanceof StrictJsonError)) throw error;
    if (error.kind === 'key') return reject(error.message);
    return reject(error.kind === 'limit' ? `header is too complex: ${error.message}` : `header is not valid JSON: ${error.message}`);
  }
  if (!(root instanceof JsonObject)) return reject(`header must be a JSON object, got ${kindOf(root)}`);
  const dataStart = 8 + headerLength;
  let metadata: Record<string, string> = Object.create(null);
  const tensors: SafetensorsTensor[] = [];
  for (const [key, value] of root.entries) {
    if (key === '__metadata__') metadata = readMetadata(value);
    else tensors.push(readTensor(key, value, dataStart));
  }
  if (tensors.length === 0) reject('header declares no tensors');
  if (tensors.length > MAX_TENSORS) reject(`header declares more than ${MAX_TENSORS} tensors`);
  const dataEnd = checkLayout(tensors);
  return { headerLength, dataStart, dataEnd, tensors, metadata };
}

/** Where an opcode's inline argument starting at `at` ends in the 8 length bytes; > 8 when it reads on into the header, -1 when the unpickler fails on it. */
function argumentEnd(prefix: Uint8Array, at: number, kind: ArgKind): number {
  const PAST = 9;
  const fixed = { none: 0, u1: 1, u2: 2, u4: 4, i4: 4, u8: 8 } as const;
  if (kind in fixed) return at + fixed[kind as keyof typeof fixed];
  if (kind === 'line' || kind === 'line2') {
    let end = at;
    for (let lines = kind === 'line' ? 1 : 2; lines > 0; lines--) {
      const newline = prefix.indexOf(0x0a, end);
      if (newline < 0 || newline >= 8) return PAST;
      end = newline + 1;
    }
    return end;
  }
  const width = kind === 'len1' ? 1 : kind === 'len8' ? 8 : 4;
  if (at + width > 8) return PAST;
  const view = Buffer.from(prefix.buffer, prefix.byteOffset + at, width);
  const count = width === 1 ? view.readUInt8(0) : width === 4 ? (kind === 'len4s' ? view.readInt32LE(0) : view.readUInt32LE(0)) : PAST;
  return count < 0 ? -1 : at + width + count;
}

/**
 * The pickle-prologue rule (THREATS 28), ours: refuses 8 header-length bytes that open a pickle —
 * `PROTO 2..5` (0x80, 2..5: what torch.save's legacy format starts with) — whose opcodes read on
 * past the 8 bytes into the header, where the rest of a pickle can hide (the file is then both
 * safetensors and a pickle that torch.load / pickle.load runs). A pickle whose opcodes fail or end
 * inside the 8 bytes is harmless: the unpickler stops there. Since a header is at most
 * MAX_HEADER_BYTES, bytes 4..7 are 0 and byte 3 is at most 5, so only lengths whose byte 2 is an
 * opcode with a line or length-prefixed argument are refused: all above 4 MiB (see decisions.md).
 * Returns the reason, or null.
 */
export function picklePrologue(prefix: Uint8Array): string | null {
  const protocol = prefix[1];
  if (prefix[0] !== 0x80 || protocol === undefined || protocol < 2 || protocol > HIGHEST_PROTOCOL) return null;
  const names = [`PROTO ${protocol}`];
  for (let at = 2; at < 8; ) {
    const info = OPCODES.get(prefix[at] ?? -1);
    if (!info) return null;
    names.push(info.name);
    const end = argumentEnd(prefix, at + 1, info.arg);
    if (end < 0) return null;
    if (end > 8) return `header length bytes read as the start of a pickle (${names.join(', ')}) that runs on into the header`;
    at = end;
  }
  return null;
}
