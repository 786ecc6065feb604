/**
 * Every bad file of THREATS.md rows 1–3 as bytes (`BAD_SAFETENSORS`, re-exported by
 * lora-files.ts): huge or short header lengths, broken or hostile JSON, wrong tensor entries,
 * bad offsets, files too short or too long, and things that are not safetensors at all.
 */
import { smallSd15Lora } from './safetensors.ts';

/**
 * A safetensors-shaped file from raw parts: `header` verbatim (string → UTF-8, or bytes),
 * `dataLength` patterned data bytes, and the 8-byte length prefix = the header's real length
 * unless `declaredLength` says otherwise.
 */
export function rawSafetensors(header: string | Uint8Array, dataLength = 0, declaredLength?: bigint): Buffer {
  const json = typeof header === 'string' ? Buffer.from(header, 'utf8') : Buffer.from(header);
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(declaredLength ?? BigInt(json.length));
  const data = Buffer.alloc(dataLength);
  for (let i = 0; i < data.length; i++) data[i] = (i * 13 + 5) & 0xff;
  return Buffer.concat([prefix, json, data]);
}

/** One tensor entry's JSON. */
function entry(dtype: string, shape: unknown, offsets: unknown): string {
  return JSON.stringify({ dtype, shape, data_offsets: offsets });
}

/** A header of `"name": entry` pairs given as raw JSON fragments (so duplicates survive). */
function header(...pairs: [string, string][]): string {
  return `{${pairs.map(([k, v]) => `${JSON.stringify(k)}:${v}`).join(',')}}`;
}

const A16 = entry('F32', [2, 2], [0, 16]); // a valid 16-byte tensor at the start

export interface BadFile {
  name: string;
  bytes: Buffer;
  /** Matches the `reason` of the InvalidFileError the safetensors reader throws. */
  reasonMatches: RegExp;
  /** What `sniffFormat` says the bytes are ('safetensors', 'pt-pickle', or the `detected` name). */
  sniffedAs: string;
}

const VALID = smallSd15Lora();
const PNG = Buffer.concat([
  Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
  Buffer.from(
    '0000000d49484452000000010000000108060000001f15c4890000000d4944415478da63f8ffff3f0005fe02fea7d6a4b00000000049454e44ae426082',
    'hex',
  ),
]);
// A protocol-4 pickle of {'a': 1} (not a torch file): what `pickle.dumps` writes.
const PICKLE = Buffer.from('80049509000000000000007d948c0161944b01732e', 'hex');
const ZIP = Buffer.concat([Buffer.from('504b0304140000000000', 'hex'), Buffer.alloc(40, 0x41)]);
const TOO_MANY_DIMS_OVERFLOW = entry('F32', [2 ** 32, 2 ** 32, 2 ** 32], [0, 8]);

/** Every bad file of THREATS rows 1–3 with the reason it must be rejected for. */
export const BAD_SAFETENSORS: BadFile[] = [
  // Row 1: header length
  {
    name: 'header length u64 max',
    bytes: rawSafetensors('{}', 0, 2n ** 64n - 1n),
    reasonMatches: /^header length 18446744073709551615 exceeds 100000000 bytes/,
    sniffedAs: 'safetensors',
  },
  {
    name: 'header length 100 MB + 1',
    bytes: rawSafetensors(header(['a', A16]), 16, 100_000_001n),
    reasonMatches: /^header length 100000001 exceeds 100000000 bytes/,
    sniffedAs: 'safetensors',
  },
  {
    name: 'header length 2^53 + 1 (not a safe integer)',
    bytes: rawSafetensors('{}', 0, 2n ** 53n + 1n),
    reasonMatches: /^header length 9007199254740993 exceeds/,
    sniffedAs: 'safetensors',
  },
  {
    name: 'header length past the end of the file',
    bytes: rawSafetensors(header(['a', A16]), 0, 5_000n),
    reasonMatches: /^file ends after \d+ bytes, inside its 5000-byte header/,
    sniffedAs: 'safetensors',
  },
  { name: 'header length 1', bytes: rawSafetensors('{', 0, 1n), reasonMatches: /^header length 1 is too small/, sniffedAs: 'unknown' },
  {
    name: 'only 5 bytes',
    bytes: Buffer.from([0x10, 0, 0, 0, 0]),
    reasonMatches: /^file is 5 bytes, shorter than the 8-byte header length prefix/,
    sniffedAs: 'unknown',
  },
  // Row 2: header content
  {
    name: 'header is a JSON array',
    bytes: rawSafetensors('[1, 2]  '),
    reasonMatches: /^header does not start with '\{'/,
    sniffedAs: 'unknown',
  },
  {
    name: 'header is not UTF-8',
    bytes: rawSafetensors(Buffer.concat([Buffer.from('{"a'), Buffer.from([0xff, 0xfe]), Buffer.from('}')])),
    reasonMatches: /^header is not valid UTF-8/,
    sniffedAs: 'safetensors',
  },
  {
    name: 'header is truncated JSON',
    bytes: rawSafetensors(`{"a":${A16}`),
    reasonMatches: /^header is not valid JSON/,
    sniffedAs: 'safetensors',
  },
  {
    name: 'header has a trailing comma',
    bytes: rawSafetensors(`{"a":${A16},}`, 16),
    reasonMatches: /^header is not valid JSON/,
    sniffedAs: 'safetensors',
  },
  {
    name: 'header has an escaped lone surrogate',
    bytes: rawSafetensors(`{"a\\ud800":${A16}}`, 16),
    reasonMatches: /^header is not valid JSON: lone high surrogate/,
    sniffedAs: 'safetensors',
  },
  {
    name: 'header nested too deeply',
    bytes: rawSafetensors(`{"a":{"dtype":"F32","shape":[[[2]]],"data_offsets":[0,16]}}`, 16),
    reasonMatches: /^header is too complex: JSON is nested more than 3 levels deep/,
    sniffedAs: 'safetensors',
  },
  {
    name: 'duplicate tensor name',
    bytes: rawSafetensors(header(['a', A16], ['a', entry('F32', [2, 2], [16, 32])]), 32),
    reasonMatches: /^duplicate key 'a'$/,
    sniffedAs: 'safetensors',
  },
  {
    name: 'duplicate field in a tensor',
    bytes: rawSafetensors('{"a":{"dtype":"F32","dtype":"F16","shape":[2,2],"data_offsets":[0,16]}}', 16),
    reasonMatches: /^duplicate key 'dtype'$/,
    sniffedAs: 'safetensors',
  },
  {
    name: 'duplicate __metadata__ key',
    bytes: rawSafetensors(`{"__metadata__":{"k":"1","k":"2"},"a":${A16}}`, 16),
    reasonMatches: /^duplicate key 'k'$/,
    sniffedAs: 'safetensors',
  },
  {
    name: '__proto__ tensor',
    bytes: rawSafetensors(header(['__proto__', A16]), 16),
    reasonMatches: /^forbidden key '__proto__'$/,
    sniffedAs: 'safetensors',
  },
  {
    name: '__proto__ in __metadata__',
    bytes: rawSafetensors(`{"__metadata__":{"__proto__":{"polluted":"yes"}},"a":${A16}}`, 16),
    reasonMatches: /^forbidden key '__proto__'$/,
    sniffedAs: 'safetensors',
  },
  {
    name: 'constructor.prototype in a tensor',
    bytes: rawSafetensors(`{"a":{"constructor":{"prototype":{"polluted":"yes"}}}}`),
    reasonMatches: /^forbidden key 'constructor'$/,
    sniffedAs: 'safetensors',
  },
  {
    name: 'non-string __metadata__ value',
    bytes: rawSafetensors(`{"__metadata__":{"ss_network_dim":4},"a":${A16}}`, 16),
    reasonMatches: /^__metadata__ value for 'ss_network_dim' must be a string, got number$/,
    sniffedAs: 'safetensors',
  },
  {
    name: '__metadata__ is an array',
    bytes: rawSafetensors(`{"__metadata__":["x"],"a":${A16}}`, 16),
    reasonMatches: /^__metadata__ must be an object of strings, got array$/,
    sniffedAs: 'safetensors',
  },
  {
    name: 'no tensors',
    bytes: rawSafetensors('{"__metadata__":{"k":"v"}}'),
    reasonMatches: /^header declares no tensors$/,
    sniffedAs: 'safetensors',
  },
  {
    name: 'tensor is not an object',
    bytes: rawSafetensors('{"a":"F32"}'),
    reasonMatches: /^tensor 'a' must be an object with dtype, shape and data_offsets, got string$/,
    sniffedAs: 'safetensors',
  },
  {
    name: 'tensor has an extra field',
    bytes: rawSafetensors('{"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16],"extra":1}}', 16),
    reasonMatches: /^tensor 'a' has unexpected field 'extra'$/,
    sniffedAs: 'safetensors',
  },
  {
    name: 'tensor misses data_offsets',
    bytes: rawSafetensors('{"a":{"dtype":"F32","shape":[2,2]}}', 16),
    reasonMatches: /^tensor 'a' is missing 'data_offsets'$/,
    sniffedAs: 'safetensors',
  },
  {
    name: 'unknown dtype',
    bytes: rawSafetensors(header(['a', entry('F128', [2], [0, 32])]), 32),
    reasonMatches: /^tensor 'a' has unknown dtype 'F128'$/,
    sniffedAs: 'safetensors',
  },
  {
    name: 'lower-case dtype',
    bytes: rawSafetensors(header(['a', entry('f32', [2, 2], [0, 16])]), 16),
    reasonMatches: /^tensor 'a' has unknown dtype 'f32'$/,
    sniffedAs: 'safetensors',
  },
  {
    name: 'negative shape',
    bytes: rawSafetensors(header(['a', entry('F32', [-2, 2], [0, 16])]), 16),
    reasonMatches: /^tensor 'a' shape must be an array of non-negative integers$/,
    sniffedAs: 'safetensors',
  },
  {
    name: 'fractional shape',
    bytes: rawSafetensors(header(['a', entry('F32', [1.5, 2], [0, 12])]), 12),
    reasonMatches: /^tensor 'a' shape must be an array of non-negative integers$/,
    sniffedAs: 'safetensors',
  },
  {
    name: 'shape dimension beyond 2^53',
    bytes: rawSafetensors('{"a":{"dtype":"U8","shape":[0,18446744073709551616],"data_offsets":[0,0]}}'),
    reasonMatches: /^tensor 'a' shape dimension 18446744073709551616 is too large$/,
    sniffedAs: 'safetensors',
  },
  {
    name: 'element count overflows u64',
    bytes: rawSafetensors(header(['a', TOO_MANY_DIMS_OVERFLOW]), 8),
    reasonMatches: /^tensor 'a' shape \[4294967296, 4294967296, 4294967296\] element count overflows$/,
    sniffedAs: 'safetensors',
  },
  {
    name: 'sub-byte dtype, not a whole number of bytes',
    bytes: rawSafetensors(header(['a', entry('F4', [3], [0, 2])]), 2),
    reasonMatches: /^tensor 'a' has 3 F4 elements \(12 bits\), not a whole number of bytes$/,
    sniffedAs: 'safetensors',
  },
  {
    name: 'size does not match the byte range',
    bytes: rawSafetensors(header(['a', entry('F32', [2, 2], [0, 8])]), 8),
    reasonMatches: /^tensor 'a' shape \[2, 2\] of F32 needs 16 bytes but its data_offsets span 8$/,
    sniffedAs: 'safetensors',
  },
  {
    name: 'offsets are not a pair',
    bytes: rawSafetensors(header(['a', entry('F32', [2, 2], [0, 16, 32])]), 16),
    reasonMatches: /^tensor 'a' data_offsets must be \[begin, end\] non-negative integers$/,
    sniffedAs: 'safetensors',
  },
  {
    name: 'offsets run backwards',
    bytes: rawSafetensors(header(['a', entry('F32', [2, 2], [16, 0])]), 16),
    reasonMatches: /^tensor 'a' data_offsets run backwards \(begin 16 > end 0\)$/,
    sniffedAs: 'safetensors',
  },
  {
    name: 'offsets beyond any file size',
    bytes: rawSafetensors('{"a":{"dtype":"U8","shape":[0],"data_offsets":[9007199254740991,9007199254740991]}}'),
    reasonMatches: /^tensor 'a' data_offsets end 9007199254740991 is beyond any supported file size$/,
    sniffedAs: 'safetensors',
  },
  {
    name: 'offsets overlap',
    bytes: rawSafetensors(header(['a', A16], ['b', entry('F32', [2, 2], [8, 24])]), 24),
    reasonMatches: /^tensor 'b' data_offsets overlap tensor 'a'$/,
    sniffedAs: 'safetensors',
  },
  {
    name: 'offsets leave a gap',
    bytes: rawSafetensors(header(['a', A16], ['b', entry('F32', [2, 2], [20, 36])]), 36),
    reasonMatches: /^tensor 'b' data_offsets start at 20, leaving a gap after tensor 'a' \(ends at 16\)$/,
    sniffedAs: 'safetensors',
  },
  {
    name: 'data does not start at 0',
    bytes: rawSafetensors(header(['a', entry('F32', [2, 2], [4, 20])]), 20),
    reasonMatches: /^tensor 'a' data_offsets start at 4, leaving a gap at the start of the data section$/,
    sniffedAs: 'safetensors',
  },
  {
    name: 'tensor name too long',
    bytes: rawSafetensors(header(['n'.repeat(1025), A16]), 16),
    reasonMatches: /^tensor name 'n{80}…' is longer than 1024 characters$/,
    sniffedAs: 'safetensors',
  },
  {
    name: 'file stops short of the last tensor',
    bytes: VALID.subarray(0, VALID.length - 1),
    reasonMatches: /^file is truncated: its header describes \d+ bytes/,
    sniffedAs: 'safetensors',
  },
  {
    name: 'file runs past the last tensor',
    bytes: Buffer.concat([VALID, Buffer.from([0])]),
    reasonMatches: /^file has 1 trailing bytes after the last tensor/,
    sniffedAs: 'safetensors',
  },
  // Row 3: something else entirely
  {
    name: 'a pickle renamed .safetensors',
    bytes: PICKLE,
    reasonMatches: /^header length \d+ exceeds 100000000 bytes \(the file looks like a pickle/,
    sniffedAs: 'pt-pickle',
  },
  {
    name: 'a zip renamed .safetensors',
    bytes: ZIP,
    reasonMatches: /^header length \d+ exceeds 100000000 bytes \(the file looks like a torch zip archive\)/,
    sniffedAs: 'pt-zip',
  },
  {
    name: 'a PNG',
    bytes: PNG,
    reasonMatches: /^header length \d+ exceeds 100000000 bytes \(the file looks like a PNG image\)/,
    sniffedAs: 'png',
  },
  {
    name: 'a JSON text file',
    bytes: Buffer.from('{"dtype": "F32", "shape": [2, 2]}\n'),
    reasonMatches: /^header length \d+ exceeds 100000000 bytes \(the file looks like a JSON text file\)/,
    sniffedAs: 'json',
  },
  { name: 'an empty file', bytes: Buffer.alloc(0), reasonMatches: /^file is empty$/, sniffedAs: 'empty' },
];
