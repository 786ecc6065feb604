/**
 * .pt fixtures for tests (THREATS rows 3–4): benign torch files, and a catalogue of malicious and
 * broken ones, each with the error code and a message pattern naming the problem. `kind` is what
 * sniff.ts decides from the first bytes (pt-zip for `PK\x03\x04`, pt-pickle for `\x80\x02..5`).
 */
import { PickleWriter } from './pickle-writer.ts';
import { LORA_TENSORS, legacyPt, stateDictPickle, TORCH_MAGIC, tensorBytes, torchZip } from './pt-builders.ts';
import { centralRecord, endRecords, localRecord, makeZip, prepare } from './zip-writer.ts';

export { LORA_TENSORS, legacyPt, stateDictPickle, torchZip };

export interface BadPtFile {
  name: string;
  bytes: Buffer;
  kind: 'pt-zip' | 'pt-pickle';
  expect: 'INVALID_FILE_FORMAT' | 'UNSAFE_FILE';
  /** Matches the error message (for UNSAFE_FILE it lists the findings). */
  matches: RegExp;
}

/** torch.save of a small LoRA state dict, zip format (what torch ≥ 1.6 writes). */
export function benignTorchZipLora(): Buffer {
  return torchZip(LORA_TENSORS, { withMetadata: true });
}

/** The same LoRA in the legacy format (`_use_new_zipfile_serialization=False`). */
export function benignLegacyPt(): Buffer {
  return legacyPt(LORA_TENSORS);
}

// ---- malicious pickles ---------------------------------------------------------------------

const CMD = 'touch /tmp/pwned';
const call1 = (w: PickleWriter, arg: string) => w.str(arg).op('TUPLE1').op('REDUCE');

const osSystemGlobal = () => call1(new PickleWriter(2).global('os', 'system').put(), CMD).stop();
const evalStackGlobal = () =>
  call1(new PickleWriter(4).stackGlobal('builtins', 'eval').op('MEMOIZE'), `__import__('os').system('${CMD}')`).stopFramed();
/** builtins.getattr(builtins.__import__('os'), 'system')(CMD) */
const getattrChain = () => {
  const w = new PickleWriter(2).global('builtins', 'getattr');
  call1(w.global('builtins', '__import__'), 'os');
  w.str('system').op('TUPLE2').op('REDUCE');
  return call1(w, CMD).stop();
};
/** functools.partial(posix.system, CMD)() */
const functoolsPartial = () =>
  new PickleWriter(2)
    .global('functools', 'partial')
    .global('posix', 'system')
    .str(CMD)
    .op('TUPLE2')
    .op('REDUCE')
    .op('EMPTY_TUPLE')
    .op('REDUCE')
    .stop();
/** subprocess.Popen(['sh', '-c', CMD]) */
const subprocessPopen = () =>
  new PickleWriter(2)
    .global('subprocess', 'Popen')
    .op('EMPTY_LIST')
    .mark()
    .str('sh')
    .str('-c')
    .str(CMD)
    .op('APPENDS')
    .op('TUPLE1')
    .op('REDUCE')
    .stop();
/** What pickle.dumps(obj) writes for a class whose __reduce__ returns (os.system, (CMD,)) on Linux. */
const reducePosixSystem = () => call1(new PickleWriter(2).global('posix', 'system').put(), CMD).stop();
const protocol0Text = () => Buffer.from(`cos\nsystem\n(S'${CMD}'\ntR.`, 'latin1');
const instOpcode = () => Buffer.from(`(S'${CMD}'\nios\nsystem\n.`, 'latin1');
/** Module and name are memoized once, popped, and fetched back with BINGET right before STACK_GLOBAL. */
const memoStackGlobal = () => {
  const w = new PickleWriter(4);
  w.str('builtins').op('MEMOIZE').op('POP').str('exec').op('MEMOIZE').op('POP');
  w.stackGlobal('collections', 'OrderedDict').op('POP'); // a benign literal STACK_GLOBAL to mislead look-behind scanners
  w.get(0).get(1).op('STACK_GLOBAL');
  return call1(w, `import os; os.system('${CMD}')`).stopFramed();
};
/** STACK_GLOBAL on names computed at load time: _codecs.encode('bf', 'rot13') is 'os'. */
const computedStackGlobal = () => {
  const w = new PickleWriter(4);
  w.stackGlobal('_codecs', 'encode').op('MEMOIZE');
  w.str('bf').str('rot13').op('TUPLE2').op('REDUCE');
  w.get(0).str('flfgrz').str('rot13').op('TUPLE2').op('REDUCE');
  w.op('STACK_GLOBAL');
  return call1(w, CMD).stopFramed();
};
/** BUILD on the class torch.HalfStorage itself: setattr on a class the loader trusts. */
const buildOnClass = () =>
  new PickleWriter(2)
    .global('torch', 'HalfStorage')
    .none()
    .op('EMPTY_DICT')
    .str('__reduce_ex__')
    .str('x')
    .op('SETITEM')
    .op('TUPLE2')
    .op('BUILD')
    .stop();
const extensionCode = () =>
  new PickleWriter(2)
    .op('EXT1', Buffer.from([1]))
    .op('EMPTY_TUPLE')
    .op('REDUCE')
    .stop();
/** Protocol 4 resolves a dotted name by attribute access; the joined string looks allowlisted. */
const dottedName = () => new PickleWriter(4).stackGlobal('torch', '_utils._rebuild_tensor_v2').stopFramed();
/** Calls the result of a call: OrderedDict()() */
const callOnResult = () =>
  new PickleWriter(2).global('collections', 'OrderedDict').op('EMPTY_TUPLE').op('REDUCE').op('EMPTY_TUPLE').op('REDUCE').stop();
/** torch.HalfStorage(2**40): an allowed type token, called. */
const storageCall = () =>
  new PickleWriter(2)
    .global('torch', 'HalfStorage')
    .long(2n ** 40n)
    .op('TUPLE1')
    .op('REDUCE')
    .stop();
/** bytearray(2**40) zero-fills a terabyte in a full unpickler (torch's weights-only loader allows builtins.bytearray). */
const bytearrayBomb = () =>
  new PickleWriter(2)
    .global('__builtin__', 'bytearray')
    .long(2n ** 40n)
    .op('TUPLE1')
    .op('REDUCE')
    .stop();
const py2Builtin = () => call1(new PickleWriter(2).global('__builtin__', 'eval'), '1').stop();

const zipWithData = (dataPkl: Buffer) => torchZip(LORA_TENSORS, { dataPkl });
const legacyWithData = (dataPickle: Buffer) => legacyPt(LORA_TENSORS, { dataPickle });

// ---- broken archives -----------------------------------------------------------------------

/** Entry A's data contains entry B's local header and data: two entries, one byte range. */
function overlappingZip(): Buffer {
  const b = prepare({ name: 'archive/data/0', data: tensorBytes(64) }, false);
  const bRecord = localRecord(b, 0, { descriptor: false, align: false });
  const a = prepare({ name: 'archive/data.pkl', data: Buffer.concat([Buffer.from('junk'), bRecord]) }, false);
  const aRecord = localRecord(a, 0, { descriptor: false, align: false });
  const cd = Buffer.concat([centralRecord(a, 0), centralRecord(b, 30 + a.nameBytes.length + 4)]);
  return Buffer.concat([aRecord, cd, endRecords(2, aRecord.length, cd.length, aRecord.length + cd.length, { zip64: false })]);
}

function tooManyEntries(): Buffer {
  const entries = Array.from({ length: 10_001 }, (_, i) => ({ name: `archive/data/${i}`, data: Buffer.alloc(0) }));
  return makeZip(entries, { align: false, descriptor: false, zip64: false });
}

function png(): Buffer {
  const ihdr = Buffer.from('0000000d49484452000000010000000108060000001f15c489', 'hex');
  return Buffer.concat([Buffer.from('89504e470d0a1a0a', 'hex'), ihdr, Buffer.from('0000000049454e44ae426082', 'hex')]);
}

const rename = (from: string, to: string) => (entries: { name: string; data: Buffer }[]) =>
  entries.map((e) => (e.name === from ? { ...e, name: to } : e));

function badFiles(): BadPtFile[] {
  const benign = benignTorchZipLora();
  const unsafe = (name: string, bytes: Buffer, matches: RegExp, kind: BadPtFile['kind'] = 'pt-zip'): BadPtFile => ({
    name,
    bytes,
    kind,
    expect: 'UNSAFE_FILE',
    matches,
  });
  const invalid = (name: string, bytes: Buffer, matches: RegExp, kind: BadPtFile['kind'] = 'pt-zip'): BadPtFile => ({
    name,
    bytes,
    kind,
    expect: 'INVALID_FILE_FORMAT',
    matches,
  });
  const legacyLen = benignLegacyPt().length;
  return [
    // THREATS 4: imports outside the allowlist
    unsafe('os.system via GLOBAL', zipWithData(osSystemGlobal()), /os\.system/),
    unsafe('builtins.eval via STACK_GLOBAL (protocol 4, framed)', zipWithData(evalStackGlobal()), /builtins\.eval/),
    unsafe('getattr(__import__("os"), "system") chain', zipWithData(getattrChain()), /builtins\.getattr.*builtins\.__import__/),
    unsafe('functools.partial(posix.system, …)', zipWithData(functoolsPartial()), /functools\.partial.*posix\.system/),
    unsafe('subprocess.Popen', zipWithData(subprocessPopen()), /subprocess\.Popen/),
    unsafe(
      '__reduce__ hidden in a second .pkl entry',
      torchZip(LORA_TENSORS, { extra: [{ name: 'archive/extra.pkl', data: reducePosixSystem() }] }),
      /posix\.system/,
    ),
    unsafe(
      '__reduce__ in an upper-case .PKL entry',
      torchZip(LORA_TENSORS, { extra: [{ name: 'archive/data/evil.PKL', data: reducePosixSystem() }] }),
      /posix\.system/,
    ),
    unsafe('protocol 0 text GLOBAL', zipWithData(protocol0Text()), /os\.system/),
    unsafe('protocol 0 INST', zipWithData(instOpcode()), /os\.system/),
    unsafe('memo-indirected STACK_GLOBAL', zipWithData(memoStackGlobal()), /builtins\.exec/),
    unsafe('STACK_GLOBAL on names computed at load time (rot13)', zipWithData(computedStackGlobal()), /unresolved import/),
    unsafe('BUILD on a class', zipWithData(buildOnClass()), /BUILD sets state on torch\.HalfStorage/),
    unsafe('copyreg extension code', zipWithData(extensionCode()), /extension registry/),
    unsafe('dotted attribute path that joins to an allowlisted name', zipWithData(dottedName()), /attribute path/),
    unsafe('call on a call result', zipWithData(callOnResult()), /not an import/),
    unsafe('Python 2 __builtin__.eval', zipWithData(py2Builtin()), /builtins\.eval/),
    unsafe('allocation through a storage class call', zipWithData(storageCall()), /calls torch\.HalfStorage/),
    unsafe('bytearray(2**40) memory bomb', zipWithData(bytearrayBomb()), /builtins\.bytearray/),
    unsafe('import, then truncated', zipWithData(osSystemGlobal().subarray(0, -3)), /os\.system/),
    unsafe(
      'TorchScript archive',
      torchZip(LORA_TENSORS, {
        extra: [
          { name: 'archive/constants.pkl', data: new PickleWriter(2).op('EMPTY_TUPLE').stop() },
          { name: 'archive/code/archive.py', data: Buffer.from('def forward(self): pass\n') },
        ],
      }),
      /TorchScript/,
    ),
    unsafe('legacy .pt with os.system in the data pickle', legacyWithData(osSystemGlobal()), /os\.system/, 'pt-pickle'),
    unsafe('bare malicious pickle (no torch header)', reducePosixSystem(), /posix\.system/, 'pt-pickle'),
    // THREATS 3–4: not a torch file / broken archives
    invalid(
      'zip with no pickle',
      makeZip([
        { name: 'archive/version', data: Buffer.from('3\n') },
        { name: 'archive/data/0', data: tensorBytes(8) },
      ]),
      /no data\.pkl/,
    ),
    invalid('empty zip (end record only)', makeZip([], { zip64: false }), /no data\.pkl|zip/),
    invalid(
      '"../evil" entry name',
      torchZip(LORA_TENSORS, { extra: [{ name: 'archive/../evil', data: Buffer.from('x') }] }),
      /"\.\." segment/,
    ),
    invalid(
      'absolute entry name',
      torchZip(LORA_TENSORS, { extra: [{ name: '/etc/cron.d/evil', data: Buffer.from('x') }] }),
      /absolute path/,
    ),
    invalid(
      'backslash in an entry name',
      torchZip(LORA_TENSORS, { extra: [{ name: 'archive\\..\\evil', data: Buffer.from('x') }] }),
      /backslash/,
    ),
    invalid(
      'NUL in an entry name',
      torchZip(LORA_TENSORS, { extra: [{ name: 'archive/version\u0000.txt', data: Buffer.from('x') }] }),
      /control or invisible/,
    ),
    invalid(
      'duplicate entry names',
      torchZip(LORA_TENSORS, { extra: [{ name: 'archive/data.pkl', data: osSystemGlobal() }] }),
      /duplicate/,
    ),
    invalid(
      'case-variant duplicate DATA.PKL',
      torchZip(LORA_TENSORS, { extra: [{ name: 'archive/DATA.PKL', data: osSystemGlobal() }] }),
      /duplicate/,
    ),
    invalid(
      'declared sizes far above real',
      torchZip(LORA_TENSORS, {
        edit: (es) =>
          es.map((e) => (e.name === 'archive/data.pkl' ? { ...e, cd: { compressedSize: 2 ** 30, uncompressedSize: 2 ** 30 } } : e)),
      }),
      /past the end of the file/,
    ),
    invalid(
      'compression ratio of a zip bomb',
      torchZip(LORA_TENSORS, {
        edit: (es) => es.map((e) => (e.name === 'archive/data/1' ? { ...e, method: 8 as const, data: Buffer.alloc(1 << 20) } : e)),
      }),
      /compression ratio/,
    ),
    invalid(
      'nested zip in a storage entry',
      torchZip(LORA_TENSORS, { edit: (es) => es.map((e) => (e.name === 'archive/data/0' ? { ...e, data: benign } : e)) }),
      /nested zip/,
    ),
    invalid(
      'nested archive by name',
      torchZip(LORA_TENSORS, { extra: [{ name: 'archive/inner.zip', data: Buffer.from('x') }] }),
      /nested archive/,
    ),
    invalid('overlapping entries', overlappingZip(), /overlaps/),
    invalid('too many entries', tooManyEntries(), /too many entries/),
    invalid(
      'truncated central directory',
      makeZip([{ name: 'archive/data.pkl', data: stateDictPickle().pickle }], { cdSize: 200 }),
      /central directory is truncated/,
    ),
    invalid('file cut inside the central directory', benign.subarray(0, benign.length - 120), /end-of-central-directory/),
    invalid('PNG renamed .pt', png(), /end-of-central-directory|png/i),
    invalid('PNG renamed .pt, read as a pickle', png(), /opcode|png/i, 'pt-pickle'),
    invalid(
      'prefix bytes before the archive',
      torchZip(LORA_TENSORS, { zip: { prefix: Buffer.from('#!/bin/sh\nexit 0\n') } }),
      /prefix data|PyTorch/,
    ),
    invalid(
      'archive hidden in the comment',
      torchZip(LORA_TENSORS, { zip: { comment: makeZip([{ name: 'x/data.pkl', data: osSystemGlobal() }], { zip64: false }) } }),
      /hidden archive|comment/,
    ),
    invalid(
      'encrypted entry',
      torchZip(LORA_TENSORS, {
        edit: (es) => es.map((e) => (e.name === 'archive/version' ? { ...e, cd: { flags: 0x0809 }, local: { flags: 0x0809 } } : e)),
      }),
      /encrypted/,
    ),
    invalid(
      'symbolic link entry',
      torchZip(LORA_TENSORS, {
        edit: (es) =>
          es.map((e) => (e.name === 'archive/version' ? { ...e, cd: { madeBy: 0x0314, externalAttr: (0o120777 << 16) >>> 0 } } : e)),
      }),
      /symbolic link/,
    ),
    invalid(
      'local header names another file',
      torchZip(LORA_TENSORS, {
        edit: (es) => es.map((e) => (e.name === 'archive/version' ? { ...e, local: { name: 'archive/versioN' } } : e)),
      }),
      /different file/,
    ),
    invalid(
      'CRC mismatch in data.pkl',
      torchZip(LORA_TENSORS, {
        zip: { descriptor: false },
        edit: (es) => es.map((e) => (e.name === 'archive/data.pkl' ? { ...e, cd: { crc32: 1 }, local: { crc32: 1 } } : e)),
      }),
      /CRC-32 mismatch/,
    ),
    invalid(
      'data descriptor disagrees',
      torchZip(LORA_TENSORS, { edit: (es) => es.map((e) => (e.name === 'archive/version' ? { ...e, cd: { crc32: 7 } } : e)) }),
      /data descriptor differs/,
    ),
    invalid(
      'too many pickle entries',
      torchZip(LORA_TENSORS, { extra: [1, 2, 3, 4].map((i) => ({ name: `archive/p${i}.pkl`, data: new PickleWriter(2).none().stop() })) }),
      /5 pickle entries/,
    ),
    invalid(
      'unexpected entry',
      torchZip(LORA_TENSORS, { extra: [{ name: 'archive/readme.txt', data: Buffer.from('hi') }] }),
      /unexpected entry/,
    ),
    invalid(
      'second top-level folder',
      torchZip(LORA_TENSORS, { extra: [{ name: 'other/version', data: Buffer.from('3\n') }] }),
      /outside the archive's top folder/,
    ),
    invalid(
      'storage record missing',
      torchZip(LORA_TENSORS, { edit: (es) => es.filter((e) => e.name !== 'archive/data/1') }),
      /has no data\/1/,
    ),
    invalid(
      'storage record unreferenced',
      torchZip(LORA_TENSORS, { extra: [{ name: 'archive/data/9', data: tensorBytes(8) }] }),
      /not referenced/,
    ),
    invalid(
      'storage smaller than declared',
      torchZip(LORA_TENSORS, { edit: (es) => es.map((e) => (e.name === 'archive/data/1' ? { ...e, data: tensorBytes(16) } : e)) }),
      /holds 16 bytes but data\.pkl declares 2560/,
    ),
    invalid('storage folder renamed', torchZip(LORA_TENSORS, { edit: rename('archive/data/0', 'archive/tensors/0') }), /unexpected entry/),
    invalid(
      'bad byteorder record',
      torchZip(LORA_TENSORS, { edit: (es) => es.map((e) => (e.name === 'archive/byteorder' ? { ...e, data: Buffer.from('middle') } : e)) }),
      /unexpected content/,
    ),
    invalid('unknown opcode', zipWithData(Buffer.from([0x80, 0x02, 0xff, 0x2e])), /unknown opcode/),
    invalid('pickle without STOP', zipWithData(stateDictPickle().pickle.subarray(0, -1)), /no STOP/),
    invalid('bytes after STOP', zipWithData(Buffer.concat([stateDictPickle().pickle, Buffer.from('trailing')])), /after STOP/),
    invalid('stack underflow', zipWithData(new PickleWriter(2).op('TUPLE2').stop()), /stack underflow/),
    invalid(
      'absurd BINUNICODE8 length',
      zipWithData(Buffer.concat([Buffer.from([0x80, 0x04, 0x8d]), Buffer.from('ffffffffffffff7f', 'hex'), Buffer.from('.')])),
      /exceeds the input/,
    ),
    invalid('out-of-band buffer', zipWithData(new PickleWriter(5).op('NEXT_BUFFER').stop()), /out-of-band/),
    invalid(
      'legacy: wrong magic number',
      Buffer.concat([new PickleWriter(2).long(TORCH_MAGIC + 1n).stop(), benignLegacyPt().subarray(15)]),
      /magic number/,
      'pt-pickle',
    ),
    invalid('legacy: plain pickle of a dict', new PickleWriter(2).op('EMPTY_DICT').stop(), /magic number/, 'pt-pickle'),
    invalid('legacy: storage bytes cut short', benignLegacyPt().subarray(0, legacyLen - 10), /runs past the end of the file/, 'pt-pickle'),
    invalid(
      'legacy: extra bytes after the storages',
      Buffer.concat([benignLegacyPt(), Buffer.from('PK\x03\x04')]),
      /unexpected bytes after the last storage/,
      'pt-pickle',
    ),
    invalid('legacy: only the header pickles', benignLegacyPt().subarray(0, 40), /ends before|truncated|no STOP/, 'pt-pickle'),
  ];
}

/** Every malicious or broken .pt fixture (built once). */
export const BAD_PT_FILES: readonly BadPtFile[] = badFiles();
