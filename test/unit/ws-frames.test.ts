import type { IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket, { WebSocketServer } from 'ws';
import { sendFrame, textFrame } from '../../server/http/ws-frames.ts';

/**
 * The shared fan-out's prebuilt frames (server/http/ws-frames.ts, issue 16) on real sockets: what a
 * `ws` client receives from a frame written straight to the TCP socket is what `WebSocket.send`
 * would have delivered, at every length encoding (7-bit, 16-bit, 64-bit), in order with ws's own
 * frames; with permessage-deflate negotiated, or anything buffered, the frame goes through ws.
 */

interface Pair {
  server: WebSocket;
  wire: Duplex;
  client: WebSocket;
  received: string[];
  close(): Promise<void>;
}

const open: Pair[] = [];
afterEach(async () => {
  for (const pair of open.splice(0)) await pair.close();
});

async function pair(perMessageDeflate: boolean): Promise<Pair> {
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1', perMessageDeflate: perMessageDeflate ? { threshold: 0 } : false });
  await new Promise((resolve) => wss.once('listening', resolve));
  const accepted = new Promise<[WebSocket, IncomingMessage]>((resolve) => wss.once('connection', (ws, req) => resolve([ws, req])));
  const client = new WebSocket(`ws://127.0.0.1:${(wss.address() as AddressInfo).port}`, { perMessageDeflate });
  const received: string[] = [];
  client.on('message', (data, binary) => received.push(binary ? `binary:${data}` : String(data)));
  const [server, req] = await accepted;
  await new Promise((resolve) => (client.readyState === WebSocket.OPEN ? resolve(null) : client.once('open', resolve)));
  const result: Pair = {
    server,
    wire: req.socket,
    client,
    received,
    close: async () => {
      client.terminate();
      for (const ws of wss.clients) ws.terminate();
      await new Promise((resolve) => wss.close(resolve));
    },
  };
  open.push(result);
  return result;
}

async function until(check: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Bodies around each length-encoding boundary, with multi-byte UTF-8 in them. */
const SIZES = [0, 1, 125, 126, 127, 1000, 65535, 65536, 70_000];
const body = (size: number, tag: string) => {
  const head = `{"id":"${tag}","é":"`;
  return head + 'x'.repeat(Math.max(0, size - Buffer.byteLength(head) - 2)) + '"}';
};

describe('prebuilt WebSocket text frames', () => {
  it('a frame written straight to the socket reaches a ws client as the same text ws.send delivers, at every length encoding, in order with ws frames', async () => {
    const p = await pair(false);
    const expected: string[] = [];
    for (const size of SIZES) {
      const text = body(size, `s${size}`);
      const [first, rest] = [text.slice(0, 3), text.slice(3)];
      const frame = textFrame([Buffer.from(first), Buffer.from(rest)]);
      expect(frame.body.toString()).toBe(text);
      p.server.send(`ws:${size}`); // ws's own frame before and after: neither may be overtaken or split
      expect(sendFrame(p.server, p.wire, frame)).toBe(true);
      p.server.send(`ws-after:${size}`);
      expected.push(`ws:${size}`, text, `ws-after:${size}`);
    }
    await until(() => p.received.length >= expected.length, 'all messages');
    expect(p.received).toEqual(expected);
    expect(p.client.readyState).toBe(WebSocket.OPEN); // no protocol error closed it
  });

  it('with permessage-deflate negotiated the frame goes through ws (compressed) and arrives as the same text', async () => {
    const p = await pair(true);
    expect(p.server.extensions).toContain('permessage-deflate');
    const texts = [body(200, 'a'), body(70_000, 'b')];
    for (const text of texts) expect(sendFrame(p.server, p.wire, textFrame([Buffer.from(text)]))).toBe(false);
    await until(() => p.received.length >= texts.length, 'both messages');
    expect(p.received).toEqual(texts);
  });

  it('while ws has bytes buffered for a socket (a slow reader) the frame queues behind them through ws; the order holds', async () => {
    const p = await pair(false);
    p.client.pause(); // the client stops reading: the server's socket buffers fill
    const big = 'y'.repeat(1 << 20);
    let sent = 0;
    while (p.server.bufferedAmount === 0 && sent < 64) {
      p.server.send(`${sent}:${big}`);
      sent++;
    }
    expect(p.server.bufferedAmount).toBeGreaterThan(0);
    const text = body(300, 'late');
    expect(sendFrame(p.server, p.wire, textFrame([Buffer.from(text)]))).toBe(false);
    p.client.resume();
    await until(() => p.received.length >= sent + 1, 'every message');
    expect(p.received.at(-1)).toBe(text);
    expect(p.received.slice(0, sent).map((m) => Number(m.slice(0, m.indexOf(':'))))).toEqual([...Array(sent).keys()]);
  });

  it('a closing socket gets nothing written straight to it', async () => {
    const p = await pair(false);
    p.server.close(1000, 'bye');
    expect(sendFrame(p.server, p.wire, textFrame([Buffer.from('{}')]))).toBe(false); // ws drops (and reports) a send after close
    await new Promise((resolve) => p.client.once('close', resolve));
    expect(p.received).toEqual([]);
  });
});
