import { Client, cacheExchange, fetchExchange, subscriptionExchange } from '@urql/core';
import { createClient as createWsClient } from 'graphql-ws';
import { GRAPHQL_URL, WS_URL } from './config.ts';

/**
 * One urql client per signed-in token: queries and mutations over HTTP with the bearer token,
 * subscriptions over graphql-ws (token in `connectionParams`), urql's document cache (a mutation
 * result naming a type refetches the queries that hold that type; the library also refetches on
 * `loraEvents`). `onUnauthenticated` signs out when the API refuses the token.
 */
export interface StudioClient {
  client: Client;
  dispose(): void;
}

export function createStudioClient(token: string, onUnauthenticated: () => void): StudioClient {
  const ws = createWsClient({
    url: WS_URL,
    connectionParams: { authorization: `Bearer ${token}` },
    lazy: true,
    retryAttempts: 20,
    // 4403: the token was refused or expired; reconnecting with it cannot help
    shouldRetry: (event) => !(event && typeof event === 'object' && 'code' in event && event.code === 4403),
    on: {
      closed: (event) => {
        if (event && typeof event === 'object' && 'code' in event && event.code === 4403) onUnauthenticated();
      },
    },
  });
  const client = new Client({
    url: GRAPHQL_URL,
    preferGetMethod: false,
    fetchOptions: () => ({ headers: { authorization: `Bearer ${token}`, 'x-graphql-yoga-csrf': '1' } }),
    exchanges: [
      cacheExchange,
      fetchExchange,
      subscriptionExchange({
        forwardSubscription: (request) => ({
          subscribe: (sink) => ({
            unsubscribe: ws.subscribe(
              { ...request, query: request.query ?? '' },
              // graphql-ws ends a subscription with the socket's CloseEvent: urql gets an Error that says why
              {
                next: (value) => sink.next(value as Parameters<typeof sink.next>[0]),
                complete: () => sink.complete(),
                error: (error) => sink.error(asError(error)),
              },
            ),
          }),
        }),
      }),
    ],
  });
  return {
    client,
    // graphql-ws's dispose awaits the last connection attempt: one the API refused (4403) rejects
    // with its CloseEvent, an uncaught page error when signing out because of that very refusal
    dispose: () => void Promise.resolve(ws.dispose()).catch(() => {}),
  };
}

/** True when a urql error says the token is missing, bad or expired. */
export function isUnauthenticated(error: { graphQLErrors: { extensions?: Record<string, unknown> }[] } | undefined): boolean {
  return !!error?.graphQLErrors.some((e) => e.extensions?.code === 'UNAUTHENTICATED');
}

/** A socket's CloseEvent (or any thrown value) as an Error with its code and reason. */
function asError(error: unknown): Error {
  if (error instanceof Error) return error;
  if (error && typeof error === 'object' && 'code' in error) {
    const { code, reason } = error as { code: number; reason?: string };
    return new Error(`The live connection closed (${code}${reason ? `: ${reason}` : ''})`);
  }
  return new Error(String(error));
}
