import { create as contentDisposition } from 'content-disposition';
import { formatExtension, type LoraFormat } from './lora.ts';
import { sanitizeDisplayName } from './validation.ts';

/**
 * The file name an owner's download is saved under, from the LoRA's display name: what the user
 * sees in Studio, plus the extension of the DETECTED format. Sanitised for a header and a file
 * system: no control characters (CR, LF, NUL), no bidi or zero-width characters, no quotes, no
 * path separators, no leading dots, at most 150 characters before the extension.
 */
export function ownerFileName(displayName: string, format: LoraFormat): string {
  const ext = formatExtension(format);
  const stem = sanitizeDisplayName(displayName)
    .replace(/["'`/\\:*?<>|]+/g, '_')
    .replace(/^[.\s_]+/, '')
    .replace(new RegExp(`\\.${ext}$`, 'i'), '')
    .slice(0, 150)
    .trim();
  return `${stem || 'lora'}.${ext}`;
}

/** A US-ASCII rendering of `fileName` for clients that ignore `filename*` (RFC 6266 §4.3). */
export function asciiFallback(fileName: string): string {
  const ascii = fileName
    .normalize('NFKD')
    .replace(/[^\x20-\x7e]/g, '')
    .replace(/[%\\"]/g, '_')
    .replace(/\s+/g, ' ')
    .trim();
  return ascii.startsWith('.') || ascii === '' ? `lora${ascii.slice(ascii.lastIndexOf('.'))}` : ascii;
}

/**
 * `attachment; filename="<ascii>"; filename*=UTF-8''<percent-encoded>` (RFC 6266 with RFC 5987
 * `filename*` when the name is not plain ASCII), built by the `content-disposition` package.
 */
export function attachmentDisposition(fileName: string): string {
  return contentDisposition(fileName, { fallback: asciiFallback(fileName) });
}
