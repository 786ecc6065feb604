/**
 * The pickle opcode table (protocols 0–5), as documented by CPython's Lib/pickletools.py: every
 * opcode byte with its name and the encoding of its inline argument. The scanner decodes
 * arguments from this table alone, so an opcode missing here is "unknown" and fails closed.
 */

/** How an opcode's inline argument is encoded (pickletools' ArgumentDescriptor, grouped by layout). */
export type ArgKind =
  | 'none'
  /** Unsigned little-endian integers of 1, 2, 4 or 8 bytes; `i4` is signed. */
  | 'u1'
  | 'u2'
  | 'u4'
  | 'i4'
  | 'u8'
  /** One newline-terminated line (decimalnl_*, floatnl, stringnl, unicodestringnl, stringnl_noescape). */
  | 'line'
  /** Two newline-terminated lines: module and name (stringnl_noescape_pair). */
  | 'line2'
  /** A byte count then that many bytes: count is u1, u4, signed i4, or u8. */
  | 'len1'
  | 'len4'
  | 'len4s'
  | 'len8';

export interface OpcodeInfo {
  name: string;
  arg: ArgKind;
  /** Protocol that introduced the opcode (informational). */
  proto: number;
}

const TABLE: [string, string, ArgKind, number][] = [
  // Integers
  ['I', 'INT', 'line', 0],
  ['J', 'BININT', 'i4', 1],
  ['K', 'BININT1', 'u1', 1],
  ['M', 'BININT2', 'u2', 1],
  ['L', 'LONG', 'line', 0],
  ['\x8a', 'LONG1', 'len1', 2],
  ['\x8b', 'LONG4', 'len4s', 2],
  // Byte strings (Python 2 str)
  ['S', 'STRING', 'line', 0],
  ['T', 'BINSTRING', 'len4s', 1],
  ['U', 'SHORT_BINSTRING', 'len1', 1],
  // Bytes and buffers
  ['B', 'BINBYTES', 'len4', 3],
  ['C', 'SHORT_BINBYTES', 'len1', 3],
  ['\x8e', 'BINBYTES8', 'len8', 4],
  ['\x96', 'BYTEARRAY8', 'len8', 5],
  ['\x97', 'NEXT_BUFFER', 'none', 5],
  ['\x98', 'READONLY_BUFFER', 'none', 5],
  // Constants
  ['N', 'NONE', 'none', 0],
  ['\x88', 'NEWTRUE', 'none', 2],
  ['\x89', 'NEWFALSE', 'none', 2],
  // Unicode strings
  ['V', 'UNICODE', 'line', 0],
  ['\x8c', 'SHORT_BINUNICODE', 'len1', 4],
  ['X', 'BINUNICODE', 'len4', 1],
  ['\x8d', 'BINUNICODE8', 'len8', 4],
  // Floats
  ['F', 'FLOAT', 'line', 0],
  ['G', 'BINFLOAT', 'u8', 1],
  // Lists, tuples, dicts, sets
  [']', 'EMPTY_LIST', 'none', 1],
  ['a', 'APPEND', 'none', 0],
  ['e', 'APPENDS', 'none', 1],
  ['l', 'LIST', 'none', 0],
  [')', 'EMPTY_TUPLE', 'none', 1],
  ['t', 'TUPLE', 'none', 0],
  ['\x85', 'TUPLE1', 'none', 2],
  ['\x86', 'TUPLE2', 'none', 2],
  ['\x87', 'TUPLE3', 'none', 2],
  ['}', 'EMPTY_DICT', 'none', 1],
  ['d', 'DICT', 'none', 0],
  ['s', 'SETITEM', 'none', 0],
  ['u', 'SETITEMS', 'none', 1],
  ['\x8f', 'EMPTY_SET', 'none', 4],
  ['\x90', 'ADDITEMS', 'none', 4],
  ['\x91', 'FROZENSET', 'none', 4],
  // Stack manipulation
  ['0', 'POP', 'none', 0],
  ['2', 'DUP', 'none', 0],
  ['(', 'MARK', 'none', 0],
  ['1', 'POP_MARK', 'none', 1],
  // Memo
  ['g', 'GET', 'line', 0],
  ['h', 'BINGET', 'u1', 1],
  ['j', 'LONG_BINGET', 'u4', 1],
  ['p', 'PUT', 'line', 0],
  ['q', 'BINPUT', 'u1', 1],
  ['r', 'LONG_BINPUT', 'u4', 1],
  ['\x94', 'MEMOIZE', 'none', 4],
  // Extension registry (copyreg)
  ['\x82', 'EXT1', 'u1', 2],
  ['\x83', 'EXT2', 'u2', 2],
  ['\x84', 'EXT4', 'i4', 2],
  // Imports and calls
  ['c', 'GLOBAL', 'line2', 0],
  ['\x93', 'STACK_GLOBAL', 'none', 4],
  ['R', 'REDUCE', 'none', 0],
  ['b', 'BUILD', 'none', 0],
  ['i', 'INST', 'line2', 0],
  ['o', 'OBJ', 'none', 1],
  ['\x81', 'NEWOBJ', 'none', 2],
  ['\x92', 'NEWOBJ_EX', 'none', 4],
  // Machine control
  ['\x80', 'PROTO', 'u1', 2],
  ['.', 'STOP', 'none', 0],
  ['\x95', 'FRAME', 'u8', 4],
  // Persistent ids
  ['P', 'PERSID', 'line', 0],
  ['Q', 'BINPERSID', 'none', 1],
];

/** Opcode byte → description; `undefined` means an unknown opcode. */
export const OPCODES: ReadonlyMap<number, OpcodeInfo> = new Map(
  TABLE.map(([code, name, arg, proto]) => [code.charCodeAt(0), { name, arg, proto }] as const),
);

/** Opcode byte for a name (for writers and tests). Throws on an unknown name. */
export function opcodeByte(name: string): number {
  for (const [code, info] of OPCODES) if (info.name === name) return code;
  throw new Error(`unknown pickle opcode name ${name}`);
}

/** The highest pickle protocol a PROTO opcode may announce (CPython's HIGHEST_PROTOCOL). */
export const HIGHEST_PROTOCOL = 5;
