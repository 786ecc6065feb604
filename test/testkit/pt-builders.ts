/**
 * Builds .pt files the way torch.save writes them (protocol 2 pickles, memoized like CPython's
 * pickler): a state dict OrderedDict whose values are `_rebuild_tensor_v2` calls on persistent
 * storages, in the torch zip layout or in the legacy sequence-of-pickles layout.
 */
import { PickleWriter } from './pickle-writer.ts';
import { makeZip, type ZipEntrySpec, type ZipOptions } from './zip-writer.ts';

export type PtDtype = 'F16' | 'F32' | 'BF16';
export interface PtTensor {
  name: string;
  shape: number[];
  dtype?: PtDtype;
}

const STORAGE: Record<PtDtype, [string, number]> = { F16: ['HalfStorage', 2], F32: ['FloatStorage', 4], BF16: ['BFloat16Storage', 2] };

/** A small rank-4 LoRA: one down/up pair and its alpha. */
export const LORA_TENSORS: PtTensor[] = [
  { name: 'lora_unet_down_blocks_0_attentions_0_proj_in.alpha', shape: [], dtype: 'F32' },
  { name: 'lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight', shape: [4, 320] },
  { name: 'lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight', shape: [320, 4] },
];

export interface Storage {
  key: string;
  numel: number;
  bytes: Buffer;
}

export interface StateDictOptions {
  /** Pickle protocol (torch.save's default is 2). */
  protocol?: number;
  /** Legacy persistent ids carry a sixth item (view metadata) and keys look like ids. */
  legacy?: boolean;
  /** Set `_metadata` on the OrderedDict with BUILD, as module.state_dict() does. */
  withMetadata?: boolean;
}

/** The data pickle of torch.save(state_dict) and the storages it references. */
export function stateDictPickle(tensors: PtTensor[] = LORA_TENSORS, opts: StateDictOptions = {}): { pickle: Buffer; storages: Storage[] } {
  const w = new PickleWriter(opts.protocol ?? 2);
  const storages: Storage[] = [];
  const memo = new Map<string, number>();
  const once = (key: string, emit: () => void) => {
    const at = memo.get(key);
    if (at !== undefined) w.get(at);
    else {
      emit();
      w.put();
      memo.set(key, w.lastPut);
    }
  };
  once('OrderedDict', () => w.global('collections', 'OrderedDict'));
  w.op('EMPTY_TUPLE').op('REDUCE').put();
  w.mark();
  tensors.forEach((t, i) => {
    const [cls, size] = STORAGE[t.dtype ?? 'F16'];
    const numel = t.shape.reduce((a, b) => a * b, 1);
    const key = opts.legacy ? String(94_000_000_000_000 + i * 64) : String(i);
    storages.push({ key, numel, bytes: tensorBytes(numel * size, i) });
    w.str(t.name).put();
    once('rebuild', () => w.global('torch._utils', '_rebuild_tensor_v2'));
    w.mark();
    w.mark();
    once('storage', () => w.str('storage'));
    once(cls, () => w.global('torch', cls));
    w.str(key).put();
    once('cpu', () => w.str('cpu'));
    w.int(numel);
    if (opts.legacy) w.none();
    w.op('TUPLE').put();
    w.op('BINPERSID').put();
    w.int(0);
    const stride = t.shape.map((_, d) => t.shape.slice(d + 1).reduce((a, b) => a * b, 1));
    w.tuple(t.shape.length, () => {
      for (const n of t.shape) w.int(n);
    }).put();
    w.tuple(stride.length, () => {
      for (const n of stride) w.int(n);
    }).put();
    w.bool(false);
    once('OrderedDict', () => {});
    w.op('EMPTY_TUPLE').op('REDUCE').put();
    w.op('TUPLE').put();
    w.op('REDUCE').put();
  });
  w.op('SETITEMS');
  if (opts.withMetadata) {
    w.op('EMPTY_DICT').put().str('_metadata').put();
    once('OrderedDict', () => {});
    w.op('EMPTY_TUPLE').op('REDUCE').put().op('SETITEM').op('BUILD');
  }
  return { pickle: opts.protocol && opts.protocol >= 4 ? w.stopFramed() : w.stop(), storages };
}

/** Deterministic tensor bytes that never start with a zip signature. */
export function tensorBytes(length: number, seed = 0): Buffer {
  const b = Buffer.alloc(length);
  for (let i = 0; i < length; i++) b[i] = (i * 31 + 7 + seed * 13) & 0xff;
  return b;
}

export interface TorchZipOptions extends StateDictOptions {
  folder?: string;
  /** Entries added after the standard ones. */
  extra?: ZipEntrySpec[];
  /** Rewrites the standard entries before writing (corruption hook). */
  edit?: (entries: ZipEntrySpec[]) => ZipEntrySpec[];
  zip?: ZipOptions;
  /** Replaces data.pkl. */
  dataPkl?: Buffer;
}

/** A torch ≥ 1.6 zip: X/data.pkl, X/byteorder, X/data/<key>…, X/version, X/.data/serialization_id. */
export function torchZip(tensors: PtTensor[] = LORA_TENSORS, opts: TorchZipOptions = {}): Buffer {
  const folder = opts.folder ?? 'archive';
  const { pickle, storages } = stateDictPickle(tensors, opts);
  let entries: ZipEntrySpec[] = [
    { name: `${folder}/data.pkl`, data: opts.dataPkl ?? pickle },
    { name: `${folder}/byteorder`, data: Buffer.from('little') },
    ...storages.map((s) => ({ name: `${folder}/data/${s.key}`, data: s.bytes })),
    { name: `${folder}/version`, data: Buffer.from('3\n') },
    { name: `${folder}/.data/serialization_id`, data: Buffer.from('1234567890123456789012345678901234567890') },
  ];
  if (opts.edit) entries = opts.edit(entries);
  return makeZip([...entries, ...(opts.extra ?? [])], opts.zip);
}

export const TORCH_MAGIC = 0x1950a86a20f9469cfc6cn;

/** The four pickles around the data in a legacy file: magic, version, sys_info, and a storage-key list. */
export function legacyHeader(): Buffer {
  const magic = new PickleWriter(2).long(TORCH_MAGIC).stop();
  const version = new PickleWriter(2).int(1001).stop();
  const w = new PickleWriter(2);
  w.op('EMPTY_DICT').put().mark();
  w.str('protocol_version').put().int(1001);
  w.str('little_endian').put().bool(true);
  w.str('type_sizes').put().op('EMPTY_DICT').put().mark();
  w.str('short').put().int(2).str('int').put().int(4).str('long').put().int(4);
  w.op('SETITEMS').op('SETITEMS');
  return Buffer.concat([magic, version, w.stop()]);
}

export function storageKeyList(keys: string[]): Buffer {
  const w = new PickleWriter(2);
  w.op('EMPTY_LIST').put().mark();
  for (const k of keys) w.str(k).put();
  return w.op('APPENDS').stop();
}

export interface LegacyOptions extends StateDictOptions {
  /** Replaces the data pickle (storages stay as the tensors declare). */
  dataPickle?: Buffer;
  /** Replaces the storage bytes after the pickles. */
  trailer?: Buffer;
}

/** A legacy torch file: magic, version, sys_info, data, keys pickles, then each storage as int64 numel + bytes. */
export function legacyPt(tensors: PtTensor[] = LORA_TENSORS, opts: LegacyOptions = {}): Buffer {
  const { pickle, storages } = stateDictPickle(tensors, { ...opts, legacy: true });
  const keys = [...storages].sort((a, b) => (a.key < b.key ? -1 : 1));
  const trailer =
    opts.trailer ??
    Buffer.concat(
      keys.flatMap((s) => {
        const n = Buffer.alloc(8);
        n.writeBigInt64LE(BigInt(s.numel));
        return [n, s.bytes];
      }),
    );
  return Buffer.concat([legacyHeader(), opts.dataPickle ?? pickle, storageKeyList(keys.map((s) => s.key)), trailer]);
}
