/**
 * One client process of `bench:events` (started by bench/events.ts, driven over IPC): a share of
 * the fleet's subscribers, each a WebSocket speaking graphql-transport-ws (connection_init with a
 * machine token, one `subscribe`, then `next` frames) over bench/events-socket.ts — a real socket
 * and handshake, frames read in place — because the graphql-ws client, and even `ws`, cost several
 * times the CPU per message, and 10,000 of them on 2 cores would measure the clients, not the
 * server. A `next` frame of the expected shape (`{"id":"1","type":"next","payload":{"data":
 * {"cacheEvents":{"type":…,"loraId":…,"userId":null,"at":…}}}}`, checked byte by byte) is read
 * in place without JSON.parse or strings (the `at` is decoded once per event); any other frame is
 * parsed in full and judged as before. Arrival times are
 * kept per (subscriber, event); on `report` the process answers with latency histograms (0.1 ms
 * bins) and the counts of lost, duplicated and unexpected frames.
 *
 * Messages in: open {wsUrl, secret, first, count, loraIds, query, binMs}, status, mark (CPU from here on), report {sentAt}, close.
 * Messages out: opened | failed {error}, status {minUpdates, deliveries}, marked, report {...}.
 */
import { performance } from 'node:perf_hooks';
import { signToken } from '../server/auth/tokens.ts';
import { ClientSocket } from './events-socket.ts';

interface Open {
  type: 'open';
  wsUrl: string;
  secret: string;
  first: number;
  count: number;
  loraIds: string[];
  query: string;
  binMs: number;
}

/** Latency histogram bin width, ms (set by `open`). */
let binMs = 0.1;

const wallNow = () => performance.timeOrigin + performance.now();
const send = (message: unknown) => process.send?.(message);

let sockets: ClientSocket[] = [];
let closing = false;
/** Per subscriber: LORA_UPDATED frames seen, and the arrival time of each event (NaN = not yet). */
const subscribers: { updates: number; arrivals: Float64Array }[] = [];
let index = new Map<string, number>();
/** The same by the id's value, when every id is a plain decimal number (the expected frames' fast path). */
let indexByValue: Map<number, number> | null = null;
let eventAt = new Float64Array(0);
let deliveries = 0;
let duplicates = 0;
let unexpected = 0;
const errors: string[] = [];
/** CPU use at the start of the measurement (`mark`). */
let cpu0 = process.cpuUsage();
const note = (message: string) => {
  if (errors.length < 5) errors.push(message);
};

/** Adds `count` subscribers (machines gpu-{first}…); may be sent again to add more. */
async function open(m: Open): Promise<void> {
  binMs = m.binMs;
  const events = m.loraIds.length;
  if (eventAt.length !== events) {
    index = new Map(m.loraIds.map((id, i) => [id, i]));
    indexByValue = m.loraIds.every((id) => /^[1-9][0-9]{0,14}$/.test(id)) ? new Map(m.loraIds.map((id, i) => [Number(id), i])) : null;
    eventAt = new Float64Array(events).fill(Number.NaN);
  }
  const BATCH = 100;
  for (let start = 0; start < m.count; start += BATCH) {
    await Promise.all(
      Array.from({ length: Math.min(BATCH, m.count - start) }, async (_, k) => {
        const machine = `gpu-${m.first + start + k}`;
        const mine = { updates: 0, arrivals: new Float64Array(events).fill(Number.NaN) };
        subscribers.push(mine);
        const token = await signToken(m.secret, { role: 'machine', sub: machine, machineId: machine });
        await connect(m.wsUrl, token, m.query, (data, start, end) => {
          const arrived = wallNow();
          if (scanExpected(data, start, end)) {
            if (scan.updated) {
              mine.updates++;
              return;
            }
            const i = indexByValue?.get(scan.id);
            if (i === undefined) unexpected++;
            else if (arrive(mine, i, arrived)) eventAt[i] = Date.parse(data.toString('latin1', scan.atStart, scan.atEnd));
            return;
          }
          const event = parsedEvent(machine, data.toString('utf8', start, end));
          if (!event) return;
          if (event.type === 'LORA_UPDATED') {
            mine.updates++;
            return;
          }
          const i = index.get(event.loraId);
          if (event.type !== 'LORA_DELETED' || i === undefined) unexpected++;
          else if (arrive(mine, i, arrived)) eventAt[i] = Date.parse(event.at);
        });
      }),
    );
  }
}

/**
 * Records subscriber `mine`'s arrival of event `i` (a second one is a duplicate); true when it is
 * the event's first arrival anywhere in this process (its `at` is then wanted).
 */
function arrive(mine: { arrivals: Float64Array }, i: number, arrived: number): boolean {
  if (!Number.isNaN(mine.arrivals[i] as number)) {
    duplicates++;
    return false;
  }
  mine.arrivals[i] = arrived;
  deliveries++;
  return Number.isNaN(eventAt[i] as number);
}

const bytes = (text: string) => Uint8Array.from(Buffer.from(text));
const NEXT = bytes('{"id":"1","type":"next","payload":{"data":{"cacheEvents":{"type":"');
const DELETED = bytes('LORA_DELETED","loraId":"');
const UPDATED = bytes('LORA_UPDATED","loraId":"');
const AT = bytes('","userId":null,"at":"');
const END = bytes('"}}}}');
const QUOTE = 0x22;

/** What scanExpected read (one frame at a time, so no object per frame). */
const scan = { updated: false, id: 0, atStart: 0, atEnd: 0 };

/** Whether data[at…end) starts with `expected` (a plain loop: no call into C++ per comparison). */
function starts(data: Buffer, at: number, end: number, expected: Uint8Array): boolean {
  if (end - at < expected.length) return false;
  for (let k = 0; k < expected.length; k++) if (data[at + k] !== expected[k]) return false;
  return true;
}

/**
 * Whether the frame data[start, end) is a `next` of exactly the expected shape — the server's JSON
 * of the benchmark's subscription for a LORA_DELETED or LORA_UPDATED of a numeric LoRA id, byte by
 * byte — read in place into `scan`. Anything else (false) is parsed in full by the caller.
 */
function scanExpected(data: Buffer, start: number, end: number): boolean {
  if (!indexByValue || !starts(data, start, end, NEXT)) return false;
  let at = start + NEXT.length;
  if (starts(data, at, end, DELETED)) scan.updated = false;
  else if (starts(data, at, end, UPDATED)) scan.updated = true;
  else return false;
  at += DELETED.length;
  let id = 0;
  const idStart = at;
  for (; at < end && data[at] !== QUOTE; at++) {
    const digit = (data[at] as number) - 0x30;
    if (digit < 0 || digit > 9) return false;
    id = id * 10 + digit;
  }
  if (at === idStart || at - idStart > 15 || !starts(data, at, end, AT)) return false;
  scan.id = id;
  scan.atStart = at + AT.length;
  at = scan.atStart;
  while (at < end && data[at] !== QUOTE) at++;
  scan.atEnd = at;
  return at + END.length === end && starts(data, at, end, END);
}

/** Any other frame, parsed in full: its event, or null (noted when it is not a `pong`). */
function parsedEvent(machine: string, text: string): { type: string; loraId: string; at: string } | null {
  const message = JSON.parse(text) as {
    type: string;
    payload?: { data?: { cacheEvents?: { type: string; loraId: string; at: string } }; errors?: unknown };
  };
  if (message.type !== 'next') {
    if (message.type !== 'pong') note(`subscriber ${machine}: ${text.slice(0, 200)}`);
    return null;
  }
  const event = message.payload?.data?.cacheEvents;
  if (!event) {
    note(JSON.stringify(message.payload?.errors));
    return null;
  }
  return event;
}

function connect(url: string, token: string, query: string, onMessage: (data: Buffer, start: number, end: number) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    let acknowledged = false;
    const socket = new ClientSocket(url, 'graphql-transport-ws', {
      onText: (data, start, end) => {
        if (acknowledged) return onMessage(data, start, end);
        const text = data.toString('utf8', start, end);
        if (!text.includes('"connection_ack"')) return reject(new Error(`expected connection_ack, got ${text.slice(0, 200)}`));
        acknowledged = true;
        socket.send(JSON.stringify({ id: '1', type: 'subscribe', payload: { query } }));
        resolve();
      },
      onError: (error) => (acknowledged ? note(error.message) : reject(error)),
      onClose: (code) => {
        if (!acknowledged) reject(new Error(`closed before connection_ack: ${code}`));
        else if (!closing) note(`a subscriber was closed by the server: ${code}`);
      },
    });
    sockets.push(socket);
    socket.opened.then(
      () => socket.send(JSON.stringify({ type: 'connection_init', payload: { authorization: `Bearer ${token}` } })),
      reject,
    );
  });
}

/** Sparse histogram [bin, count][] of the samples, in bins of binMs. */
function histogram(samples: Iterable<number>): [number, number][] {
  const bins = new Map<number, number>();
  for (const v of samples) {
    const bin = Math.max(0, Math.floor(v / binMs));
    bins.set(bin, (bins.get(bin) ?? 0) + 1);
  }
  return [...bins.entries()];
}

function report(sentAt: number[]): Record<string, unknown> {
  const fromAt: number[] = [];
  const fromSend: number[] = [];
  for (const { arrivals } of subscribers) {
    for (let i = 0; i < arrivals.length; i++) {
      const arrived = arrivals[i] as number;
      if (Number.isNaN(arrived)) continue;
      fromAt.push(arrived - (eventAt[i] as number));
      fromSend.push(arrived - (sentAt[i] as number));
    }
  }
  const usage = process.cpuUsage(cpu0);
  return {
    type: 'report',
    deliveries,
    duplicates,
    unexpected,
    errors,
    fromAt: histogram(fromAt),
    fromSend: histogram(fromSend),
    cpuSeconds: (usage.user + usage.system) / 1e6,
    userSeconds: usage.user / 1e6,
  };
}

process.on('message', (message: { type: string } & Record<string, unknown>) => {
  switch (message.type) {
    case 'open':
      open(message as unknown as Open).then(
        () => send({ type: 'opened' }),
        (error: Error) => send({ type: 'failed', error: error.message }),
      );
      return;
    case 'mark':
      cpu0 = process.cpuUsage();
      send({ type: 'marked' });
      return;
    case 'status': {
      let minUpdates = Number.POSITIVE_INFINITY;
      for (const { updates } of subscribers) minUpdates = Math.min(minUpdates, updates);
      send({ type: 'status', minUpdates, deliveries });
      return;
    }
    case 'report':
      send(report(message.sentAt as number[]));
      return;
    case 'close':
      closing = true;
      for (const socket of sockets) socket.terminate();
      sockets = [];
      process.exit(0);
  }
});
process.on('disconnect', () => process.exit(0));
