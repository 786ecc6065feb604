import { type Client, createClient } from 'graphql-ws';
import WebSocket from 'ws';

/** A real graphql-ws client (Node 20 has no global WebSocket: `ws` is passed in). */
export function wsClient(
  httpUrl: string,
  token: string | null,
  options: { onClosed?: (code: number, reason: string) => void } = {},
): Client {
  return createClient({
    url: httpUrl.replace(/^http/, 'ws'),
    webSocketImpl: WebSocket,
    connectionParams: token ? { authorization: `Bearer ${token}` } : {},
    retryAttempts: 0,
    lazy: true,
    on: {
      closed: (event) => {
        const e = event as { code: number; reason: string };
        options.onClosed?.(e.code, e.reason);
      },
    },
  });
}

/** Collects results of one subscription until it completes, errors, or `until` says stop. */
export async function collect<T = any>(
  client: Client,
  query: string,
  variables: Record<string, unknown>,
  until: (values: T[]) => boolean,
  timeoutMs = 10_000,
): Promise<{ values: T[]; errors: unknown[] }> {
  const values: T[] = [];
  const errors: unknown[] = [];
  const iterator = client.iterate<T>({ query, variables });
  const timer = setTimeout(() => void iterator.return?.(), timeoutMs);
  try {
    for await (const result of iterator) {
      if (result.errors) errors.push(...result.errors);
      if (result.data) values.push(result.data as T);
      if (result.errors || until(values)) break;
    }
  } catch (error) {
    errors.push(error);
  } finally {
    clearTimeout(timer);
  }
  return { values, errors };
}

/** Opens a raw socket speaking graphql-transport-ws; resolves with the close code. */
export function rawSocket(httpUrl: string, act: (socket: WebSocket) => void): Promise<{ code: number; reason: string }> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(httpUrl.replace(/^http/, 'ws'), 'graphql-transport-ws');
    socket.on('open', () => act(socket));
    socket.on('close', (code, reason) => resolve({ code, reason: reason.toString() }));
    socket.on('error', (error) => {
      if (socket.readyState === WebSocket.CLOSED) return;
      reject(error);
    });
  });
}

export interface ProtocolMessage {
  type: string;
  id?: string;
  payload?: any;
}

/** One acknowledged graphql-transport-ws socket, driven message by message (several operations per socket). */
export interface ProtocolSocket {
  /** Every message received so far, in order. */
  messages: ProtocolMessage[];
  /** Resolves with the close code and reason once the server (or we) closed the socket. */
  closed: Promise<{ code: number; reason: string }>;
  isOpen(): boolean;
  subscribe(id: string, query: string, variables?: Record<string, unknown>): void;
  complete(id: string): void;
  /** Resolves with the first message (already received or coming) that `match` accepts; rejects after `timeoutMs`. */
  waitFor(match: (m: ProtocolMessage) => boolean, timeoutMs?: number): Promise<ProtocolMessage>;
  close(): Promise<void>;
}

export function protocolSocket(httpUrl: string, token: string): Promise<ProtocolSocket> {
  const socket = new WebSocket(httpUrl.replace(/^http/, 'ws'), 'graphql-transport-ws');
  const messages: ProtocolMessage[] = [];
  const waiters = new Set<() => void>();
  const closed = new Promise<{ code: number; reason: string }>((resolve) =>
    socket.on('close', (code, reason) => resolve({ code, reason: reason.toString() })),
  );
  socket.on('error', () => {}); // surfaced as a close
  socket.on('message', (data) => {
    messages.push(JSON.parse(String(data)) as ProtocolMessage);
    for (const wake of waiters) wake();
  });
  const send = (message: ProtocolMessage) => socket.send(JSON.stringify(message));
  const handle: ProtocolSocket = {
    messages,
    closed,
    isOpen: () => socket.readyState === WebSocket.OPEN,
    subscribe: (id, query, variables = {}) => send({ id, type: 'subscribe', payload: { query, variables } }),
    complete: (id) => send({ id, type: 'complete' }),
    waitFor(match, timeoutMs = 10_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const found = messages.find(match);
          if (!found) return;
          cleanup();
          resolve(found);
        };
        const timer = setTimeout(() => {
          cleanup();
          reject(new Error(`no matching message within ${timeoutMs} ms; got ${JSON.stringify(messages).slice(0, 500)}`));
        }, timeoutMs);
        const cleanup = () => {
          clearTimeout(timer);
          waiters.delete(check);
        };
        waiters.add(check);
        check();
      });
    },
    async close() {
      if (socket.readyState === WebSocket.OPEN || socket.readyState === WebSocket.CONNECTING) socket.close(1000);
      await closed;
    },
  };
  socket.on('open', () => send({ type: 'connection_init', payload: { authorization: `Bearer ${token}` } }));
  return Promise.race([
    handle.waitFor((m) => m.type === 'connection_ack').then(() => handle),
    closed.then(({ code, reason }) => {
      throw new Error(`socket closed before connection_ack: ${code} ${reason}`);
    }),
  ]);
}
