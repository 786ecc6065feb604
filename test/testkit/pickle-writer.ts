/**
 * A tiny pickle assembler: emits opcodes (and their arguments) in the encodings CPython's pickle
 * uses, so tests can build exactly the streams torch.save writes — and the malicious ones it
 * never would. No Python needed.
 */
import { opcodeByte } from '../../server/formats/pickle-opcodes.ts';

export class PickleWriter {
  private readonly parts: Buffer[] = [];
  private memo = 0;

  constructor(private readonly protocol = 2) {
    if (protocol >= 2) this.op('PROTO', u8(protocol));
  }

  /** Any opcode by name, with raw argument bytes. */
  op(name: string, arg: Buffer = Buffer.alloc(0)): this {
    this.parts.push(Buffer.from([opcodeByte(name)]), arg);
    return this;
  }

  raw(bytes: Buffer | string): this {
    this.parts.push(Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes, 'latin1'));
    return this;
  }

  /** GLOBAL: module and name as two text lines. */
  global(module: string, name: string): this {
    return this.op('GLOBAL', Buffer.from(`${module}\n${name}\n`, 'utf8'));
  }

  /** INST: like GLOBAL, then instantiates with the items above the last MARK. */
  inst(module: string, name: string): this {
    return this.op('INST', Buffer.from(`${module}\n${name}\n`, 'utf8'));
  }

  /** STACK_GLOBAL on two string literals pushed right before it. */
  stackGlobal(module: string, name: string): this {
    return this.str(module).str(name).op('STACK_GLOBAL');
  }

  /** A str: SHORT_BINUNICODE from protocol 4, BINUNICODE before. */
  str(s: string): this {
    const b = Buffer.from(s, 'utf8');
    if (this.protocol >= 4 && b.length < 256) return this.op('SHORT_BINUNICODE', Buffer.concat([u8(b.length), b]));
    return this.op('BINUNICODE', Buffer.concat([u32(b.length), b]));
  }

  int(n: number): this {
    if (n >= 0 && n < 256) return this.op('BININT1', u8(n));
    if (n >= 0 && n < 65536) return this.op('BININT2', Buffer.from([n & 0xff, n >> 8]));
    if (n >= -(2 ** 31) && n < 2 ** 31) {
      const b = Buffer.alloc(4);
      b.writeInt32LE(n);
      return this.op('BININT', b);
    }
    return this.long(BigInt(n));
  }

  /** LONG1: little-endian two's complement. */
  long(v: bigint): this {
    const bytes: number[] = [];
    let x = v;
    while (x !== 0n && x !== -1n) {
      bytes.push(Number(x & 0xffn));
      x >>= 8n;
    }
    const last = bytes[bytes.length - 1] ?? 0;
    if (v > 0n && last & 0x80) bytes.push(0);
    if (v < 0n && !(last & 0x80)) bytes.push(0xff);
    return this.op('LONG1', Buffer.from([bytes.length, ...bytes]));
  }

  bool(b: boolean): this {
    return this.op(b ? 'NEWTRUE' : 'NEWFALSE');
  }

  none(): this {
    return this.op('NONE');
  }

  mark(): this {
    return this.op('MARK');
  }

  /** A tuple of what the callback pushes (TUPLE1..3 when it pushes that many, else MARK … TUPLE). */
  tuple(count: number, push: (w: this) => void): this {
    if (count === 0) return this.op('EMPTY_TUPLE');
    if (count > 3) this.mark();
    push(this);
    return count > 3 ? this.op('TUPLE') : this.op(`TUPLE${count}`);
  }

  /** BINPUT with the next memo index; returns the writer (index via lastPut). */
  put(): this {
    const i = this.memo++;
    return i < 256 ? this.op('BINPUT', u8(i)) : this.op('LONG_BINPUT', u32(i));
  }

  get lastPut(): number {
    return this.memo - 1;
  }

  get(i: number): this {
    return i < 256 ? this.op('BINGET', u8(i)) : this.op('LONG_BINGET', u32(i));
  }

  stop(): Buffer {
    this.op('STOP');
    return Buffer.concat(this.parts);
  }

  /** Protocol 4+: the whole body after PROTO as one FRAME, as CPython frames small pickles. */
  stopFramed(): Buffer {
    this.op('STOP');
    const [proto, arg, ...body] = this.parts;
    const rest = Buffer.concat(body);
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(rest.length));
    return Buffer.concat([proto ?? Buffer.alloc(0), arg ?? Buffer.alloc(0), Buffer.from([opcodeByte('FRAME')]), len, rest]);
  }
}

function u8(n: number): Buffer {
  return Buffer.from([n]);
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
}
