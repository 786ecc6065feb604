/**
 * What a LoRA's pickle may import. Modelled on `torch.load(weights_only=True)`
 * (torch/_weights_only_unpickler.py, `_get_allowed_globals`) but narrower: only what a state dict
 * of plain tensors needs. Everything we accept is also accepted by torch's weights-only loader, so
 * a consumer on either loader sees the same file as safe.
 *
 * Entries are exact (module, name) pairs. A protocol-4 import of a dotted attribute path
 * (`torch` + `_utils._rebuild_tensor_v2`) is never allowed, even when the joined string matches.
 *
 * Deliberately NOT allowed although torch's weights-only loader accepts them:
 * - `torch._utils._rebuild_qtensor` and the `torch.per_*` qschemes: quantized tensors are not LoRA weights.
 * - `_rebuild_sparse_tensor`, `_rebuild_meta_tensor_no_storage`, `_rebuild_wrapper_subclass`,
 *   `_rebuild_device_tensor_from_numpy/_cpu_tensor`, `torch.serialization._get_layout`: sparse, meta,
 *   subclass and numpy/device tensors are not LoRA weights.
 * - `torch._tensor._rebuild_from_type_v2`, `torch.Tensor`, `torch.nn.parameter.Parameter`, the legacy
 *   `torch.*Tensor` classes: they take a class as an argument (tensor subclasses, tensors carrying
 *   Python attributes); a plain tensor or Parameter never needs them.
 * - `collections.Counter`: never part of a state dict.
 * - `builtins.bytearray`: see below.
 * Also not allowed (and not allowed by torch either): `builtins.frozenset`, `builtins.slice`,
 * `builtins.getattr/eval/exec/__import__`, `functools.partial`, anything from os/posix/nt/sys/subprocess.
 */

/** Legacy typed storage classes (`torch.HalfStorage`, …) with their element size in bytes. */
export const STORAGE_ELEMENT_SIZE: Readonly<Record<string, number>> = {
  'torch.DoubleStorage': 8,
  'torch.FloatStorage': 4,
  'torch.HalfStorage': 2,
  'torch.BFloat16Storage': 2,
  'torch.LongStorage': 8,
  'torch.IntStorage': 4,
  'torch.ShortStorage': 2,
  'torch.CharStorage': 1,
  'torch.ByteStorage': 1,
  'torch.BoolStorage': 1,
  'torch.ComplexFloatStorage': 8,
  'torch.ComplexDoubleStorage': 16,
  'torch.QUInt8Storage': 1,
  'torch.QInt8Storage': 1,
  'torch.QInt32Storage': 4,
  'torch.QUInt4x2Storage': 1,
  'torch.QUInt2x4Storage': 1,
  // Untyped (byte) storage: torch ≥ 2 uses it with _rebuild_tensor_v3 for dtypes that have no legacy class.
  'torch.UntypedStorage': 1,
  'torch.storage.UntypedStorage': 1,
};

/** Functions that rebuild one tensor from a storage; each call counts as a tensor. */
export const TENSOR_REBUILDS: ReadonlySet<string> = new Set([
  // Current format (torch ≥ 1.0): storage, offset, size, stride, requires_grad, hooks[, metadata].
  'torch._utils._rebuild_tensor_v2',
  // torch ≥ 2.x, for dtypes without a legacy storage class (uint16, float8, …).
  'torch._utils._rebuild_tensor_v3',
  // Older files (torch 0.4): storage, offset, size, stride.
  'torch._utils._rebuild_tensor',
]);

/** Every torch dtype by its canonical name; a dtype pickles as `torch.<name>` and is an inert constant. */
const DTYPES = [
  'float32',
  'float64',
  'float16',
  'bfloat16',
  'complex32',
  'complex64',
  'complex128',
  'uint8',
  'uint16',
  'uint32',
  'uint64',
  'int8',
  'int16',
  'int32',
  'int64',
  'bool',
  'qint8',
  'quint8',
  'qint32',
  'quint4x2',
  'quint2x4',
  'float8_e5m2',
  'float8_e4m3fn',
  'float8_e5m2fnuz',
  'float8_e4m3fnuz',
  'float8_e8m0fnu',
  'float4_e2m1fn_x2',
  'bits1x8',
  'bits2x4',
  'bits4x2',
  'bits8',
  'bits16',
  ...[1, 2, 3, 4, 5, 6, 7].flatMap((n) => [`uint${n}`, `int${n}`]),
];

/** Allowed imports with the reason each one is here. */
export const ALLOWED_GLOBALS: ReadonlyMap<string, string> = new Map<string, string>([
  ['collections.OrderedDict', 'the state_dict container (and the empty backward-hooks dict of every tensor)'],
  ...[...TENSOR_REBUILDS].map((g): [string, string] => [g, 'rebuilds a tensor from a storage it does not own']),
  ['torch._utils._rebuild_parameter', 'wraps a rebuilt tensor as nn.Parameter (state dicts saved from modules)'],
  [
    'torch._utils._rebuild_parameter_with_state',
    'nn.Parameter carrying Python attributes; state goes through setattr on the Parameter only',
  ],
  ...Object.keys(STORAGE_ELEMENT_SIZE).map((g): [string, string] => [
    g,
    'storage type token in a persistent id; never called by the loader',
  ]),
  ...DTYPES.map((d): [string, string] => [`torch.${d}`, 'dtype constant']),
  ['torch.Size', 'tuple subclass for shapes'],
  ['torch.device', 'device constant built from a string'],
  // Protocol ≤ 2 (torch.save's default) writes a Python 3 `bytes` value as _codecs.encode(str, 'latin1')
  // through REDUCE; the call only transcodes a string. torch's weights-only loader allows it for that reason.
  ['_codecs.encode', 'how protocol 2 pickles a bytes value'],
  // Protocols ≤ 3 write a set, and every protocol a complex, through REDUCE on the builtin type; both
  // only build data from data. torch also allows builtins.bytearray, which we do not: bytearray(n) with
  // a huge n from the pickle zero-fills n bytes in the loader (memory DoS), and a LoRA never holds one.
  // frozenset and slice torch does not allow either.
  ['builtins.set', 'how protocols ≤ 3 pickle a set'],
  ['builtins.complex', 'how pickle stores a complex number'],
]);

/**
 * The allowed imports a pickle may also CALL (REDUCE, NEWOBJ, OBJ, INST). Storage classes and dtypes
 * are tokens: torch.save only passes them as arguments, and calling one (torch.HalfStorage(10**12))
 * would allocate in a loader that unpickles fully. A call on any other allowed import is a finding.
 */
export const ALLOWED_CALLS: ReadonlySet<string> = new Set([
  'collections.OrderedDict',
  ...TENSOR_REBUILDS,
  'torch._utils._rebuild_parameter',
  'torch._utils._rebuild_parameter_with_state',
  'torch.Size',
  'torch.device',
  '_codecs.encode',
  'builtins.set',
  'builtins.complex',
]);

/**
 * Python 2 names that a protocol < 3 pickle uses for Python 3 ones (CPython's
 * `_compat_pickle`, the entries for the two modules that matter here); applied exactly as the
 * unpickler applies them, so reports name what would really be imported.
 */
export const PY2_MODULES: Readonly<Record<string, string>> = { __builtin__: 'builtins', copy_reg: 'copyreg' };
export const PY2_NAMES: Readonly<Record<string, [string, string]>> = {
  '__builtin__.xrange': ['builtins', 'range'],
  '__builtin__.reduce': ['functools', 'reduce'],
  '__builtin__.intern': ['sys', 'intern'],
  '__builtin__.unichr': ['builtins', 'chr'],
  '__builtin__.unicode': ['builtins', 'str'],
  '__builtin__.long': ['builtins', 'int'],
  '__builtin__.basestring': ['builtins', 'str'],
};

/** Whether an import of `name` from `module` is allowed. */
export function isAllowedImport(module: string, name: string): boolean {
  return !name.includes('.') && ALLOWED_GLOBALS.has(`${module}.${name}`);
}

/** Bytes a storage reference declares (numel × element size); throws when it is not a literal storage reference. */
export function storageBytes(
  ref: { key: string | null; type: string | null; numel: number | null },
  failWith: (reason: string) => Error,
): number {
  if (ref.key === null || ref.type === null || ref.numel === null) {
    throw failWith("a persistent id is not a literal ('storage', type, key, location, numel) reference");
  }
  const element = STORAGE_ELEMENT_SIZE[ref.type];
  if (element === undefined) throw failWith(`storage ${JSON.stringify(ref.key)} has type ${ref.type}, which is not a storage class`);
  const size = ref.numel * element;
  if (!Number.isSafeInteger(size)) throw failWith(`storage ${JSON.stringify(ref.key)} declares an absurd size`);
  return size;
}
