import { mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { InvalidFileError, UnsafeFileError } from '../../server/domain/errors.ts';
import { ALLOWED_GLOBALS, isAllowedImport } from '../../server/formats/pickle-allowlist.ts';
import { OPCODES } from '../../server/formats/pickle-opcodes.ts';
import { assertSafeGlobals, PICKLE_LIMITS, type PickleScan, scanPickle, unsafeFindings } from '../../server/formats/pickle-scan.ts';
import { checkPtFile } from '../../server/formats/pt.ts';
import { bufferReader, fileReader, inspectZip, readZipEntry } from '../../server/formats/zip-inspect.ts';
import { PickleWriter } from '../testkit/pickle-writer.ts';
import {
  BAD_PT_FILES,
  benignLegacyPt,
  benignTorchZipLora,
  LORA_TENSORS,
  legacyPt,
  stateDictPickle,
  torchZip,
} from '../testkit/pt-files.ts';
import { makeZip } from '../testkit/zip-writer.ts';

const LORA_GLOBALS = ['collections.OrderedDict', 'torch._utils._rebuild_tensor_v2', 'torch.FloatStorage', 'torch.HalfStorage'].sort();

const CPYTHON = [
  '63636f6c6c656374696f6e730a4f726465726564446963740a70300a28745270310a56770a70320a2849310a56780a70330a7470340a7356730a70350a635f5f6275696c74696e5f5f0a7365740a70360a28286c70370a49310a617470380a5270390a7356620a7031300a635f636f646563730a656e636f64650a7031310a285678790a7031320a566c6174696e310a7031330a747031340a527031350a7356630a7031360a635f5f6275696c74696e5f5f0a636f6d706c65780a7031370a2846312e300a46322e300a747031380a527031390a73566e0a7032300a4e732e',
  '63636f6c6c656374696f6e730a4f726465726564446963740a710029527101285801000000777102284b0158010000007871037471045801000000737105635f5f6275696c74696e5f5f0a7365740a7106285d71074b0161747108527109580100000062710a635f636f646563730a656e636f64650a710b2858020000007879710c58060000006c6174696e31710d74710e52710f5801000000637110635f5f6275696c74696e5f5f0a636f6d706c65780a711128473ff000000000000047400000000000000074711252711358010000006e71144e752e',
  '800263636f6c6c656374696f6e730a4f726465726564446963740a7100295271012858010000007771024b0158010000007871038671045801000000737105635f5f6275696c74696e5f5f0a7365740a71065d71074b0161857108527109580100000062710a635f636f646563730a656e636f64650a710b58020000007879710c58060000006c6174696e31710d86710e52710f5801000000637110635f5f6275696c74696e5f5f0a636f6d706c65780a7111473ff000000000000047400000000000000086711252711358010000006e71144e752e',
  '800363636f6c6c656374696f6e730a4f726465726564446963740a7100295271012858010000007771024b0158010000007871038671045801000000737105636275696c74696e730a7365740a71065d71074b0161857108527109580100000062710a43027879710b580100000063710c636275696c74696e730a636f6d706c65780a710d473ff000000000000047400000000000000086710e52710f58010000006e71104e752e',
  '80049579000000000000008c0b636f6c6c656374696f6e73948c0b4f72646572656444696374949394295294288c0177944b018c01789486948c0173948f94284b01908c01629443027879948c0163948c086275696c74696e73948c07636f6d706c6578949394473ff0000000000000474000000000000000869452948c016e944e752e',
  '80059579000000000000008c0b636f6c6c656374696f6e73948c0b4f72646572656444696374949394295294288c0177944b018c01789486948c0173948f94284b01908c01629443027879948c0163948c086275696c74696e73948c07636f6d706c6578949394473ff0000000000000474000000000000000869452948c016e944e752e',
] as const;
const CPYTHON_EVIL_0 = '63706f7369780a73797374656d0a70300a285669640a70310a7470320a5270330a2e';
const CPYTHON_EVIL_4 = '8004951d000000000000008c05706f736978948c0673797374656d9493948c02696494859452942e';

/** The error a call throws (fails the test if it does not throw). */
async function caught(f: () => unknown): Promise<unknown> {
  try {
    await f();
  } catch (err) {
    return err;
  }
  throw new Error('expected an error');
}

/** Only the two domain errors may escape, and never the scanner's own "bug" fallback. */
function expectDomainError(err: unknown): void {
  if (err instanceof UnsafeFileError) return;
  expect(err).toBeInstanceOf(InvalidFileError);
  expect((err as InvalidFileError).reason).not.toMatch(/scanner error/);
}

function scan(bytes: Buffer): PickleScan {
  return scanPickle(bytes, 'test.pkl');
}

describe('pickle scanner', () => {
  it('reads a torch.save state dict (protocol 2 and framed protocol 4) without executing it', () => {
    for (const protocol of [2, 4]) {
      const { pickle } = stateDictPickle(LORA_TENSORS, { protocol, withMetadata: true });
      const s = scan(pickle);
      expect(s.globals.sort()).toEqual(LORA_GLOBALS);
      expect(s.tensors).toBe(3);
      expect(s.storages).toEqual([
        { key: '0', type: 'torch.FloatStorage', numel: 1 },
        { key: '1', type: 'torch.HalfStorage', numel: 1280 },
        { key: '2', type: 'torch.HalfStorage', numel: 1280 },
      ]);
      expect(s.findings).toEqual([]);
      expect(s.length).toBe(pickle.length);
      expect(s.result).toEqual({ t: 'dict' });
      expect(() => assertSafeGlobals(s, 'data.pkl')).not.toThrow();
    }
  });

  it('reads what CPython pickle.dumps writes, protocols 0–5 (OrderedDict with tuple, set, bytes, complex; a __reduce__ payload)', () => {
    // pickle.dumps(OrderedDict(w=(1, 'x'), s={1}, b=b'xy', c=1+2j, n=None), protocol=p), Python 3.11
    const benign: [number, string, string[]][] = [
      [0, CPYTHON[0], ['collections.OrderedDict', 'builtins.set', '_codecs.encode', 'builtins.complex']],
      [1, CPYTHON[1], ['collections.OrderedDict', 'builtins.set', '_codecs.encode', 'builtins.complex']],
      [2, CPYTHON[2], ['collections.OrderedDict', 'builtins.set', '_codecs.encode', 'builtins.complex']],
      [3, CPYTHON[3], ['collections.OrderedDict', 'builtins.set', 'builtins.complex']],
      [4, CPYTHON[4], ['collections.OrderedDict', 'builtins.complex']],
      [5, CPYTHON[5], ['collections.OrderedDict', 'builtins.complex']],
    ];
    for (const [protocol, hex, globals] of benign) {
      const s = scan(Buffer.from(hex, 'hex'));
      expect(s.protocol).toBe(protocol >= 2 ? protocol : 0); // protocols 0 and 1 have no PROTO opcode
      expect(s.globals).toEqual(globals);
      expect(unsafeFindings(s, 'x')).toEqual([]);
    }
    // pickle.dumps(obj) where obj.__reduce__ returns (os.system, ('id',)), protocols 0 and 4
    for (const hex of [CPYTHON_EVIL_0, CPYTHON_EVIL_4]) {
      expect(() => assertSafeGlobals(scan(Buffer.from(hex, 'hex')), 'x')).toThrow(/posix\.system/);
    }
  });

  it('decodes every opcode of the pickletools table', () => {
    const line = (s: string) => Buffer.from(`${s}\n`, 'latin1');
    const le = (n: number, size: number) => {
      const b = Buffer.alloc(size);
      if (size === 8) b.writeBigUInt64LE(BigInt(n));
      else b.writeUIntLE(n, 0, size);
      return b;
    };
    const w = new PickleWriter(5);
    const pushPop = (name: string, arg?: Buffer) => w.op(name, arg).op('POP');
    pushPop('INT', line('42'));
    pushPop('INT', line('01'));
    pushPop('BININT', le(7, 4));
    pushPop('BININT1', le(7, 1));
    pushPop('BININT2', le(7, 2));
    pushPop('LONG', line('123456789012345678901234567890L'));
    pushPop('LONG1', Buffer.from([1, 0xff]));
    pushPop('LONG4', Buffer.concat([le(2, 4), Buffer.from([0, 1])]));
    pushPop('STRING', line("'abc'"));
    pushPop('BINSTRING', Buffer.concat([le(1, 4), Buffer.from('a')]));
    pushPop('SHORT_BINSTRING', Buffer.from([1, 0x61]));
    pushPop('BINBYTES', Buffer.concat([le(1, 4), Buffer.from('a')]));
    pushPop('SHORT_BINBYTES', Buffer.from([1, 0x61]));
    w.op('BINBYTES8', Buffer.concat([le(1, 8), Buffer.from('a')]))
      .op('READONLY_BUFFER')
      .op('POP');
    pushPop('BYTEARRAY8', Buffer.concat([le(1, 8), Buffer.from('a')]));
    for (const c of ['NONE', 'NEWTRUE', 'NEWFALSE']) pushPop(c);
    pushPop('UNICODE', line('abc'));
    pushPop('SHORT_BINUNICODE', Buffer.from([1, 0x61]));
    pushPop('BINUNICODE', Buffer.concat([le(1, 4), Buffer.from('a')]));
    pushPop('BINUNICODE8', Buffer.concat([le(1, 8), Buffer.from('a')]));
    pushPop('FLOAT', line('1.5e3'));
    pushPop('BINFLOAT', Buffer.alloc(8));
    w.op('EMPTY_LIST').op('NONE').op('APPEND').op('MARK').op('NONE').op('APPENDS').op('POP');
    w.op('MARK').op('NONE').op('LIST').op('POP');
    w.op('EMPTY_TUPLE').op('POP').op('MARK').op('NONE').op('TUPLE').op('POP');
    w.op('NONE')
      .op('TUPLE1')
      .op('NONE')
      .op('NONE')
      .op('TUPLE2')
      .op('NONE')
      .op('NONE')
      .op('NONE')
      .op('TUPLE3')
      .op('POP')
      .op('POP')
      .op('POP');
    w.op('EMPTY_DICT').op('NONE').op('NONE').op('SETITEM').op('MARK').op('NONE').op('NONE').op('SETITEMS').op('POP');
    w.op('MARK').op('NONE').op('NONE').op('DICT').op('POP');
    w.op('EMPTY_SET').op('MARK').op('NONE').op('ADDITEMS').op('POP').op('MARK').op('NONE').op('FROZENSET').op('POP');
    w.op('NONE').op('DUP').op('POP').op('POP').op('MARK').op('NONE').op('POP_MARK').op('MARK').op('POP');
    w.op('NONE').op('PUT', line('0')).op('BINPUT', le(1, 1)).op('LONG_BINPUT', le(2, 4)).op('MEMOIZE').op('POP');
    w.op('GET', line('0')).op('BINGET', le(1, 1)).op('LONG_BINGET', le(3, 4)).op('POP').op('POP').op('POP');
    w.op('EXT1', le(1, 1)).op('EXT2', le(2, 2)).op('EXT4', le(3, 4)).op('POP').op('POP').op('POP');
    w.global('collections', 'OrderedDict').op('EMPTY_TUPLE').op('REDUCE').op('EMPTY_DICT').op('BUILD').op('POP');
    w.stackGlobal('collections', 'OrderedDict').op('EMPTY_TUPLE').op('NEWOBJ').op('POP');
    w.stackGlobal('collections', 'OrderedDict').op('EMPTY_TUPLE').op('EMPTY_DICT').op('NEWOBJ_EX').op('POP');
    w.op('MARK').stackGlobal('collections', 'OrderedDict').op('OBJ').op('POP');
    w.op('MARK').inst('collections', 'OrderedDict').op('POP');
    w.op('PERSID', line('0')).op('POP').op('NONE').op('BINPERSID').op('POP');
    const bytes = w.op('NONE').stopFramed();

    const s = scan(bytes);
    const used = new Set<number>();
    // Walk the same bytes with the opcode table to prove every opcode but NEXT_BUFFER appears.
    for (const [code] of OPCODES) if (bytes.includes(code)) used.add(code);
    const names = [...OPCODES.values()].map((o) => o.name).filter((n) => n !== 'NEXT_BUFFER');
    expect(names.filter((n) => ![...used].some((c) => OPCODES.get(c)?.name === n))).toEqual([]);
    expect(OPCODES.size).toBe(68);
    expect(s.globals).toEqual(['collections.OrderedDict']);
    expect(s.findings.map((f) => f.kind)).toEqual(['EXT1', 'EXT2', 'EXT4']);
    expect(() => scan(new PickleWriter(5).op('NEXT_BUFFER').stop())).toThrow(/out-of-band/);
  });

  it('lists every import outside the allowlist as a finding with its opcode and location', () => {
    const w = new PickleWriter(2).global('builtins', 'getattr').global('builtins', '__import__').str('os').op('TUPLE1').op('REDUCE');
    const bytes = w.str('system').op('TUPLE2').op('REDUCE').stop();
    const err = (() => {
      try {
        assertSafeGlobals(scan(bytes), 'archive/data.pkl');
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(UnsafeFileError);
    expect((err as UnsafeFileError).findings).toEqual([
      { kind: 'GLOBAL', detail: 'builtins.getattr', location: 'archive/data.pkl' },
      { kind: 'GLOBAL', detail: 'builtins.__import__', location: 'archive/data.pkl' },
    ]);
  });

  it('applies the allowlist decisions: what torch weights_only needs for data, nothing that reaches code', () => {
    for (const ok of ['builtins.set', 'builtins.complex', '_codecs.encode', 'torch.bfloat16', 'torch.BFloat16Storage', 'torch.Size']) {
      expect(ALLOWED_GLOBALS.has(ok)).toBe(true);
    }
    for (const no of [
      'builtins.frozenset',
      'builtins.bytearray',
      'builtins.slice',
      'builtins.eval',
      'builtins.getattr',
      'torch._utils._rebuild_qtensor',
      'torch._tensor._rebuild_from_type_v2',
      'torch.Tensor',
      'collections.Counter',
      'numpy.core.multiarray._reconstruct',
    ]) {
      expect(ALLOWED_GLOBALS.has(no)).toBe(false);
    }
    expect(isAllowedImport('torch._utils', '_rebuild_tensor_v2')).toBe(true);
    expect(isAllowedImport('torch', '_utils._rebuild_tensor_v2')).toBe(false);
    // protocol 2 names Python 3 builtins __builtin__ (fix_imports); protocol 4 does not.
    const set2 = scan(new PickleWriter(2).global('__builtin__', 'set').op('EMPTY_LIST').op('TUPLE1').op('REDUCE').stop());
    expect(set2.globals).toEqual(['builtins.set']);
    expect(unsafeFindings(set2, 'x')).toEqual([]);
    const set4 = scan(new PickleWriter(4).stackGlobal('__builtin__', 'set').stopFramed());
    expect(unsafeFindings(set4, 'x').map((f) => f.detail)).toEqual(['__builtin__.set']);
    // storage types and dtypes are values, never callees
    const alloc = scan(
      new PickleWriter(2)
        .global('torch', 'HalfStorage')
        .int(2 ** 30)
        .op('TUPLE1')
        .op('REDUCE')
        .stop(),
    );
    expect(unsafeFindings(alloc, 'x').map((f) => f.detail)).toEqual(['calls torch.HalfStorage, which may only appear as a value']);
    // bytes under protocol 2: _codecs.encode('\xff', 'latin1')
    const bytes2 = scan(new PickleWriter(2).global('_codecs', 'encode').str('ÿ').str('latin1').op('TUPLE2').op('REDUCE').stop());
    expect(unsafeFindings(bytes2, 'x')).toEqual([]);
  });

  it('resolves STACK_GLOBAL through the memo, DUP and marks, and refuses names it cannot prove', () => {
    const viaDup = new PickleWriter(4).str('os').op('DUP').op('POP').str('system').op('STACK_GLOBAL').stopFramed();
    expect(scan(viaDup).globals).toEqual(['os.system']);
    const viaMark = new PickleWriter(4).str('posix').op('MARK').op('NONE').op('POP_MARK').str('system').op('STACK_GLOBAL').stopFramed();
    expect(scan(viaMark).globals).toEqual(['posix.system']);
    const escaped = Buffer.concat([Buffer.from([0x80, 0x02]), Buffer.from("S'o\\x73'\nS'system'\n\x93.", 'latin1')]);
    expect(scan(escaped).findings.map((f) => f.detail)).toEqual(['unresolved import: module or name is not a literal string']);
  });

  it('fails closed on malformed streams with the rule in the reason', () => {
    const cases: [Buffer, RegExp][] = [
      [Buffer.alloc(0), /empty pickle/],
      [Buffer.from([0x80, 0x02, 0x80, 0x02, 0x4e, 0x2e]), /PROTO is not the first opcode/],
      [Buffer.from([0x80, 0x06, 0x4e, 0x2e]), /unsupported protocol 6/],
      [Buffer.from([0x80, 0x02, 0x4e, 0x4e, 0x2e]), /STOP with a stack that is not exactly one value/],
      [Buffer.from([0x80, 0x02, 0x28, 0x4e, 0x2e]), /STOP with a stack/],
      [Buffer.from([0x80, 0x02, 0x65, 0x2e]), /no MARK/],
      [Buffer.from([0x80, 0x02, 0x68, 0x05, 0x2e]), /memo key 5 was never stored/],
      [Buffer.from([0x80, 0x02, 0x4e, 0x72, 0xff, 0xff, 0xff, 0xff, 0x2e]), /memo index 4294967295 too large/],
      [Buffer.from([0x80, 0x02, 0x28, 0x4e, 0x75, 0x2e]), /odd number of items for SETITEMS/],
      [Buffer.from([0x80, 0x02, 0x54, 0xff, 0xff, 0xff, 0xff, 0x2e]), /negative length/],
      [Buffer.from('I12x\n.', 'latin1'), /malformed INT/],
      [Buffer.from("S'abc\n.", 'latin1'), /not quoted/],
      [Buffer.from('cos\nsys', 'latin1'), /os\.sys|line argument without newline/],
      [
        Buffer.concat([Buffer.from([0x80, 0x04, 0x95]), Buffer.from('0200000000000000', 'hex'), Buffer.from([0x4d, 0x01, 0x01, 0x2e])]),
        /frame boundary/,
      ],
      [
        Buffer.concat([
          Buffer.from([0x80, 0x04, 0x95]),
          Buffer.from('0a00000000000000', 'hex'),
          Buffer.from([0x95]),
          Buffer.alloc(8),
          Buffer.from('N.'),
        ]),
        /new frame before the end/,
      ],
      [
        Buffer.concat([Buffer.from([0x80, 0x04, 0x95]), Buffer.from('0c00000000000000', 'hex'), Buffer.from('N.')]),
        /frame of 12 bytes runs past the end/,
      ],
    ];
    for (const [bytes, reason] of cases) {
      const err = (() => {
        try {
          scan(bytes);
        } catch (e) {
          return e;
        }
      })();
      expect(err, reason.source).toBeInstanceOf(InvalidFileError);
      expect((err as Error).message).toMatch(reason);
    }
  });

  it('prefers UNSAFE_FILE when a stream breaks after importing something it must not', () => {
    const bytes = new PickleWriter(2).global('os', 'system').str('id').op('TUPLE1').op('REDUCE').stop().subarray(0, -1);
    const err = (() => {
      try {
        scan(bytes);
      } catch (e) {
        return e;
      }
    })() as UnsafeFileError;
    expect(err).toBeInstanceOf(UnsafeFileError);
    expect(err.findings.map((f) => f.kind)).toEqual(['GLOBAL', 'parse-error']);
  });

  it('bounds work: opcodes, nesting and memo', () => {
    const many = Buffer.concat([Buffer.from('N0'.repeat(PICKLE_LIMITS.maxOpcodes / 2 + 1), 'latin1'), Buffer.from('N.')]);
    const started = performance.now();
    expect(() => scan(many)).toThrow(/too many opcodes/);
    expect(performance.now() - started).toBeLessThan(5_000);
    expect(() => scan(Buffer.from(`${'('.repeat(PICKLE_LIMITS.maxMarks + 1)}N.`, 'latin1'))).toThrow(/too many nested MARKs/);
    expect(() => scan(Buffer.from(`${'N'.repeat(PICKLE_LIMITS.maxStack + 1)}.`, 'latin1'))).toThrow(/stack too deep/);
  });

  it('scans consecutive pickles when trailing bytes are allowed, and rejects them otherwise', () => {
    const two = Buffer.concat([new PickleWriter(2).int(1).stop(), new PickleWriter(2).int(2).stop()]);
    const first = scanPickle(two, 'x', { trailing: 'allow' });
    expect(first.result).toEqual({ t: 'int', v: 1n });
    expect(scanPickle(two.subarray(first.length), 'x').result).toEqual({ t: 'int', v: 2n });
    expect(() => scanPickle(two, 'x')).toThrow(/bytes after STOP/);
  });
});

describe('zip inspector', () => {
  it('lists a torch-style archive: descriptors, 64-byte aligned data, zip64 end record', async () => {
    const entries = await inspectZip(bufferReader(benignTorchZipLora()));
    expect(entries.map((e) => e.name)).toEqual([
      'archive/data.pkl',
      'archive/byteorder',
      'archive/data/0',
      'archive/data/1',
      'archive/data/2',
      'archive/version',
      'archive/.data/serialization_id',
    ]);
    for (const e of entries) {
      expect(e.method).toBe(0);
      expect(e.descriptorSize).toBe(16);
      expect(e.dataOffset % 64).toBe(0);
    }
  });

  it('accepts plain layouts (no descriptor, no zip64, no padding) and inflates deflated entries under a cap', async () => {
    const data = Buffer.from('3\n'.repeat(30));
    const zip = makeZip([{ name: 'a/version', data, method: 8 }], { descriptor: false, zip64: false, align: false });
    const reader = bufferReader(zip);
    const [entry] = await inspectZip(reader);
    expect(entry?.method).toBe(8);
    expect(await readZipEntry(reader, entry as NonNullable<typeof entry>, 1024)).toEqual(data);
    await expect(readZipEntry(reader, entry as NonNullable<typeof entry>, 10)).rejects.toThrow(/larger than 10 bytes/);
    const lying = makeZip([{ name: 'a/version', data, method: 8, cd: { uncompressedSize: 20 }, local: { uncompressedSize: 20 } }], {
      descriptor: false,
    });
    const [small] = await inspectZip(bufferReader(lying));
    await expect(readZipEntry(bufferReader(lying), small as NonNullable<typeof small>, 1024)).rejects.toThrow(
      /inflates beyond its declared size/,
    );
  });

  it('reads through a file handle', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'pt-test-'));
    try {
      const path = join(dir, 'upload.pt');
      const bytes = benignTorchZipLora();
      await writeFile(path, bytes);
      const handle = await open(path, 'r');
      try {
        const result = await checkPtFile(fileReader(handle, bytes.length), 'pt-zip');
        expect({ ...result, globals: result.globals.sort() }).toEqual({ pickles: 1, globals: LORA_GLOBALS, tensors: 3 });
      } finally {
        await handle.close();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('checkPtFile', () => {
  it('accepts a benign torch zip LoRA and reports its globals and tensors', async () => {
    const result = await checkPtFile(bufferReader(benignTorchZipLora()), 'pt-zip');
    expect({ ...result, globals: result.globals.sort() }).toEqual({ pickles: 1, globals: LORA_GLOBALS, tensors: 3 });
  });

  it('accepts a protocol 4 zip under any top folder name, and state dicts holding sets and bytes', async () => {
    expect((await checkPtFile(bufferReader(torchZip(LORA_TENSORS, { protocol: 4, folder: 'my_lora' })), 'pt-zip')).tensors).toBe(3);
    const w = new PickleWriter(2).op('EMPTY_DICT').mark();
    w.str('set').global('__builtin__', 'set').op('EMPTY_LIST').op('TUPLE1').op('REDUCE');
    w.str('bytes').global('_codecs', 'encode').str('abc').str('latin1').op('TUPLE2').op('REDUCE');
    const result = await checkPtFile(bufferReader(torchZip([], { dataPkl: w.op('SETITEMS').stop() })), 'pt-zip');
    expect(result.globals).toEqual(['builtins.set', '_codecs.encode']);
  });

  it('accepts a benign legacy .pt and checks its storage bytes', async () => {
    const result = await checkPtFile(bufferReader(benignLegacyPt()), 'pt-pickle');
    expect({ ...result, globals: result.globals.sort() }).toEqual({ pickles: 5, globals: LORA_GLOBALS, tensors: 3 });
    expect((await checkPtFile(bufferReader(legacyPt(LORA_TENSORS, { protocol: 4 })), 'pt-pickle')).tensors).toBe(3);
  });

  it.each(BAD_PT_FILES.map((f) => [f.name, f] as const))('rejects %s', async (_name, file) => {
    const err = await caught(() => checkPtFile(bufferReader(file.bytes), file.kind));
    expectDomainError(err);
    expect((err as UnsafeFileError | InvalidFileError).code).toBe(file.expect);
    expect((err as Error).message).toMatch(file.matches);
    if (err instanceof UnsafeFileError) {
      expect(err.findings.length).toBeGreaterThan(0);
      for (const f of err.findings) expect(f.location).toMatch(file.kind === 'pt-zip' ? /^[^/]+\/.+/ : /^<file>/);
    } else {
      expect((err as InvalidFileError).detectedFormat).toBe(file.kind);
    }
  });

  it('names the entry that hides the payload', async () => {
    const file = BAD_PT_FILES.find((f) => f.name === '__reduce__ hidden in a second .pkl entry');
    const err = (await caught(() => checkPtFile(bufferReader(file?.bytes ?? Buffer.alloc(0)), 'pt-zip'))) as UnsafeFileError;
    expect(err.findings).toEqual([{ kind: 'GLOBAL', detail: 'posix.system', location: 'archive/extra.pkl' }]);
  });
});

describe('fuzzing (never anything but the two domain errors, never slow)', () => {
  const pickles = [stateDictPickle(LORA_TENSORS).pickle, stateDictPickle(LORA_TENSORS, { protocol: 4, withMetadata: true }).pickle];
  const mutate = (base: Buffer, edits: [number, number][]) => {
    const b = Buffer.from(base);
    for (const [at, byte] of edits) b[at % b.length] = byte;
    return b;
  };
  const edits = fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 8 });

  it('every truncation of a benign pickle is INVALID_FILE_FORMAT', () => {
    for (const p of pickles) {
      for (let n = 0; n < p.length; n++) expect(() => scan(p.subarray(0, n))).toThrow(InvalidFileError);
    }
  });

  it('random byte corruption of benign pickles', () => {
    fc.assert(
      fc.property(fc.constantFrom(...pickles), edits, (p, e) => {
        try {
          scan(mutate(p, e));
        } catch (err) {
          expectDomainError(err);
        }
      }),
      { numRuns: 2_000 },
    );
  });

  it('random opcode sequences and random bytes never crash the scanner', () => {
    const codes = [...OPCODES.keys()];
    const op = fc
      .tuple(fc.constantFrom(...codes), fc.uint8Array({ maxLength: 9 }))
      .map(([c, arg]) => Buffer.concat([Buffer.from([c]), arg]));
    const streams = fc.oneof(
      fc.array(op, { maxLength: 60 }).map((ops) => Buffer.concat(ops)),
      fc.uint8Array({ maxLength: 200 }).map((a) => Buffer.from(a)),
    );
    fc.assert(
      fc.property(streams, fc.boolean(), (bytes, allowTrailing) => {
        try {
          scanPickle(bytes, 'fuzz', { trailing: allowTrailing ? 'allow' : 'reject' });
        } catch (err) {
          expectDomainError(err);
        }
      }),
      { numRuns: 5_000 },
    );
  });

  it('random corruption of data.pkl inside an otherwise valid zip (CRC recomputed, so the scanner sees it)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...pickles), edits, async (p, e) => {
        try {
          await checkPtFile(bufferReader(torchZip(LORA_TENSORS, { dataPkl: mutate(p, e) })), 'pt-zip');
        } catch (err) {
          expectDomainError(err);
        }
      }),
      { numRuns: 500 },
    );
  });

  it('random corruption and truncation of benign zips and legacy files', async () => {
    const files = [
      { bytes: benignTorchZipLora(), kind: 'pt-zip' as const },
      { bytes: torchZip(LORA_TENSORS, { protocol: 4, zip: { descriptor: false, zip64: false } }), kind: 'pt-zip' as const },
      { bytes: benignLegacyPt(), kind: 'pt-pickle' as const },
    ];
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...files), edits, fc.option(fc.nat(), { nil: undefined }), async (file, e, cut) => {
        let bytes = mutate(file.bytes, e);
        if (cut !== undefined) bytes = bytes.subarray(0, cut % bytes.length);
        const started = performance.now();
        try {
          await checkPtFile(bufferReader(bytes), file.kind);
        } catch (err) {
          expectDomainError(err);
        }
        expect(performance.now() - started).toBeLessThan(1_000);
      }),
      { numRuns: 1_500 },
    );
  });
});
