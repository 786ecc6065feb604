/**
 * A static pickle scanner: walks the opcode stream of protocols 0–5 with an abstract stack and
 * memo, and NEVER executes or imports anything. It records every import (GLOBAL, STACK_GLOBAL,
 * INST) and the constructs that no allowlist can make safe, so the caller can decide whether
 * `torch.load` on the bytes would run anything outside the allowlist (pickle-allowlist.ts).
 *
 * The abstract stack mirrors CPython's unpickler exactly in shape (marks, memo, POP of a mark,
 * STOP), and tracks values only as far as a verdict needs: literal strings (to resolve
 * STACK_GLOBAL), small ints, imports, and shallow tuples/lists (persistent ids, storage keys).
 *
 * Fail closed: an unknown opcode, a truncated or absurd argument, stack or memo misuse, a missing
 * STOP, or exceeding a work bound is an InvalidFileError — unless the part already read
 * imports or does something outside the allowlist, in which case the verdict is UnsafeFileError
 * (a real unpickler would have run that import before tripping over the rest).
 */
import { InvalidFileError, UnsafeFileError, type UnsafeFinding } from '../domain/errors.ts';
import { ALLOWED_CALLS, ALLOWED_GLOBALS, isAllowedImport, PY2_MODULES, PY2_NAMES, TENSOR_REBUILDS } from './pickle-allowlist.ts';
import { DICT, OBJ, PICKLE_LIMITS, PickleMachine, type PickleValue } from './pickle-machine.ts';
import { HIGHEST_PROTOCOL, OPCODES, type OpcodeInfo } from './pickle-opcodes.ts';

export { PICKLE_LIMITS, type PickleValue } from './pickle-machine.ts';

export interface PickleImport {
  /** GLOBAL, STACK_GLOBAL or INST. */
  op: string;
  /** After the Python 2 → 3 renames the unpickler applies for protocols < 3. */
  module: string;
  name: string;
  /** Byte offset of the first occurrence. */
  offset: number;
}

/** A persistent id of the form ('storage', <storage type>, key, location, numel, …); null where not literal. */
export interface StorageRef {
  key: string | null;
  type: string | null;
  numel: number | null;
}

export interface PickleScan {
  /** Distinct imports as "module.name", in order of first appearance. */
  globals: string[];
  opcodeCount: number;
  /** Bytes consumed, up to and including STOP. */
  length: number;
  /** Protocol announced by PROTO (0 when absent). */
  protocol: number;
  imports: PickleImport[];
  /** Unsafe constructs no allowlist fixes (unresolvable import, extension codes, BUILD on a class, …). */
  findings: UnsafeFinding[];
  /** Calls of a tensor-rebuild function (pickle-allowlist.ts TENSOR_REBUILDS). */
  tensors: number;
  /** Distinct persistent ids (storages). */
  storages: StorageRef[];
  /** The value STOP returns, as far as it is known. */
  result: PickleValue;
}

export interface ScanOptions {
  /** `detectedFormat` of thrown InvalidFileFormatErrors (default "pickle"). */
  format?: string;
  /** Bytes after STOP: rejected (default; one pickle per entry) or allowed (legacy .pt: pickles in sequence). */
  trailing?: 'reject' | 'allow';
}

class Stop extends Error {}

/**
 * Scans one pickle starting at `bytes[0]`. `location` names it in errors and findings (archive
 * entry name, or "<file>"). Throws InvalidFileError for a stream it cannot fully parse (or
 * UnsafeFileError if the parsed part is already unsafe); never throws anything else.
 */
export function scanPickle(bytes: Buffer, location: string, options: ScanOptions = {}): PickleScan {
  const scanner = new Scanner(bytes, location, options);
  try {
    return scanner.run();
  } catch (err) {
    if (err instanceof InvalidFileError || err instanceof UnsafeFileError) throw err;
    // A bug in the scanner must still fail closed, and say so.
    throw scanner.failure(`scanner error (${err instanceof Error ? err.name : 'unknown'})`);
  }
}

/** The findings that make a scan unsafe: each import outside the allowlist, then the scan's own findings. */
export function unsafeFindings(scan: Pick<PickleScan, 'imports' | 'findings'>, location: string): UnsafeFinding[] {
  const out: UnsafeFinding[] = [];
  for (const imp of scan.imports) {
    if (isAllowedImport(imp.module, imp.name)) continue;
    const full = clip(`${imp.module}.${imp.name}`);
    const detail = imp.name.includes('.') ? `${full} (attribute path "${clip(imp.name)}" of module "${clip(imp.module)}")` : full;
    out.push({ kind: imp.op, detail, location });
  }
  for (const f of scan.findings) out.push({ ...f, location });
  return out;
}

/** Throws UnsafeFileError listing every import outside the allowlist and every unsafe construct. */
export function assertSafeGlobals(scan: PickleScan, location: string): void {
  const findings = unsafeFindings(scan, location);
  if (findings.length) throw new UnsafeFileError(findings);
}

function clip(s: string): string {
  return s.length > 200 ? `${s.slice(0, 200)}…` : s;
}

class Scanner extends PickleMachine {
  private readonly imports = new Map<string, PickleImport>();
  private readonly findings = new Map<string, UnsafeFinding>();
  private readonly storages = new Map<string, StorageRef>();
  private protocol = 0;
  private opcodeCount = 0;
  private tensors = 0;
  private result: PickleValue = OBJ;

  constructor(
    buf: Buffer,
    private readonly location: string,
    private readonly options: ScanOptions,
  ) {
    super(buf);
  }

  run(): PickleScan {
    if (this.buf.length === 0) throw this.failure('empty pickle');
    try {
      while (this.pos < this.buf.length) this.step();
      throw this.failure('no STOP opcode (truncated pickle)');
    } catch (err) {
      if (!(err instanceof Stop)) throw err;
    }
    if (this.pos < this.buf.length && this.options.trailing !== 'allow') {
      throw this.failure(`${this.buf.length - this.pos} bytes after STOP`);
    }
    const imports = [...this.imports.values()];
    return {
      globals: [...new Set(imports.map((i) => `${i.module}.${i.name}`))],
      opcodeCount: this.opcodeCount,
      length: this.pos,
      protocol: this.protocol,
      imports,
      findings: [...this.findings.values()],
      tensors: this.tensors,
      storages: [...this.storages.values()],
      result: this.result,
    };
  }

  /** The error for a stream we cannot parse: UnsafeFileError if what was read is already unsafe. */
  override failure(reason: string): InvalidFileError | UnsafeFileError {
    const where = `${this.location}: ${reason}${this.opcodeCount ? ` (${this.op.name} at byte ${this.opStart})` : ''}`;
    const seen = { imports: [...this.imports.values()], findings: [...this.findings.values()] };
    const unsafe = unsafeFindings(seen, this.location);
    if (unsafe.length) return new UnsafeFileError([...unsafe, { kind: 'parse-error', detail: where, location: this.location }]);
    return new InvalidFileError(this.options.format ?? 'pickle', where);
  }

  // ---- findings ------------------------------------------------------------------------------

  private addImport(module: string, name: string): PickleValue {
    let [m, n] = [module, name];
    if (this.protocol < 3) {
      const renamed = PY2_NAMES[`${m}.${n}`];
      if (renamed) [m, n] = renamed;
      else m = PY2_MODULES[m] ?? m;
    }
    const key = `${this.op.name}\0${m}\0${n}`;
    if (!this.imports.has(key)) {
      if (this.imports.size >= PICKLE_LIMITS.maxDistinctImports) throw this.failure('too many distinct imports');
      this.imports.set(key, { op: this.op.name, module: m, name: n, offset: this.opStart });
    }
    return { t: 'import', name: `${m}.${n}` };
  }

  private finding(detail: string): void {
    const key = `${this.op.name}\0${detail}`;
    if (this.findings.size < PICKLE_LIMITS.maxFindings && !this.findings.has(key)) {
      this.findings.set(key, { kind: this.op.name, detail, location: this.location });
    }
  }

  /** A call (REDUCE, NEWOBJ, OBJ, …) must call something imported, so the allowlist decides what runs. */
  private call(callee: PickleValue): PickleValue {
    if (callee.t !== 'import') {
      this.finding(`${this.op.name} calls a value that is not an import (a callable built at load time)`);
      return OBJ;
    }
    // Imports outside the allowlist are findings already; allowed tokens (storage types, dtypes) must not be called.
    if (ALLOWED_GLOBALS.has(callee.name) && !ALLOWED_CALLS.has(callee.name))
      this.finding(`calls ${callee.name}, which may only appear as a value`);
    if (TENSOR_REBUILDS.has(callee.name)) this.tensors++;
    return callee.name === 'collections.OrderedDict' ? DICT : OBJ;
  }

  private persistentId(pid: PickleValue): void {
    let ref: StorageRef = { key: null, type: null, numel: null };
    if (pid.t === 'tuple' && pid.items && pid.items.length >= 5) {
      const [tag, type, key, , numel] = pid.items;
      if (tag?.t === 'str' && tag.v === 'storage') {
        ref = {
          key: key?.t === 'str' ? key.v : null,
          type: type?.t === 'import' ? type.name : null,
          numel:
            numel?.t === 'int' && numel.v !== null && numel.v >= 0n && numel.v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(numel.v) : null,
        };
      }
    }
    const id = `${ref.key}\0${ref.type}\0${ref.numel}`;
    if (!this.storages.has(id)) {
      if (this.storages.size >= PICKLE_LIMITS.maxMemoEntries) throw this.failure('too many storages');
      this.storages.set(id, ref);
    }
  }

  // ---- the walk ------------------------------------------------------------------------------

  private step(): void {
    this.opStart = this.pos;
    const code = this.buf.readUInt8(this.need(1));
    const op = OPCODES.get(code);
    if (!op) {
      this.op = { name: `0x${code.toString(16).padStart(2, '0')}`, arg: 'none', proto: 0 };
      throw this.failure('unknown opcode');
    }
    this.op = op;
    if (++this.opcodeCount > PICKLE_LIMITS.maxOpcodes) throw this.failure('too many opcodes');
    switch (op.name) {
      case 'PROTO': {
        const proto = this.buf.readUInt8(this.need(1));
        if (this.opcodeCount !== 1) throw this.failure('PROTO is not the first opcode');
        if (proto > HIGHEST_PROTOCOL) throw this.failure(`unsupported protocol ${proto}`);
        this.protocol = proto;
        return;
      }
      case 'FRAME': {
        const len = this.readLength('len8');
        if (this.frameEnd > this.pos) throw this.failure('new frame before the end of the current frame');
        if (len > this.buf.length - this.pos) throw this.failure(`frame of ${len} bytes runs past the end`);
        this.frameEnd = this.pos + len;
        return;
      }
      case 'STOP': {
        if (this.meta.length > 0 || this.stack.length !== 1) throw this.failure('STOP with a stack that is not exactly one value');
        this.result = this.pop();
        throw new Stop();
      }
      default:
        if (!this.data(op) && !this.structure(op)) this.callsAndImports(op);
    }
  }

  /** Imports, calls, extension codes and persistent ids. */
  private callsAndImports(op: OpcodeInfo): void {
    const b = this.buf;
    switch (op.name) {
      case 'GLOBAL': {
        const module = this.readLine().toString('utf8');
        this.push(this.addImport(module, this.readLine().toString('utf8')));
        return;
      }
      case 'INST': {
        const module = this.readLine().toString('utf8');
        const cls = this.addImport(module, this.readLine().toString('utf8'));
        this.popMark();
        this.push(this.call(cls));
        return;
      }
      case 'STACK_GLOBAL': {
        const name = this.pop();
        const module = this.pop();
        if (module.t === 'str' && module.v !== null && name.t === 'str' && name.v !== null) {
          this.push(this.addImport(module.v, name.v));
        } else {
          this.finding('unresolved import: module or name is not a literal string');
          this.push(OBJ);
        }
        return;
      }
      case 'REDUCE': {
        this.pop();
        this.push(this.call(this.pop()));
        return;
      }
      case 'NEWOBJ':
      case 'NEWOBJ_EX': {
        if (op.name === 'NEWOBJ_EX') this.pop();
        this.pop();
        this.push(this.call(this.pop()));
        return;
      }
      case 'OBJ': {
        const [cls] = this.popMark();
        if (cls === undefined) throw this.failure('OBJ without a class');
        this.push(this.call(cls));
        return;
      }
      case 'BUILD': {
        this.pop();
        const target = this.peek();
        if (target.t === 'import') this.finding(`BUILD sets state on ${clip(target.name)} itself (a class or function, not an instance)`);
        return;
      }
      case 'EXT1':
      case 'EXT2':
      case 'EXT4': {
        const code =
          op.arg === 'u1' ? b.readUInt8(this.need(1)) : op.arg === 'u2' ? b.readUInt16LE(this.need(2)) : b.readInt32LE(this.need(4));
        this.finding(`import through the copyreg extension registry (code ${code})`);
        this.push(OBJ);
        return;
      }
      case 'PERSID':
        this.readLine();
        this.persistentId(OBJ);
        this.push(OBJ);
        return;
      case 'BINPERSID':
        this.persistentId(this.pop());
        this.push(OBJ);
        return;
      default:
        // Every opcode in the table is handled above; reaching here is a table/scanner mismatch.
        throw this.failure('opcode not handled');
    }
  }
}
