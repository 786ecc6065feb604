/**
 * The rules a safetensors header must satisfy once its bytes are in. They follow
 * huggingface/safetensors (`safetensors/src/tensor.rs`: `read_metadata` / `Metadata::validate`)
 * and add ours: no duplicate or prototype keys, entries with exactly the three known fields,
 * bounded tensor count and name length, at least one tensor. Pure: no I/O.
 */
import { InvalidFileFormatError } from '../domain/errors.ts';
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
  throw new InvalidFileFormatError('safetensors', reason);
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
 * Throws `InvalidFileFormatError('safetensors', reason)` naming the first rule that fails.
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
