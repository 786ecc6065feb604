/**
 * Decides what an uploaded file is from its first bytes — never from its name. Pure: no I/O.
 *
 * Accepted LoRA containers:
 * - safetensors: a u64 little-endian header length N (N ≥ 2) followed by the JSON header, whose
 *   first byte is `{`;
 * - pt-zip: a torch ≥ 1.6 zip archive (`PK\x03\x04`); whether it really holds a pickle is the
 *   scanner's job;
 * - pt-pickle: a legacy torch file, which is a pickle stream opening with the PROTO opcode `\x80`
 *   and a protocol number 2..5 (torch writes a pickled magic number first).
 * Anything else is named (png, jpeg, zip, text, …) so the user learns what they actually sent.
 */

/** How many leading bytes {@link sniffFormat} looks at. Fewer are fine when the file is shorter. */
export const SNIFF_BYTES = 16;

export type SniffResult = { kind: 'safetensors' | 'pt-zip' | 'pt-pickle' } | { kind: 'unknown'; detected: string };

const SIGNATURES: readonly { detected: string; bytes: readonly number[]; at?: number }[] = [
  { detected: 'png', bytes: [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a] },
  { detected: 'jpeg', bytes: [0xff, 0xd8, 0xff] },
  { detected: 'gif', bytes: [0x47, 0x49, 0x46, 0x38] }, // GIF8 (GIF87a / GIF89a)
  { detected: 'webp', bytes: [0x57, 0x45, 0x42, 0x50], at: 8 }, // RIFF....WEBP
  { detected: 'pdf', bytes: [0x25, 0x50, 0x44, 0x46, 0x2d] }, // %PDF-
  { detected: 'gguf', bytes: [0x47, 0x47, 0x55, 0x46] }, // GGUF
  { detected: 'zip', bytes: [0x50, 0x4b, 0x05, 0x06] }, // empty archive
  { detected: 'zip', bytes: [0x50, 0x4b, 0x07, 0x08] }, // spanned archive
  { detected: 'gzip', bytes: [0x1f, 0x8b] },
  { detected: 'bzip2', bytes: [0x42, 0x5a, 0x68] }, // BZh
  { detected: 'xz', bytes: [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00] },
  { detected: '7z', bytes: [0x37, 0x7a, 0xbc, 0xaf, 0x27, 0x1c] },
  { detected: 'zstd', bytes: [0x28, 0xb5, 0x2f, 0xfd] },
  { detected: 'elf', bytes: [0x7f, 0x45, 0x4c, 0x46] },
];

const DESCRIPTIONS = new Map<string, string>(
  Object.entries({
    safetensors: 'a safetensors file',
    'pt-zip': 'a torch zip archive',
    'pt-pickle': 'a pickle (legacy torch) file',
    png: 'a PNG image',
    jpeg: 'a JPEG image',
    gif: 'a GIF image',
    webp: 'a WebP image',
    pdf: 'a PDF document',
    gguf: 'a GGUF model',
    zip: 'a zip archive',
    gzip: 'a gzip archive',
    bzip2: 'a bzip2 archive',
    xz: 'an xz archive',
    '7z': 'a 7-Zip archive',
    zstd: 'a zstd archive',
    elf: 'an executable',
    json: 'a JSON text file',
    text: 'a text file',
    empty: 'an empty file',
  }),
);

function startsWith(head: Uint8Array, bytes: readonly number[], at = 0): boolean {
  if (head.length < at + bytes.length) return false;
  return bytes.every((b, i) => head[at + i] === b);
}

/** Printable UTF-8 (a multi-byte sequence cut off at the end of `head` is fine). */
function looksLikeText(head: Uint8Array): boolean {
  for (const b of head) {
    const control = b < 0x20 && b !== 0x09 && b !== 0x0a && b !== 0x0d;
    if (control || b === 0x7f) return false;
  }
  try {
    new TextDecoder('utf-8', { fatal: true }).decode(head, { stream: true });
    return true;
  } catch {
    return false;
  }
}

/**
 * Classifies a file by its first bytes (pass up to {@link SNIFF_BYTES}; a shorter `head` means
 * the whole file is that short). Never throws.
 */
export function sniffFormat(head: Uint8Array): SniffResult {
  if (head.length === 0) return { kind: 'unknown', detected: 'empty' };
  if (head.length >= 9) {
    const n = Buffer.from(head.buffer, head.byteOffset, 8).readBigUInt64LE(0);
    if (n >= 2n && head[8] === 0x7b) return { kind: 'safetensors' };
  }
  if (startsWith(head, [0x50, 0x4b, 0x03, 0x04])) return { kind: 'pt-zip' };
  const protocol = head[1];
  if (head[0] === 0x80 && protocol !== undefined && protocol >= 2 && protocol <= 5) return { kind: 'pt-pickle' };
  for (const sig of SIGNATURES) if (startsWith(head, sig.bytes, sig.at)) return { kind: 'unknown', detected: sig.detected };
  if (looksLikeText(head)) {
    const first = Buffer.from(head).toString('latin1').trimStart()[0];
    return { kind: 'unknown', detected: first === '{' || first === '[' ? 'json' : 'text' };
  }
  return { kind: 'unknown', detected: 'unknown' };
}

/** Words for a sniffed kind or `detected` name, e.g. 'png' → "a PNG image". */
export function describeFormat(kindOrDetected: string): string {
  return DESCRIPTIONS.get(kindOrDetected) ?? 'a file of unknown type';
}
