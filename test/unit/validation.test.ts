import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { likePattern } from '../../server/db/lora-reads.ts';
import { ValidationError } from '../../server/domain/errors.ts';
import { displayName, parseArgs, parseLoraId, sanitizeDisplayName, sharedLoraName, userTags } from '../../server/domain/validation.ts';

const UNSAFE = /[\p{Cc}\p{Default_Ignorable_Code_Point}]/u;

describe('display names', () => {
  it('never keep control, bidi or zero-width characters, and sanitizing twice changes nothing', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 200 }), (raw) => {
        const once = sanitizeDisplayName(raw);
        expect(UNSAFE.test(once)).toBe(false);
        expect(sanitizeDisplayName(once)).toBe(once);
        expect(once).toBe(once.trim());
      }),
    );
  });

  it('strips a right-to-left override and NUL, refuses blank and over-long names', () => {
    expect(parseArgs(displayName, 'evil\u202Egnp.exe\u0000')).toBe('evilgnp.exe');
    expect(parseArgs(displayName, 'in\u2060vi\u061Csi\u180Eble\u2063')).toBe('invisible');
    expect(() => parseArgs(displayName, '   \t ')).toThrow(ValidationError);
    expect(() => parseArgs(displayName, 'x'.repeat(10_000))).toThrow(/at most 200/);
  });

  it('tags are deduplicated case-insensitively and never include the implicit lora tag', () => {
    expect(parseArgs(userTags, ['Anime', 'anime', 'LoRA', ' style '])).toEqual(['Anime', 'style']);
    expect(() =>
      parseArgs(
        userTags,
        Array.from({ length: 21 }, (_, i) => `t${i}`),
      ),
    ).toThrow(/at most 20 tags/);
  });
});

describe('ids and names', () => {
  it('parseLoraId accepts only ids a bigint column can hold', () => {
    expect(parseLoraId('123')).toBe(123n);
    expect(parseLoraId('9223372036854775807')).toBe(9223372036854775807n);
    for (const bad of ['0', '-1', '01', '1e3', ' 1', 'abc', '9223372036854775808', '99999999999999999999']) {
      expect(parseLoraId(bad)).toBeNull();
    }
  });

  it('shared names cannot escape the library prefix', () => {
    expect(parseArgs(sharedLoraName, 'styles/ink.safetensors')).toBe('styles/ink.safetensors');
    for (const bad of ['../x', 'a/../b', '/etc/passwd', 'a\\b', 'a\u0000b', 'a//b', './a', '']) {
      expect(() => parseArgs(sharedLoraName, bad), bad).toThrow(ValidationError);
    }
  });

  it('search patterns treat % and _ as literals', () => {
    expect(likePattern('50%_Off\\')).toBe('%50\\%\\_Off\\\\%');
  });

  it('validation errors list every issue with its path', () => {
    try {
      parseArgs(userTags, ['', 'x'.repeat(51)]);
      expect.unreachable();
    } catch (e) {
      expect((e as ValidationError).issues.map((i) => i.path)).toEqual(['0', '1']);
    }
  });
});
