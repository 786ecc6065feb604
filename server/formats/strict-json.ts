/**
 * A small, strict JSON (RFC 8259) parser for untrusted headers. Unlike `JSON.parse` it
 * - rejects duplicate keys at every level (JSON.parse silently keeps the last one),
 * - rejects `__proto__`, `constructor` and `prototype` keys anywhere,
 * - rejects escaped lone surrogates (as serde_json does),
 * - bounds nesting depth, object size and array length, so hostile input cannot exhaust memory
 *   or the stack,
 * - never creates objects keyed by input: objects are returned as ordered entry lists, so parsed
 *   data can never reach `Object.prototype`,
 * - keeps numbers as their source text, so callers decide how to read them exactly.
 * Errors are {@link StrictJsonError}s with a human message.
 */

/** A JSON number, kept as written (e.g. "12", "-1.5e3"). */
export class JsonNumber {
  constructor(readonly text: string) {}
}

/** A JSON object as its entries in source order (keys are unique). */
export class JsonObject {
  constructor(readonly entries: readonly (readonly [string, JsonValue])[]) {}
}

export type JsonValue = string | boolean | null | JsonNumber | JsonObject | JsonValue[];

export class StrictJsonError extends Error {
  override name = 'StrictJsonError';
  constructor(
    /** syntax: not JSON; key: a duplicate or forbidden key; limit: beyond {@link StrictJsonLimits}. */
    readonly kind: 'syntax' | 'key' | 'limit',
    message: string,
  ) {
    super(message);
  }
}

export interface StrictJsonLimits {
  /** Deepest nesting of objects/arrays (the root object is depth 1). */
  maxDepth: number;
  /** Most entries in one object. */
  maxObjectEntries: number;
  /** Most elements in one array. */
  maxArrayLength: number;
}

const FORBIDDEN_KEYS = new Set(['__proto__', 'constructor', 'prototype']);
const NUMBER = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;
const SIMPLE_ESCAPES = new Map([
  ['"', '"'],
  ['\\', '\\'],
  ['/', '/'],
  ['b', '\b'],
  ['f', '\f'],
  ['n', '\n'],
  ['r', '\r'],
  ['t', '\t'],
]);

/** Shortens and escapes a key for an error message (no control or bidi characters leak through). */
export function quoteKey(key: string, max = 80): string {
  const short = key.length > max ? `${key.slice(0, max)}…` : key;
  return `'${short.replace(/[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/gu, (c) => `\\u${(c.codePointAt(0) ?? 0).toString(16).padStart(4, '0')}`)}'`;
}

class Parser {
  private pos = 0;
  constructor(
    private readonly text: string,
    private readonly limits: StrictJsonLimits,
  ) {}

  parseDocument(): JsonValue {
    const value = this.value(0);
    this.skipWhitespace();
    if (this.pos !== this.text.length) this.fail('unexpected data after the JSON value');
    return value;
  }

  private fail(message: string): never {
    throw new StrictJsonError('syntax', `${message} at character ${this.pos}`);
  }

  private skipWhitespace(): void {
    const t = this.text;
    while (this.pos < t.length) {
      const c = t.charCodeAt(this.pos);
      if (c !== 0x20 && c !== 0x09 && c !== 0x0a && c !== 0x0d) return;
      this.pos++;
    }
  }

  private value(depth: number): JsonValue {
    this.skipWhitespace();
    const c = this.text[this.pos];
    if (c === '{') return this.object(depth + 1);
    if (c === '[') return this.array(depth + 1);
    if (c === '"') return this.string();
    if (c === '-' || (c !== undefined && c >= '0' && c <= '9')) return this.number();
    for (const [word, literal] of [
      ['true', true],
      ['false', false],
      ['null', null],
    ] as const) {
      if (this.text.startsWith(word, this.pos)) {
        this.pos += word.length;
        return literal;
      }
    }
    return this.fail(c === undefined ? 'unexpected end of JSON' : 'unexpected character');
  }

  private enter(depth: number): void {
    if (depth > this.limits.maxDepth) {
      throw new StrictJsonError('limit', `JSON is nested more than ${this.limits.maxDepth} levels deep at character ${this.pos}`);
    }
    this.pos++; // the opening bracket
    this.skipWhitespace();
  }

  private separator(close: string): boolean {
    this.skipWhitespace();
    const c = this.text[this.pos];
    this.pos++;
    if (c === ',') return true;
    if (c === close) return false;
    this.pos--;
    return this.fail(`expected ',' or '${close}'`);
  }

  private object(depth: number): JsonObject {
    this.enter(depth);
    const entries: [string, JsonValue][] = [];
    const seen = new Set<string>();
    if (this.text[this.pos] === '}') {
      this.pos++;
      return new JsonObject(entries);
    }
    do {
      this.skipWhitespace();
      if (this.text[this.pos] !== '"') this.fail('expected a string key');
      const key = this.string();
      if (FORBIDDEN_KEYS.has(key)) throw new StrictJsonError('key', `forbidden key ${quoteKey(key)}`);
      if (seen.has(key)) throw new StrictJsonError('key', `duplicate key ${quoteKey(key)}`);
      seen.add(key);
      if (entries.length >= this.limits.maxObjectEntries) {
        throw new StrictJsonError('limit', `a JSON object has more than ${this.limits.maxObjectEntries} entries`);
      }
      this.skipWhitespace();
      if (this.text[this.pos] !== ':') this.fail("expected ':'");
      this.pos++;
      entries.push([key, this.value(depth)]);
    } while (this.separator('}'));
    return new JsonObject(entries);
  }

  private array(depth: number): JsonValue[] {
    this.enter(depth);
    const items: JsonValue[] = [];
    if (this.text[this.pos] === ']') {
      this.pos++;
      return items;
    }
    do {
      if (items.length >= this.limits.maxArrayLength) {
        throw new StrictJsonError('limit', `a JSON array has more than ${this.limits.maxArrayLength} elements`);
      }
      items.push(this.value(depth));
    } while (this.separator(']'));
    return items;
  }

  private number(): JsonNumber {
    NUMBER.lastIndex = this.pos;
    const match = NUMBER.exec(this.text);
    if (!match) return this.fail('invalid number');
    this.pos += match[0].length;
    return new JsonNumber(match[0]);
  }

  private hex4(): number {
    const digits = this.text.slice(this.pos, this.pos + 4);
    if (!/^[0-9a-fA-F]{4}$/.test(digits)) this.fail('invalid \\u escape');
    this.pos += 4;
    return Number.parseInt(digits, 16);
  }

  private string(): string {
    const t = this.text;
    this.pos++; // opening quote
    let out = '';
    let start = this.pos;
    for (;;) {
      if (this.pos >= t.length) this.fail('unterminated string');
      const c = t.charCodeAt(this.pos);
      if (c === 0x22) {
        out += t.slice(start, this.pos);
        this.pos++;
        return out;
      }
      if (c < 0x20) this.fail('control character in string');
      if (c !== 0x5c) {
        this.pos++;
        continue;
      }
      out += t.slice(start, this.pos);
      this.pos++;
      const e = t[this.pos];
      this.pos++;
      const simple = e === undefined ? undefined : SIMPLE_ESCAPES.get(e);
      if (simple !== undefined) out += simple;
      else if (e === 'u') out += this.unicodeEscape();
      else {
        this.pos--;
        this.fail('invalid escape');
      }
      start = this.pos;
    }
  }

  private unicodeEscape(): string {
    const unit = this.hex4();
    if (unit >= 0xdc00 && unit <= 0xdfff) this.fail('lone low surrogate in \\u escape');
    if (unit < 0xd800 || unit > 0xdbff) return String.fromCharCode(unit);
    if (!this.text.startsWith('\\u', this.pos)) this.fail('lone high surrogate in \\u escape');
    this.pos += 2;
    const low = this.hex4();
    if (low < 0xdc00 || low > 0xdfff) this.fail('lone high surrogate in \\u escape');
    return String.fromCharCode(unit, low);
  }
}

/** Parses `text` as one JSON value under `limits`; throws {@link StrictJsonError}. */
export function parseStrictJson(text: string, limits: StrictJsonLimits): JsonValue {
  return new Parser(text, limits).parseDocument();
}
