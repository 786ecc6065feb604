import { z } from 'zod';
import { ValidationError } from './errors.ts';

/** Argument rules shared by services. Failures become VALIDATION_FAILED with every issue. */

export const LIMITS = {
  nameMaxChars: 200,
  tagsMax: 20,
  tagMaxChars: 50,
  triggerWordsMax: 50,
  triggerWordMaxChars: 200,
  descriptionMaxChars: 5000,
  titleMaxChars: 200,
  pageMax: 200,
  searchMaxChars: 200,
  jobIdMaxChars: 200,
  workflowIdMaxChars: 200,
  usageIdsMax: 100,
  sharedNameMaxChars: 255,
} as const;

// Control characters and every default-ignorable code point (bidi overrides and isolates, the
// Arabic letter mark, zero-width characters, word joiners, BOM, …): never in display names.
const UNSAFE_CHAR = /[\p{Cc}\p{Default_Ignorable_Code_Point}]/u;
const UNSAFE_CHARS = new RegExp(UNSAFE_CHAR.source, 'gu');

/** A display name: unsafe characters removed, whitespace collapsed, NFC; never part of a path. */
export function sanitizeDisplayName(raw: string): string {
  return raw.normalize('NFC').replace(UNSAFE_CHARS, '').replace(/\s+/g, ' ').trim();
}

export const displayName = z
  .string()
  .transform(sanitizeDisplayName)
  .pipe(z.string().min(1, 'must not be empty').max(LIMITS.nameMaxChars, `at most ${LIMITS.nameMaxChars} characters`));

const tag = z
  .string()
  .transform(sanitizeDisplayName)
  .pipe(z.string().min(1, 'tags must not be empty').max(LIMITS.tagMaxChars, `tags have at most ${LIMITS.tagMaxChars} characters`));

/** User tags: trimmed, deduplicated (case-insensitively), without the implicit 'lora' tag. */
export const userTags = z
  .array(tag)
  .max(LIMITS.tagsMax, `at most ${LIMITS.tagsMax} tags`)
  .transform((tags) => {
    const seen = new Set<string>();
    return tags.filter((t) => {
      const key = t.toLowerCase();
      if (key === 'lora' || seen.has(key)) return false;
      seen.add(key);
      return true;
    });
  });

/** What a user may set in `metadata` (overrides what was extracted from the file). */
export const userMetadata = z
  .strictObject({
    baseModel: z
      .string()
      .trim()
      .min(1)
      .max(50)
      .regex(/^[A-Za-z0-9_.-]+$/, 'letters, digits, . _ - only')
      .nullable(),
    triggerWords: z
      .array(z.string().transform(sanitizeDisplayName).pipe(z.string().min(1).max(LIMITS.triggerWordMaxChars)))
      .max(LIMITS.triggerWordsMax),
    description: z.string().max(LIMITS.descriptionMaxChars).nullable(),
    title: z.string().transform(sanitizeDisplayName).pipe(z.string().max(LIMITS.titleMaxChars)).nullable(),
  })
  .partial();
export type UserMetadata = z.infer<typeof userMetadata>;

export const uuid = z.uuid('must be a UUID').transform((s) => s.toLowerCase());

export const jobGrantInput = z.object({
  userId: uuid,
  jobId: z.string().trim().min(1, 'must not be empty').max(LIMITS.jobIdMaxChars),
  ttlSeconds: z.number().int().positive('must be positive'),
});

/** Shared-library names: a relative file name under the prefix, no traversal, no control chars. */
export const sharedLoraName = z
  .string()
  .min(1, 'must not be empty')
  .max(LIMITS.sharedNameMaxChars)
  .refine((n) => !UNSAFE_CHAR.test(n) && !/[\\]/.test(n), 'contains forbidden characters')
  .refine(
    (n) => !n.startsWith('/') && n.split('/').every((seg) => seg !== '' && seg !== '.' && seg !== '..'),
    'must be a relative name without . or .. segments',
  );

/** Parses with a zod schema; failures become one ValidationError listing every issue. */
export function parseArgs<S extends z.ZodType>(schema: S, value: unknown, prefix = ''): z.output<S> {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  throw new ValidationError(
    result.error.issues.map((issue) => ({
      path: [prefix, ...issue.path.map(String)].filter(Boolean).join('.') || '(root)',
      message: issue.message,
    })),
  );
}

const MAX_INT8 = 9223372036854775807n;

/** A LoRA id from the API ("123") as bigint, or null when it cannot name any row. */
export function parseLoraId(id: string): bigint | null {
  if (!/^[1-9]\d{0,18}$/.test(id)) return null;
  const value = BigInt(id);
  return value <= MAX_INT8 ? value : null;
}
