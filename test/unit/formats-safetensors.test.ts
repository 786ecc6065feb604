import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { InvalidFileError } from '../../server/domain/errors.ts';
import { autoV2, autoV3Range, extractLoraMetadata } from '../../server/formats/lora-metadata.ts';
import {
  assertCompleteSize,
  MAX_TENSORS,
  parseSafetensorsFile,
  type SafetensorsHeader,
  SafetensorsHeaderReader,
} from '../../server/formats/safetensors.ts';
import { picklePrologue } from '../../server/formats/safetensors-rules.ts';
import { SNIFF_BYTES, sniffFormat } from '../../server/formats/sniff.ts';
import { BAD_SAFETENSORS, LORA_LAYOUTS, loraTensors, makeLora, rawSafetensors, TAG_FREQUENCY } from '../testkit/lora-files.ts';
import { protoPolyglot, unicodeLinePolyglot } from '../testkit/polyglot.ts';
import { makeSafetensors, smallSd15Lora } from '../testkit/safetensors.ts';

/** Feeds `bytes` in chunks of the given sizes (cycled), then checks the total like the pipeline does. */
function readInChunks(bytes: Uint8Array, sizes: number[] = [bytes.length || 1]): SafetensorsHeader {
  const reader = new SafetensorsHeaderReader();
  let header: SafetensorsHeader | undefined;
  for (let at = 0, i = 0; at < bytes.length; i++) {
    const size = Math.max(1, sizes[i % sizes.length] ?? 1);
    header = reader.push(bytes.subarray(at, at + size)) ?? header;
    at += size;
  }
  header = reader.finish();
  assertCompleteSize(header, bytes.length);
  return header;
}

/** The InvalidFileError `fn` throws (fails the test on anything else, or on success). */
function rejection(fn: () => unknown): InvalidFileError {
  try {
    fn();
  } catch (error) {
    if (error instanceof InvalidFileError) return error;
    throw error;
  }
  throw new Error('expected an InvalidFileError, but the file was accepted');
}

/** Parses, returning the header or the InvalidFileError; anything else propagates. */
function outcome(bytes: Uint8Array): SafetensorsHeader | InvalidFileError {
  try {
    return parseSafetensorsFile(bytes);
  } catch (error) {
    if (error instanceof InvalidFileError) return error;
    throw error;
  }
}

function withPrefix(json: Buffer, data: Buffer, length: bigint = BigInt(json.length)): Buffer {
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(length);
  return Buffer.concat([prefix, json, data]);
}

function split(file: Buffer): { json: Buffer; data: Buffer } {
  const n = Number(file.readBigUInt64LE(0));
  return { json: file.subarray(8, 8 + n), data: file.subarray(8 + n) };
}

const VALID_FILES = [smallSd15Lora(), ...LORA_LAYOUTS.map(({ layout }) => makeLora(layout, 'kohya'))];
const prototypeKeys = () => Object.getOwnPropertyNames(Object.prototype).sort();
const PROTOTYPE_KEYS = prototypeKeys();

describe('sniffFormat', () => {
  it('tells safetensors, torch zip and legacy torch pickle apart from the first bytes', () => {
    for (const file of VALID_FILES) expect(sniffFormat(file.subarray(0, SNIFF_BYTES))).toEqual({ kind: 'safetensors' });
    expect(sniffFormat(Buffer.from('504b030414000000', 'hex'))).toEqual({ kind: 'pt-zip' });
    expect(sniffFormat(Buffer.from('80028a0a6cfc9c46f9206a', 'hex'))).toEqual({ kind: 'pt-pickle' });
    expect(sniffFormat(Buffer.from('8001', 'hex'))).toEqual({ kind: 'unknown', detected: 'unknown' }); // protocol 1
  });

  it('names what else a file is', () => {
    const cases: [string, string][] = [
      ['', 'empty'],
      ['ffd8ffe000104a46', 'jpeg'],
      ['474946383961', 'gif'],
      ['504b0506', 'zip'],
      ['1f8b0800', 'gzip'],
      ['52494646aaaa000057454250', 'webp'],
      [Buffer.from('hello world').toString('hex'), 'text'],
      [Buffer.from('  [1, 2]').toString('hex'), 'json'],
      ['00ff00ff', 'unknown'],
    ];
    for (const [hex, detected] of cases) expect(sniffFormat(Buffer.from(hex, 'hex'))).toEqual({ kind: 'unknown', detected });
    for (const bad of BAD_SAFETENSORS) {
      const sniffed = sniffFormat(bad.bytes.subarray(0, SNIFF_BYTES));
      expect(sniffed.kind === 'unknown' ? sniffed.detected : sniffed.kind, bad.name).toBe(bad.sniffedAs);
    }
  });

  it('never throws on any bytes', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: SNIFF_BYTES }), (head) => void sniffFormat(head)));
  });
});

describe('safetensors: bad files', () => {
  it.each(BAD_SAFETENSORS.map((b) => [b.name, b] as const))('rejects %s', (_name, bad) => {
    const whole = rejection(() => readInChunks(bad.bytes));
    expect(whole.detectedFormat).toBe('safetensors');
    expect(whole.code).toBe('INVALID_FILE_FORMAT');
    expect(whole.reason).toMatch(bad.reasonMatches);
    const byteByByte = rejection(() => readInChunks(bad.bytes, [1]));
    expect(byteByByte.reason).toBe(whole.reason);
  });

  it('decides on the header length from the 8-byte prefix alone, before reading or allocating anything more', () => {
    for (const n of [2n ** 64n - 1n, 100_000_001n, 2n ** 53n + 1n, 0n, 1n]) {
      const reader = new SafetensorsHeaderReader();
      const prefix = Buffer.alloc(8);
      prefix.writeBigUInt64LE(n);
      expect(reader.push(prefix.subarray(0, 7))).toBeUndefined();
      expect(rejection(() => reader.push(prefix.subarray(7))).reason).toMatch(/^header length \d+ (exceeds|is too small)/);
      expect(() => reader.push(Buffer.from('{}'))).toThrow(InvalidFileError); // stays failed
    }
  });

  it('with a known file size, rejects a header running past the end at the prefix and a wrong total at the header', () => {
    const file = smallSd15Lora();
    const past = new SafetensorsHeaderReader({ fileSize: 100 });
    expect(rejection(() => past.push(file.subarray(0, 8))).reason).toMatch(/runs past the end of the 100-byte file/);
    const longer = new SafetensorsHeaderReader({ fileSize: file.length + 1 });
    expect(rejection(() => longer.push(file)).reason).toMatch(/^file has 1 trailing bytes/);
    expect(new SafetensorsHeaderReader({ fileSize: file.length }).push(file)?.tensors).toHaveLength(3);
  });

  it('rejects invalid UTF-8 as soon as the bad byte arrives, long before the header is complete', () => {
    const reader = new SafetensorsHeaderReader();
    const prefix = Buffer.alloc(8);
    prefix.writeBigUInt64LE(50_000_000n);
    expect(reader.push(Buffer.concat([prefix, Buffer.from('{"name')]))).toBeUndefined();
    expect(rejection(() => reader.push(Buffer.from([0xc0, 0x80]))).reason).toMatch(/^header is not valid UTF-8/); // overlong NUL
  });

  it('limits the tensor count to 100,000', () => {
    const entries = (n: number) => Array.from({ length: n }, (_, i) => `"t${i}":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}`);
    expect(parseSafetensorsFile(rawSafetensors(`{${entries(MAX_TENSORS).join(',')}}`)).tensors).toHaveLength(MAX_TENSORS);
    expect(rejection(() => parseSafetensorsFile(rawSafetensors(`{${entries(MAX_TENSORS + 1).join(',')}}`))).reason).toBe(
      'header declares more than 100000 tensors',
    );
  });

  it('leaves Object.prototype untouched after hostile headers', () => {
    for (const bad of BAD_SAFETENSORS) outcome(bad.bytes);
    const header: SafetensorsHeader = {
      ...parseSafetensorsFile(smallSd15Lora()),
      metadata: JSON.parse('{"__proto__":"yes","ss_tag_frequency":"{\\"__proto__\\":{\\"polluted\\":1},\\"d\\":{\\"__proto__\\":3}}"}'),
    };
    const extracted = extractLoraMetadata(header);
    expect(extracted.triggerWords).toEqual(['__proto__', 'polluted']);
    expect(Object.hasOwn(extracted.raw, '__proto__')).toBe(true);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect(prototypeKeys()).toEqual(PROTOTYPE_KEYS);
  });
});

describe('safetensors: a header length that opens a pickle (THREATS 28)', () => {
  const prefix = (n: number) => {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(n));
    return b;
  };

  it('refuses PROTO n then an opcode whose argument reads on into the header (the reported polyglot: PROTO 4, BINUNICODE)', () => {
    expect(picklePrologue(Buffer.from([0x80, 4, 0x58, 3, 0, 0, 0, 0]))).toMatch(/PROTO 4, BINUNICODE/);
    expect(rejection(() => new SafetensorsHeaderReader().push(Buffer.from([0x80, 4, 0x58, 3, 0, 0, 0, 0]))).reason).toMatch(/pickle/);
    const file = protoPolyglot();
    expect(rejection(() => readInChunks(file, [3, 5, 64 * 1024])).reason).toMatch(/PROTO 4, UNICODE/);
  });

  it('accepts prologues the unpickler cannot read past the 8 bytes (real small headers), and the unpadded UNICODE polyglot', () => {
    for (const n of [0x280, 0x380, 0x480, 0x580, 0x10480, 0x4b0480, 0x580480]) expect(picklePrologue(prefix(n)), n.toString(16)).toBeNull();
    expect(readInChunks(unicodeLinePolyglot()).tensors).toHaveLength(1); // no PROTO: only the stored extension protects
  });

  it('of all 10^8 possible header lengths, refuses exactly 440, every one above 4.3 MiB', () => {
    // Only lengths whose low 16 bits are PROTO 2..5 can be refused; every other length never is.
    fc.assert(
      fc.property(fc.integer({ min: 2, max: 100_000_000 }), (n) => {
        const low = n & 0xffff;
        if (![0x280, 0x380, 0x480, 0x580].includes(low)) expect(picklePrologue(prefix(n))).toBeNull();
      }),
    );
    const refused: number[] = [];
    for (const low of [0x280, 0x380, 0x480, 0x580]) {
      for (let n = low; n <= 100_000_000; n += 0x10000) if (picklePrologue(prefix(n))) refused.push(n);
    }
    expect(refused).toHaveLength(440);
    expect(Math.min(...refused)).toBe(0x460280); // 4,588,160 bytes: PROTO 2, FLOAT
    expect(refused.every((n) => n % 8 === 0)).toBe(true);
  });
});

describe('safetensors: valid files', () => {
  it('parses tensors sorted by offset, a null-prototype metadata object, and the data range', () => {
    const file = smallSd15Lora({ extra: 'x' });
    const header = parseSafetensorsFile(file);
    expect(header.dataStart).toBe(8 + header.headerLength);
    expect(header.dataStart + header.dataEnd).toBe(file.length);
    expect(header.tensors.map((t) => [t.name, t.dtype, t.shape, t.begin, t.end])).toEqual([
      ['lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight', 'F16', [4, 768], 0, 6144],
      ['lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight', 'F16', [3072, 4], 6144, 30720],
      ['lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight', 'F16', [4, 320], 30720, 33280],
    ]);
    expect(Object.getPrototypeOf(header.metadata)).toBeNull();
    expect({ ...header.metadata }).toEqual({ ss_network_dim: '4', ss_network_alpha: '2', ss_base_model_version: 'sd_v1', extra: 'x' });
    expect(autoV3Range(header)).toEqual({ start: header.dataStart, end: file.length });
  });

  it('accepts headers in any offset order, padded with whitespace, zero-size tensors and sub-byte dtypes', () => {
    const json = `{"b":{"dtype":"F6_E2M3","shape":[4],"data_offsets":[2,5]},"z":{"dtype":"C64","shape":[0],"data_offsets":[5,5]},"a":{"dtype":"F4","shape":[2,2],"data_offsets":[0,2]},"s":{"dtype":"F8_E8M0","shape":[],"data_offsets":[5,6]}}\n  `;
    const header = parseSafetensorsFile(rawSafetensors(json, 6));
    expect(header.tensors.map((t) => t.name)).toEqual(['a', 'b', 'z', 's']);
    expect(header.dataEnd).toBe(6);
  });

  it('gives the same header whether fed whole, byte by byte or in random chunks', () => {
    const expected = VALID_FILES.map((file) => readInChunks(file));
    for (const [i, file] of VALID_FILES.entries()) expect(readInChunks(file, [1])).toEqual(expected[i]);
    fc.assert(
      fc.property(
        fc.nat(VALID_FILES.length - 1),
        fc.array(fc.integer({ min: 1, max: 5000 }), { minLength: 1, maxLength: 20 }),
        (i, sizes) => {
          expect(readInChunks(VALID_FILES[i]!, sizes)).toEqual(expected[i]);
        },
      ),
      { numRuns: 100 },
    );
  });
});

describe('safetensors: random corruption only ever yields InvalidFileError', () => {
  const file = makeLora('SDXL', 'kohya');
  const { json, data } = split(file);

  it('bit flips', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.nat(file.length - 1), fc.nat(7)), { minLength: 1, maxLength: 8 }), (flips) => {
        const copy = Buffer.from(file);
        for (const [at, bit] of flips) copy[at]! ^= 1 << bit;
        outcome(copy);
      }),
      { numRuns: 500 },
    );
  });

  it('truncation and extension', () => {
    fc.assert(
      fc.property(fc.nat(file.length + 64), (length) => {
        const bytes = length <= file.length ? file.subarray(0, length) : Buffer.concat([file, Buffer.alloc(length - file.length)]);
        const result = outcome(bytes);
        expect(result instanceof InvalidFileError).toBe(length !== file.length);
      }),
      { numRuns: 300 },
    );
  });

  it('random header-length values, never allocating for the claimed length', () => {
    const lengths = fc.oneof(
      fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
      fc.bigInt({ min: 0n, max: 200_000_000n }),
      fc.integer({ min: -16, max: 16 }).map((d) => BigInt(Math.max(0, json.length + d))),
    );
    let growth = 0;
    fc.assert(
      fc.property(lengths, (n) => {
        const bytes = withPrefix(json, data, n);
        const result = outcome(bytes);
        if (n !== BigInt(json.length)) expect(result).toBeInstanceOf(InvalidFileError);
        const before = process.memoryUsage().arrayBuffers;
        const reader = new SafetensorsHeaderReader(); // a stream that stalls after its first 64 bytes
        try {
          reader.push(bytes.subarray(0, 64));
        } catch (error) {
          expect(error).toBeInstanceOf(InvalidFileError);
        }
        growth = Math.max(growth, process.memoryUsage().arrayBuffers - before);
      }),
      { numRuns: 500 },
    );
    expect(growth).toBeLessThan(10_000_000);
  });

  it('random JSON mutations (the length prefix kept right)', () => {
    const text = json.toString('utf8');
    const mutation = fc.tuple(
      fc.constantFrom('replace', 'insert', 'delete'),
      fc.nat(text.length - 1),
      fc.constantFrom(...'{}[]",:0123456789-+.eE\\ atfnu_'.split(''), '__proto__', '"a":1,', '\u00e9', '\ud800'),
    );
    fc.assert(
      fc.property(fc.array(mutation, { minLength: 1, maxLength: 4 }), (mutations) => {
        let t = text;
        for (const [op, at, s] of mutations) t = t.slice(0, at) + (op === 'delete' ? '' : s) + t.slice(op === 'insert' ? at : at + 1);
        const result = outcome(withPrefix(Buffer.from(t, 'utf8'), data));
        if (result instanceof InvalidFileError) return;
        expect(result.dataStart + result.dataEnd).toBe(8 + Buffer.byteLength(t) + data.length);
      }),
      { numRuns: 1000 },
    );
  });
});

describe('LoRA metadata', () => {
  it.each(LORA_LAYOUTS)('$layout with kohya metadata', ({ layout, baseModel }) => {
    const m = extractLoraMetadata(parseSafetensorsFile(makeLora(layout, 'kohya', { rank: 8 })));
    expect(m).toMatchObject({ baseModel, baseModelSource: 'METADATA', rank: 8, alpha: 4, trainingEpochs: 10, trainingImages: 420 });
    expect(m.networkModule).toMatch(/^networks\.lora/);
    expect(m.title).toBe(`my_${layout.toLowerCase()}_lora`);
    expect(m.description).toBe('trained for tests');
    expect(m.tensorCount).toBe(loraTensors(layout).length);
    expect(m.triggerWords).toEqual(['mychar', '1girl', 'solo', 'red hair', 'smile', 'outdoors', 'blue sky', 'cloud', 'tree', 'grass']);
    expect(JSON.parse(m.raw.ss_tag_frequency!)).toEqual(TAG_FREQUENCY);
  });

  it.each(LORA_LAYOUTS)('$layout with modelspec metadata', ({ layout, baseModel }) => {
    const m = extractLoraMetadata(parseSafetensorsFile(makeLora(layout, 'modelspec')));
    expect(m).toMatchObject({ baseModel, baseModelSource: 'METADATA', rank: 4, alpha: null, networkModule: null });
    expect(m).toMatchObject({ title: `My ${layout} LoRA`, description: 'A test LoRA with modelspec metadata.' });
    expect(m.triggerWords).toEqual(['mychar', 'red hair', 'blue eyes']);
  });

  it.each(LORA_LAYOUTS)('$layout with silent metadata is recognised by its tensor names and shapes', ({ layout, baseModel }) => {
    const m = extractLoraMetadata(parseSafetensorsFile(makeLora(layout, 'silent', { rank: 16 })));
    expect(m).toMatchObject({ baseModel, baseModelSource: 'TENSOR_SHAPES', rank: 16, alpha: null, title: null, triggerWords: [] });
    expect(m.raw).toEqual({});
  });

  it('reads the existing smallSd15Lora fixture', () => {
    expect(extractLoraMetadata(parseSafetensorsFile(smallSd15Lora()))).toMatchObject({ baseModel: 'SD1', rank: 4, alpha: 2 });
  });

  it('says UNKNOWN when neither metadata nor tensors are conclusive', () => {
    const file = makeSafetensors([{ name: 'some.weight', shape: [4, 4] }], { ss_base_model_version: 'mystery_v9' });
    expect(extractLoraMetadata(parseSafetensorsFile(file))).toMatchObject({ baseModel: 'UNKNOWN', baseModelSource: null, rank: null });
  });

  it('survives odd metadata and bounds what it keeps', () => {
    for (const tags of ['not json', '[1,2]', '{"d":[1]}', '{"d":{"a":"x","b":-1,"c":1e400,"  ":5}}', '"str"', 'null']) {
      const m = extractLoraMetadata(
        parseSafetensorsFile(smallSd15Lora({ ss_tag_frequency: tags, ss_num_epochs: '-3', ss_network_alpha: 'None' })),
      );
      expect(m).toMatchObject({ triggerWords: [], trainingEpochs: null, alpha: null });
    }
    const long = 'é'.repeat(20_000);
    const many = Object.fromEntries(Array.from({ length: 800 }, (_, i) => [`k${i}`, 'v']));
    const phrase = Array.from({ length: 200 }, (_, i) => `w${i}`).join(',');
    const m = extractLoraMetadata(
      parseSafetensorsFile(smallSd15Lora({ ...many, 'modelspec.title': long, 'modelspec.trigger_phrase': phrase })),
    );
    expect(m.title).toHaveLength(5000);
    expect(Object.keys(m.raw)).toHaveLength(500);
    expect(m.triggerWords).toHaveLength(50);
  });

  it('derives AutoV2 from the file hash', () => {
    expect(autoV2('ABCDEF0123456789'.repeat(4))).toBe('abcdef0123');
    expect(() => autoV2('abc')).toThrow(TypeError);
  });
});
