import type { Duplex } from 'node:stream';
import { WebSocket } from 'ws';

/**
 * WebSocket text frames built once and written as they are (RFC 6455 §5.2): the shared fan-out
 * (shared-fanout.ts) writes the same bytes to many sockets, so the frame header is computed once
 * per message instead of once per socket by ws's Sender, and each socket gets one write.
 *
 * A server's frames are unmasked, so a frame depends only on its payload; these are final (FIN),
 * uncompressed text frames, exactly what ws sends for `send(text)` on a socket without
 * permessage-deflate.
 */

export interface TextFrame {
  /** Header and body: the bytes on the wire. */
  readonly bytes: Buffer;
  /** The body alone (a view into `bytes`), for `WebSocket.send` when the frame cannot be written as is. */
  readonly body: Buffer;
}

const FIN_TEXT = 0x81;

/** One text frame whose body is `parts` concatenated (valid UTF-8 each). */
export function textFrame(parts: readonly Buffer[]): TextFrame {
  let length = 0;
  for (const part of parts) length += part.length;
  const header = length < 126 ? 2 : length < 0x10000 ? 4 : 10;
  const bytes = Buffer.allocUnsafe(header + length);
  bytes[0] = FIN_TEXT;
  if (header === 2) bytes[1] = length;
  else if (header === 4) {
    bytes[1] = 126;
    bytes.writeUInt16BE(length, 2);
  } else {
    bytes[1] = 127;
    bytes.writeBigUInt64BE(BigInt(length), 2);
  }
  let at = header;
  for (const part of parts) at += part.copy(bytes, at);
  return { bytes, body: bytes.subarray(header) };
}

/**
 * Sends `frame` on `socket`: straight to its TCP socket (`wire`, the upgrade request's socket) when
 * ws would put exactly these bytes there now — open, no extension negotiated (permessage-deflate
 * would compress), nothing buffered in ws or in the socket (so no frame of ws's can be overtaken
 * or split) — else through `socket.send` like any other message. True when written directly.
 */
export function sendFrame(socket: WebSocket, wire: Duplex | undefined, frame: TextFrame): boolean {
  if (wire && socket.readyState === WebSocket.OPEN && socket.extensions === '' && socket.bufferedAmount === 0 && wire.writable) {
    wire.write(frame.bytes);
    return true;
  }
  socket.send(frame.body, TEXT);
  return false;
}

const TEXT = { binary: false } as const;
