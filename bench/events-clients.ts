/**
 * One client process of `bench:events` (started by bench/events.ts, driven over IPC): a share of
 * the fleet's subscribers, each a WebSocket speaking graphql-transport-ws (connection_init with a
 * machine token, one `subscribe`, then `next` frames) over bench/events-socket.ts — a real socket
 * and handshake, frames read in place — because the graphql-ws client, and even `ws`, cost several
 * times the CPU per message, and 10,000 of them on 2 cores would measure the clients, not the
 * server. A `next` frame of the expected shape (`{"id":"1","type":"next","payload":{"data":
 * {"cacheEvents":{"type":…,"loraId":…,"userId":null,"at":…}}}}`, checked byte by byte) is read
 * without JSON.parse; any other frame is parsed in full and judged as before. Arrival times are
 * kept per (subscriber, event); on `report` the process answers with latency histograms (0.1 ms
 * bins) and the counts of lost, duplicated and unexpected frames.
 *
 * Messages in: open {wsUrl, secret, first, count, loraIds, query, binMs}, status, report {sentAt}, close.
 * Messages out: opened | failed {error}, status {minUpdates, deliveries}, report {...}.
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
let eventAt = new Float64Array(0);
let deliveries = 0;
let duplicates = 0;
let unexpected = 0;
const errors: string[] = [];
const cpu0 = process.cpuUsage();
const note = (message: string) => {
  if (errors.length < 5) errors.push(message);
};

/** Adds `count` subscribers (machines gpu-{first}…); may be sent again to add more. */
async function open(m: Open): Promise<void> {
  binMs = m.binMs;
  const events = m.loraIds.length;
  if (eventAt.length !== events) {
    index = new Map(m.loraIds.map((id, i) => [id, i]));
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
          const event = expectedEvent(data, start, end) ?? parsedEvent(machine, data.toString('utf8', start, end));
          if (!event) return;
          if (event.type === 'LORA_UPDATED') {
            mine.updates++;
            return;
          }
          const i = index.get(event.loraId);
          if (event.type !== 'LORA_DELETED' || i === undefined) {
            unexpected++;
            return;
          }
          if (!Number.isNaN(mine.arrivals[i] as number)) {
            duplicates++;
            return;
          }
          mine.arrivals[i] = arrived;
          if (Number.isNaN(eventAt[i] as number)) eventAt[i] = Date.parse(event.at());
          deliveries++;
        });
      }),
    );
  }
}

interface Event {
  type: string;
  loraId: string;
  /** The event's `at` (read only for an event's first arrival). */
  at(): string;
}

const NEXT = Buffer.from('{"id":"1","type":"next","payload":{"data":{"cacheEvents":{"type":"');
const LORA_ID = Buffer.from('","loraId":"');
const AT = Buffer.from('","userId":null,"at":"');
const END = Buffer.from('"}}}}');
const QUOTE = 0x22;

/** Whether data[at…] starts with `expected`. */
const has = (data: Buffer, at: number, end: number, expected: Buffer) =>
  end - at >= expected.length && data.compare(expected, 0, expected.length, at, at + expected.length) === 0;

/**
 * The event of a `next` frame of exactly the expected shape (the server's JSON of the benchmark's
 * subscription, ids and type without escapes), read in place; null for any other frame.
 */
function expectedEvent(data: Buffer, start: number, end: number): Event | null {
  if (!has(data, start, end, NEXT)) return null;
  const typeAt = start + NEXT.length;
  const typeEnd = data.indexOf(QUOTE, typeAt);
  if (typeEnd < 0 || typeEnd >= end || !has(data, typeEnd, end, LORA_ID)) return null;
  const idAt = typeEnd + LORA_ID.length;
  const idEnd = data.indexOf(QUOTE, idAt);
  if (idEnd < 0 || idEnd >= end || !has(data, idEnd, end, AT)) return null;
  const atAt = idEnd + AT.length;
  const atEnd = data.indexOf(QUOTE, atAt);
  if (atEnd < 0 || atEnd + END.length !== end || !has(data, atEnd, end, END)) return null;
  const at = data.toString('latin1', atAt, atEnd); // read now: the buffer is reused after this frame
  return { type: data.toString('latin1', typeAt, typeEnd), loraId: data.toString('latin1', idAt, idEnd), at: () => at };
}

/** Any other frame, parsed in full: its event, or null (noted when it is not a `pong`). */
function parsedEvent(machine: string, text: string): Event | null {
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
  return { type: event.type, loraId: event.loraId, at: () => event.at };
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
