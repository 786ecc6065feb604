/**
 * How a LoRA is named: a user LoRA by its id (with the job grant that may read it), a shared-library
 * file by its name relative to the loras folder. The normalisers turn untrusted input (a workflow's
 * widget value, a request body) into the one canonical form, or null when it cannot name a LoRA.
 * Pure: no I/O.
 */

export type LoraRef = { source: 'user'; id: string; grant: string } | { source: 'shared'; name: string };

const MAX_INT8 = 9223372036854775807n;
const MAX_NAME_CHARS = 255; // the API's limit for shared names (server/domain/validation.ts)
const MAX_SEGMENT_BYTES = 255; // NAME_MAX of common file systems
const UNSAFE_CHAR = /[\p{Cc}\p{Default_Ignorable_Code_Point}\p{Cs}]/u; // controls, NUL, bidi/zero-width, lone surrogates
const encoder = new TextEncoder();

/** A user LoRA id as its canonical decimal string ("123"), or null when it cannot name a LoRA. */
export function normaliseLoraId(value: unknown): string | null {
  if (typeof value === 'number') return Number.isSafeInteger(value) && value > 0 ? String(value) : null;
  if (typeof value !== 'string') return null;
  const text = value.trim();
  // Leading zeros are refused rather than stripped: "0123" and "123" must not silently alias.
  if (!/^[1-9][0-9]{0,18}$/.test(text)) return null;
  return BigInt(text) <= MAX_INT8 ? text : null;
}

/** A shared LoRA file name relative to the loras folder ("style/foo.safetensors"), or null. */
export function normaliseSharedName(value: unknown): string | null {
  if (typeof value !== 'string') return null;
  // ComfyUI on Windows writes subfolders with backslashes; a backslash is never an escape here.
  const name = value.replaceAll('\\', '/');
  if (name === '' || name.length > MAX_NAME_CHARS || UNSAFE_CHAR.test(name)) return null;
  if (name.startsWith('/') || /^[A-Za-z]:/.test(name)) return null; // POSIX, UNC (\\host) or drive-absolute
  for (const segment of name.split('/')) {
    if (segment === '' || segment === '.' || segment === '..') return null;
    if (encoder.encode(segment).length > MAX_SEGMENT_BYTES) return null;
  }
  return name;
}
