/**
 * The part of the pickle scanner that is about bytes and shapes, not imports: reading opcode
 * arguments (with protocol-4 frames), the abstract stack with its marks, the memo, and the
 * opcodes that only build values (constants, strings, containers, stack and memo operations).
 * Mirrors CPython's unpickler in stack shape exactly; executes nothing. See pickle-scan.ts.
 */
import type { OpcodeInfo } from './pickle-opcodes.ts';

/** Work and memory bounds; each is far above what a real state dict needs. */
export const PICKLE_LIMITS = {
  maxOpcodes: 2_000_000,
  maxMemoEntries: 1_000_000,
  maxMemoIndex: 16_777_215,
  /** Values on the stack and under all marks together. */
  maxStack: 1_000_000,
  maxMarks: 100_000,
  maxDistinctImports: 1_000,
  /** Strings longer than this are tracked as "some string" (they can't be a module or name we allow). */
  maxTrackedString: 1_024,
  /** Items remembered per list (storage-key lists); longer lists are tracked as "some list". */
  maxTrackedListItems: 100_000,
  maxFindings: 100,
} as const;

/** What the scanner knows about a value. Containers are shallow: nested containers become `obj`. */
export type PickleValue =
  | { readonly t: 'str'; readonly v: string | null }
  | { readonly t: 'int'; readonly v: bigint | null }
  | { readonly t: 'import'; readonly name: string }
  | { readonly t: 'tuple'; readonly items: readonly PickleValue[] | null }
  | { t: 'list'; items: PickleValue[] | null }
  | { readonly t: 'dict' }
  | { readonly t: 'obj' };

export const OBJ: PickleValue = { t: 'obj' };
export const DICT: PickleValue = { t: 'dict' };
const DECIMAL = /^[-+]?[0-9]+$/;
const FLOAT = /^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?$|^[-+]?(?:inf|infinity|nan)$/i;

/** Stack machine state and the value-only opcodes; the subclass handles imports, calls and STOP. */
export abstract class PickleMachine {
  protected pos = 0;
  protected frameEnd = -1;
  protected opStart = 0;
  protected op: OpcodeInfo = { name: '?', arg: 'none', proto: 0 };
  protected stack: PickleValue[] = [];
  protected readonly meta: PickleValue[][] = [];
  protected total = 0;
  protected readonly memo = new Map<number, PickleValue>();
  private listItems = 0;

  constructor(protected readonly buf: Buffer) {}

  /** The error to throw for `reason` (the subclass decides INVALID vs UNSAFE). */
  abstract failure(reason: string): Error;

  // ---- reading -------------------------------------------------------------------------------

  /** Bytes available to the current read: up to the end of the current frame, or of the input. */
  protected need(n: number): number {
    const limit = this.frameEnd > this.pos ? this.frameEnd : this.buf.length;
    if (this.pos + n > limit) {
      throw this.failure(
        this.pos + n > this.buf.length
          ? `truncated: needs ${n} bytes, ${this.buf.length - this.pos} left`
          : 'argument crosses a frame boundary',
      );
    }
    const at = this.pos;
    this.pos += n;
    return at;
  }

  /** A newline-terminated argument; returns the offset of its first byte and its length without the newline. */
  protected readLineAt(): [number, number] {
    const nl = this.buf.indexOf(0x0a, this.pos);
    if (nl < 0) throw this.failure('truncated: line argument without newline');
    const start = this.need(nl + 1 - this.pos);
    return [start, nl - start];
  }

  protected readLine(): Buffer {
    const [start, len] = this.readLineAt();
    return this.buf.subarray(start, start + len);
  }

  protected readLength(kind: 'len1' | 'len4' | 'len4s' | 'len8'): number {
    if (kind === 'len1') return this.buf.readUInt8(this.need(1));
    if (kind === 'len4') return this.buf.readUInt32LE(this.need(4));
    if (kind === 'len4s') {
      const n = this.buf.readInt32LE(this.need(4));
      if (n < 0) throw this.failure(`negative length ${n}`);
      return n;
    }
    const n = this.buf.readBigUInt64LE(this.need(8));
    if (n > BigInt(this.buf.length)) throw this.failure(`length ${n} exceeds the input`);
    return Number(n);
  }

  protected str(start: number, len: number, encoding: 'utf8' | 'latin1'): PickleValue {
    if (len > PICKLE_LIMITS.maxTrackedString) return { t: 'str', v: null };
    return { t: 'str', v: this.buf.toString(encoding, start, start + len) };
  }

  // ---- stack ---------------------------------------------------------------------------------

  protected push(v: PickleValue): void {
    if (++this.total > PICKLE_LIMITS.maxStack) throw this.failure('stack too deep');
    this.stack.push(v);
  }

  protected pop(): PickleValue {
    const v = this.stack.pop();
    if (v === undefined) throw this.failure('stack underflow');
    this.total--;
    return v;
  }

  protected peek(): PickleValue {
    const v = this.stack[this.stack.length - 1];
    if (v === undefined) throw this.failure('stack underflow');
    return v;
  }

  protected popMark(): PickleValue[] {
    const items = this.stack;
    const below = this.meta.pop();
    if (below === undefined) throw this.failure('no MARK to pop to');
    this.stack = below;
    this.total -= items.length;
    return items;
  }

  protected memoPut(index: number): void {
    if (index > PICKLE_LIMITS.maxMemoIndex) throw this.failure(`memo index ${index} too large`);
    const v = this.peek();
    if (!this.memo.has(index) && this.memo.size >= PICKLE_LIMITS.maxMemoEntries) throw this.failure('memo too large');
    this.memo.set(index, v);
  }

  protected memoGet(index: number): void {
    const v = this.memo.get(index);
    if (v === undefined) throw this.failure(`memo key ${index} was never stored`);
    this.push(v);
  }

  protected memoIndexLine(): number {
    const text = this.readLine().toString('latin1');
    if (!/^[0-9]{1,9}$/.test(text)) throw this.failure('malformed memo index');
    return Number(text);
  }

  /** Opcodes that push a constant; returns false when `op` is not one of them. */
  protected data(op: OpcodeInfo): boolean {
    const b = this.buf;
    switch (op.name) {
      case 'NONE':
      case 'NEWTRUE':
      case 'NEWFALSE':
      case 'EMPTY_SET':
        this.push(OBJ);
        return true;
      case 'INT': {
        const text = this.readLine().toString('latin1');
        if (text === '00' || text === '01') this.push(OBJ);
        else if (DECIMAL.test(text)) this.push({ t: 'int', v: text.length <= 40 ? BigInt(text) : null });
        else throw this.failure('malformed INT');
        return true;
      }
      case 'LONG': {
        const text = this.readLine().toString('latin1').replace(/L$/, '');
        if (!DECIMAL.test(text)) throw this.failure('malformed LONG');
        this.push({ t: 'int', v: text.length <= 40 ? BigInt(text) : null });
        return true;
      }
      case 'BININT':
        this.push({ t: 'int', v: BigInt(b.readInt32LE(this.need(4))) });
        return true;
      case 'BININT1':
        this.push({ t: 'int', v: BigInt(b.readUInt8(this.need(1))) });
        return true;
      case 'BININT2':
        this.push({ t: 'int', v: BigInt(b.readUInt16LE(this.need(2))) });
        return true;
      case 'LONG1':
      case 'LONG4': {
        const len = this.readLength(op.arg === 'len1' ? 'len1' : 'len4s');
        const start = this.need(len);
        this.push({ t: 'int', v: len <= 16 ? signedLE(b.subarray(start, start + len)) : null });
        return true;
      }
      case 'FLOAT':
        if (!FLOAT.test(this.readLine().toString('latin1'))) throw this.failure('malformed FLOAT');
        this.push(OBJ);
        return true;
      case 'BINFLOAT':
        this.need(8);
        this.push(OBJ);
        return true;
      case 'STRING': {
        const [start, len] = this.readLineAt();
        const q = b[start];
        if (len < 2 || (q !== 0x22 && q !== 0x27) || b[start + len - 1] !== q) throw this.failure('STRING argument is not quoted');
        // The unpickler decodes escapes; only literal names matter to us, so an escaped string is "unknown".
        const escaped = b.subarray(start + 1, start + len - 1).includes(0x5c);
        this.push(escaped ? { t: 'str', v: null } : this.str(start + 1, len - 2, 'utf8'));
        return true;
      }
      case 'UNICODE': {
        const [start, len] = this.readLineAt();
        // raw-unicode-escape: bytes are Latin-1 code points; \u escapes make the value "unknown".
        const escaped = b.subarray(start, start + len).includes(0x5c);
        this.push(escaped ? { t: 'str', v: null } : this.str(start, len, 'latin1'));
        return true;
      }
      case 'BINSTRING':
      case 'SHORT_BINSTRING':
      case 'SHORT_BINUNICODE':
      case 'BINUNICODE':
      case 'BINUNICODE8': {
        // torch.load decodes Python 2 byte strings as UTF-8, like the Unicode opcodes.
        const len = this.readLength(op.arg as 'len1' | 'len4' | 'len4s' | 'len8');
        this.push(this.str(this.need(len), len, 'utf8'));
        return true;
      }
      case 'BINBYTES':
      case 'SHORT_BINBYTES':
      case 'BINBYTES8':
      case 'BYTEARRAY8':
        this.need(this.readLength(op.arg as 'len1' | 'len4' | 'len8'));
        this.push(OBJ);
        return true;
      case 'NEXT_BUFFER':
        throw this.failure('out-of-band buffers are not supported');
      case 'READONLY_BUFFER':
        this.peek();
        return true;
      default:
        return false;
    }
  }

  /** Containers, stack and memo opcodes; returns false when `op` is not one of them. */
  protected structure(op: OpcodeInfo): boolean {
    const b = this.buf;
    switch (op.name) {
      case 'EMPTY_LIST':
        this.push({ t: 'list', items: [] });
        return true;
      case 'EMPTY_TUPLE':
        this.push({ t: 'tuple', items: [] });
        return true;
      case 'EMPTY_DICT':
        this.push(DICT);
        return true;
      case 'APPEND':
        this.append([this.pop()]);
        return true;
      case 'APPENDS':
        this.append(this.popMark());
        return true;
      case 'LIST': {
        const list: PickleValue = { t: 'list', items: [] };
        this.listAdd(list, this.popMark());
        this.push(list);
        return true;
      }
      case 'TUPLE':
        this.push(tuple(this.popMark()));
        return true;
      case 'TUPLE1':
      case 'TUPLE2':
      case 'TUPLE3': {
        const n = Number(op.name.slice(-1));
        const items: PickleValue[] = [];
        for (let i = 0; i < n; i++) items.unshift(this.pop());
        this.push(tuple(items));
        return true;
      }
      case 'DICT':
        if (this.popMark().length % 2) throw this.failure('odd number of items for DICT');
        this.push(DICT);
        return true;
      case 'SETITEM':
        this.pop();
        this.pop();
        this.peek();
        return true;
      case 'SETITEMS':
        if (this.popMark().length % 2) throw this.failure('odd number of items for SETITEMS');
        this.peek();
        return true;
      case 'ADDITEMS':
        this.popMark();
        this.peek();
        return true;
      case 'FROZENSET':
        this.popMark();
        this.push(OBJ);
        return true;
      case 'POP':
        // Like CPython: POP on an empty stack above a mark discards the mark.
        if (this.stack.length > 0) this.pop();
        else this.popMark();
        return true;
      case 'DUP':
        this.push(this.peek());
        return true;
      case 'MARK':
        if (this.meta.length >= PICKLE_LIMITS.maxMarks) throw this.failure('too many nested MARKs');
        this.meta.push(this.stack);
        this.stack = [];
        return true;
      case 'POP_MARK':
        this.popMark();
        return true;
      case 'GET':
        this.memoGet(this.memoIndexLine());
        return true;
      case 'BINGET':
        this.memoGet(b.readUInt8(this.need(1)));
        return true;
      case 'LONG_BINGET':
        this.memoGet(b.readUInt32LE(this.need(4)));
        return true;
      case 'PUT':
        this.memoPut(this.memoIndexLine());
        return true;
      case 'BINPUT':
        this.memoPut(b.readUInt8(this.need(1)));
        return true;
      case 'LONG_BINPUT':
        this.memoPut(b.readUInt32LE(this.need(4)));
        return true;
      case 'MEMOIZE':
        this.memoPut(this.memo.size);
        return true;
      default:
        return false;
    }
  }

  private append(items: PickleValue[]): void {
    const target = this.peek();
    if (target.t === 'list') this.listAdd(target, items);
  }

  private listAdd(list: PickleValue, items: PickleValue[]): void {
    if (list.t !== 'list' || list.items === null) return;
    this.listItems += items.length;
    if (this.listItems > PICKLE_LIMITS.maxTrackedListItems) list.items = null;
    else for (const v of items) list.items.push(v.t === 'str' || v.t === 'int' ? v : OBJ);
  }
}

function tuple(items: PickleValue[]): PickleValue {
  if (items.length > 8) return { t: 'tuple', items: null };
  return { t: 'tuple', items: items.map((v) => (v.t === 'tuple' || v.t === 'list' ? OBJ : v)) };
}

/** Little-endian two's-complement integer (pickle's LONG1/LONG4 encoding). */
function signedLE(bytes: Buffer): bigint {
  let v = 0n;
  for (let i = bytes.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(bytes.readUInt8(i));
  const last = bytes.length ? bytes.readUInt8(bytes.length - 1) : 0;
  return last & 0x80 ? v - (1n << BigInt(8 * bytes.length)) : v;
}
