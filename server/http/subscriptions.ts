import type { Server } from 'node:http';
import type { ExecutionArgs, GraphQLError } from 'graphql';
import { useServer } from 'graphql-ws/use/ws';
import type { YogaServerInstance } from 'graphql-yoga';
import type { Logger } from 'pino';
import { WebSocketServer } from 'ws';
import { ANONYMOUS, type Principal } from '../auth/principal.ts';
import type { TokenVerifier } from '../auth/tokens.ts';
import type { Context } from '../context.ts';
import { bearerToken } from './auth-plugin.ts';
import type { TrustedDocuments } from './trusted-documents.ts';

/**
 * Subscriptions over graphql-ws (the `graphql-transport-ws` protocol) on the HTTP server's own
 * port and path, sharing Yoga's schema, plugins and context (the graphql-ws recipe with
 * `yoga.getEnveloped`). The bearer token travels in `connectionParams` ({ authorization:
 * "Bearer …" } or { token }) and is checked once, in `onConnect`: none or a bad one closes the
 * socket with 4403. Field scopes are checked again when each subscription starts.
 */

export interface SubscriptionServerOptions {
  server: Server;
  yoga: YogaServerInstance<Record<string, never>, Context>;
  verify: TokenVerifier;
  logger: Logger;
  production: boolean;
  /** Largest accepted WebSocket frame; larger ones close the socket (1009). @default 64 KiB */
  maxPayloadBytes?: number;
  /** A socket that sends no `connection_init` within this is closed (4408). @default 3 s */
  connectionInitWaitMs?: number;
  /** Ping interval; a peer that misses a pong is dropped. @default 12 s */
  keepAliveMs?: number;
  trustedDocuments: TrustedDocuments;
}

interface ConnectionExtra extends Record<PropertyKey, unknown> {
  principal?: Principal;
}

export function attachSubscriptions(options: SubscriptionServerOptions): { close(): Promise<void> } {
  const wss = new WebSocketServer({ server: options.server, path: '/graphql', maxPayload: options.maxPayloadBytes ?? 64 * 1024 });
  const { yoga } = options;
  const disposable = useServer<Record<string, unknown>, ConnectionExtra>(
    {
      connectionInitWaitTimeout: options.connectionInitWaitMs ?? 3_000,
      isProd: options.production,
      onConnect: async (ctx) => {
        const params = ctx.connectionParams ?? {};
        const raw =
          typeof params.authorization === 'string'
            ? params.authorization
            : typeof params.token === 'string'
              ? `Bearer ${params.token}`
              : null;
        const token = bearerToken(raw);
        if (!token) return false;
        try {
          ctx.extra.principal = await options.verify(token);
          return true;
        } catch {
          return false;
        }
      },
      execute: (args) => (args.rootValue as EnvelopedRoot).execute(args),
      subscribe: (args) => (args.rootValue as EnvelopedRoot).subscribe(args),
      onSubscribe: async (ctx, _id, incoming) => {
        let payload = incoming;
        try {
          const query = options.trustedDocuments.resolve(incoming, ctx.extra.principal ?? ANONYMOUS);
          if (query !== undefined && query !== incoming.query) payload = { ...incoming, query };
        } catch (error) {
          return [error as GraphQLError];
        }
        const enveloped = yoga.getEnveloped({
          principal: ctx.extra.principal,
          params: payload,
          request: undefined,
        } as never);
        const document = enveloped.parse(payload.query);
        const errors = enveloped.validate(enveloped.schema, document);
        if (errors.length) return errors;
        const args: ExecutionArgs = {
          schema: enveloped.schema,
          document,
          operationName: payload.operationName,
          variableValues: payload.variables,
          contextValue: await enveloped.contextFactory(),
          rootValue: { execute: enveloped.execute, subscribe: enveloped.subscribe },
        };
        return args;
      },
      onError: (_ctx, _id, _payload, errors) => {
        options.logger.debug({ errors: errors.map((e) => e.message) }, 'subscription error');
      },
    },
    wss,
    options.keepAliveMs ?? 12_000,
  );
  return {
    async close() {
      for (const client of wss.clients) client.close(1001, 'Going away');
      await disposable.dispose();
      await new Promise<void>((resolve) => wss.close(() => resolve()));
    },
  };
}

interface EnvelopedRoot {
  execute(args: ExecutionArgs): ReturnType<typeof import('graphql').execute>;
  subscribe(args: ExecutionArgs): ReturnType<typeof import('graphql').subscribe>;
}
