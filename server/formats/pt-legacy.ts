/**
 * Legacy torch files (torch.save with `_use_new_zipfile_serialization=False`, and every torch
 * before 1.6): five consecutive pickles — torch's magic number, the format version 1001, a
 * sys_info dict, the data, the list of storage keys — then, for each key in that order, the
 * storage's element count (int64 little-endian) and its raw bytes. Each pickle is scanned and
 * asserted safe before the next is read; the storage bytes must account for the rest of the file.
 */
import { InvalidFileError } from '../domain/errors.ts';
import { storageBytes } from './pickle-allowlist.ts';
import { assertSafeGlobals, type PickleScan, scanPickle } from './pickle-scan.ts';
import type { PtCheck } from './pt.ts';
import { type RandomAccessReader, readExact } from './zip-reader.ts';

const FORMAT = 'pt-pickle';
const MAGIC_NUMBER = 0x1950a86a20f9469cfc6cn;
const PROTOCOL_VERSION = 1001n;
const PICKLES = ['magic number', 'format version', 'sys_info', 'data', 'storage keys'] as const;
const fail = (reason: string) => new InvalidFileError(FORMAT, reason);

/** Validates a legacy torch file; see the module comment. `maxPickleBytes` bounds the pickles' total size. */
export async function checkLegacyPt(reader: RandomAccessReader, maxPickleBytes: number): Promise<PtCheck> {
  const head = await readExact(reader, 0, Math.min(reader.size, maxPickleBytes), 'file', FORMAT);
  const scans: PickleScan[] = [];
  let offset = 0;
  for (const [i, what] of PICKLES.entries()) {
    if (offset >= head.length)
      throw fail(head.length < reader.size ? `the pickles exceed ${maxPickleBytes} bytes` : `the file ends before the ${what} pickle`);
    const location = `<file> pickle ${i + 1}/${PICKLES.length} (${what})`;
    let scan: PickleScan;
    try {
      scan = scanPickle(head.subarray(offset), location, { format: FORMAT, trailing: 'allow' });
    } catch (err) {
      const cut = head.length < reader.size && err instanceof InvalidFileError && /truncated|no STOP/.test(err.reason);
      throw cut ? fail(`the pickles exceed ${maxPickleBytes} bytes`) : err;
    }
    assertSafeGlobals(scan, location);
    offset += scan.length;
    scans.push(scan);
    checkHeaderValue(i, scan);
  }
  const [, , , data, keys] = scans as [PickleScan, PickleScan, PickleScan, PickleScan, PickleScan];
  await checkStorageBytes(reader, data, keys, offset);
  return { pickles: scans.length, globals: [...new Set(scans.flatMap((s) => s.globals))], tensors: data.tensors };
}

function checkHeaderValue(index: number, scan: PickleScan): void {
  const v = scan.result;
  if (index === 0 && !(v.t === 'int' && v.v === MAGIC_NUMBER)) throw fail("not a torch file: the first pickle is not torch's magic number");
  if (index === 1 && !(v.t === 'int' && v.v === PROTOCOL_VERSION)) throw fail('unsupported legacy torch format version');
  if (index === 2 && v.t !== 'dict') throw fail('the sys_info pickle is not a dict');
  if (index === 4 && !(v.t === 'list' && v.items?.every((k) => k.t === 'str' && k.v !== null))) {
    throw fail('the storage-key pickle is not a list of strings');
  }
}

/** Storage records in key order: int64 element count, then count × element-size bytes, up to the end of the file. */
async function checkStorageBytes(reader: RandomAccessReader, data: PickleScan, keysScan: PickleScan, start: number): Promise<void> {
  const declared = new Map<string, number>();
  for (const ref of data.storages) {
    const bytes = storageBytes(ref, fail);
    const key = ref.key as string;
    if (declared.has(key) && declared.get(key) !== bytes) throw fail(`storage ${key} is referenced with different sizes`);
    declared.set(key, bytes);
  }
  const keys = keysScan.result.t === 'list' ? (keysScan.result.items ?? []).map((k) => (k.t === 'str' ? k.v : null)) : [];
  if (new Set(keys).size !== keys.length) throw fail('the storage-key list repeats a key');
  if (keys.length !== declared.size) throw fail('the storage-key list does not match the storages the data pickle references');
  let pos = start;
  for (const key of keys) {
    const bytes = key === null ? undefined : declared.get(key);
    if (bytes === undefined) throw fail(`storage key ${JSON.stringify(key)} is not referenced by the data pickle`);
    const header = await readExact(reader, pos, 8, `storage ${key}`, FORMAT);
    const count = header.readBigInt64LE(0);
    const element = data.storages.find((s) => s.key === key)?.numel ?? -1;
    if (count !== BigInt(element)) throw fail(`storage ${key} holds ${count} elements but the data pickle declares ${element}`);
    pos += 8 + bytes;
    if (pos > reader.size) throw fail(`storage ${key} runs past the end of the file`);
  }
  if (pos !== reader.size) throw fail(`${reader.size - pos} unexpected bytes after the last storage`);
}
