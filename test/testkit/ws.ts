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
