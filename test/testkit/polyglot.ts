/**
 * Safetensors/pickle polyglots (THREATS 28): files that are valid safetensors AND a pickle that
 * calls a global when unpickled (what `torch.load`'s legacy path does first). The 8-byte header
 * length doubles as the first pickle opcodes; an UNICODE (`V`) opcode's newline-terminated
 * argument swallows the rest of the prefix and the whole JSON header; the tensor data then holds
 * a newline and the payload. `python3 -c 'import pickle; pickle.load(…)'` runs the payload.
 */
import { PickleWriter } from './pickle-writer.ts';

/** The payload: `builtins.len('pwned')` (harmless, observable: unpickling returns 5). */
function payload(): Buffer {
  return new PickleWriter(0).global('builtins', 'len').mark().op('UNICODE', Buffer.from('pwned\n')).op('TUPLE').op('REDUCE').stop();
}

/**
 * A polyglot whose header length bytes are `prefix` (little-endian; the rest zero). `prefix` must
 * open a pickle whose last opcode is `V` so the argument runs on into the header.
 */
function polyglot(prefix: number[]): Buffer {
  const lengthBytes = Buffer.alloc(8);
  Buffer.from(prefix).copy(lengthBytes);
  const n = Number(lengthBytes.readBigUInt64LE(0));
  const data = Buffer.concat([Buffer.from('\n'), payload()]);
  const json = Buffer.from(JSON.stringify({ note: { dtype: 'U8', shape: [data.length], data_offsets: [0, data.length] } }));
  if (json.length > n) throw new Error(`header length ${n} is too small for ${json.length} bytes of JSON`);
  return Buffer.concat([lengthBytes, json, Buffer.alloc(n - json.length, 0x20), data]);
}

/**
 * No PROTO: the header length's low byte is `V` (0x56), N = 0x0156 = 342. No writer that pads
 * headers to 8 bytes produces it, but unpadded writers can: the format rules accept it, so only
 * the stored extension keeps it away from pickle loaders.
 */
export const unicodeLinePolyglot = (): Buffer => polyglot([0x56, 0x01]);

/** `PROTO 4` then `V`: N = 0x560480 (5.4 MiB header). Refused by the pickle-prologue rule. */
export const protoPolyglot = (): Buffer => polyglot([0x80, 0x04, 0x56]);
