import type { Server } from 'node:http';
import type { Duplex } from 'node:stream';
import { type ExecutionArgs, GraphQLError } from 'graphql';
import { useServer } from 'graphql-ws/use/ws';
import type { YogaServerInstance } from 'graphql-yoga';
import { decodeJwt } from 'jose';
import type { Logger } from 'pino';
import { WebSocket, WebSocketServer } from 'ws';
import { ANONYMOUS, actorOf, type Principal } from '../auth/principal.ts';
import { InvalidTokenError, type TokenVerifier } from '../auth/tokens.ts';
import type { Context } from '../context.ts';
import { RateLimitedError } from '../domain/errors.ts';
import { Limit, type RateLimits } from '../limits/rate-limits.ts';
import { bearerToken, expiredOnly } from './auth-plugin.ts';
import { clientIp } from './client-ip.ts';
import { createMaskError } from './errors.ts';
import { type FanOutTarget, SharedFanOut } from './shared-fanout.ts';
import { at, type OperationCaps, OperationCounter } from './socket-limits.ts';
import type { TrustedDocuments } from './trusted-documents.ts';
import { queryTooLong } from './yoga.ts';

/**
 * Subscriptions over graphql-ws (the `graphql-transport-ws` protocol) on the HTTP server's own
 * port and path, sharing Yoga's schema, plugins and context (the graphql-ws recipe with
 * `yoga.getEnveloped`). The bearer token travels in `connectionParams` ({ authorization:
 * "Bearer …" } or { token }) and is checked once, in `onConnect`: none or a bad one closes the
 * socket with 4403, and so does the token's expiry later. Field scopes are checked again when
 * each subscription starts.
 *
 * Each operation passes the same pre-execution limits as over HTTP (characters, trusted
 * documents, then graphql-armor's token, depth, alias, directive and cost limits in parse and
 * validate) plus the per-socket and per-principal caps. A refusal is an `error` message for that
 * operation's id, masked like HTTP errors; the socket stays open.
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
  /** Subscriptions per socket and per principal; the excess answers RATE_LIMITED. */
  caps: OperationCaps;
  /** Failed authentications per IP (an address over them gets 429 at the upgrade), connections opened per principal. */
  limits: RateLimits;
  /** TRUST_PROXY_HOPS (client-ip.ts). */
  trustProxyHops: number;
  /**
   * Execute and serialise each event once per (document, variables, visibility) and send the same
   * payload to every socket sharing them (shared-fanout.ts); false runs every subscription on its
   * own (the path before issue 16, kept for comparison). @default true
   */
  sharedFanOut?: boolean;
}

interface ConnectionExtra extends Record<PropertyKey, unknown> {
  principal?: Principal;
  /** The socket's TCP socket, kept from the upgrade request (shared fan-out frames are written to it). */
  wire?: Duplex;
  operations?: ReturnType<OperationCounter['register']>;
  expiry?: { cancel(): void };
}

/** graphql-ws's code for a refused connection, used for a bad token and an expired one alike. */
const FORBIDDEN = 4403;
/** WebSocket's "Try Again Later": graphql-ws clients retry it with backoff (4429 would be fatal to them). */
const TRY_AGAIN_LATER = 1013;

export function attachSubscriptions(options: SubscriptionServerOptions): { close(): Promise<void>; fanOut: SharedFanOut | null } {
  const { yoga, limits } = options;
  // No permessage-deflate (ws's server default, stated): a compression context costs ~300 KiB per
  // socket at zlib's defaults, and events are a few hundred bytes.
  const wss = new WebSocketServer({
    server: options.server,
    path: '/graphql',
    maxPayload: options.maxPayloadBytes ?? 64 * 1024,
    // an address over its failed authentications is refused at the upgrade, before any frame
    verifyClient: (info, done) => {
      void limits.exhausted(Limit.AUTH_FAILURES, clientIp(info.req, options.trustProxyHops)).then((seconds) => {
        if (seconds === null) return done(true);
        done(false, 429, 'Too Many Requests', { 'retry-after': String(seconds) });
      });
    },
    perMessageDeflate: false,
  });
  const counter = new OperationCounter(options.caps);
  const maskError = createMaskError(options.logger, options.production);
  /** Errors as HTTP would answer them (masked, coded), without HTTP-only extensions. */
  const refusal = (errors: readonly unknown[]): GraphQLError[] =>
    errors.map((error) => {
      const masked = maskError(error, 'Unexpected error.') as GraphQLError;
      if (!('http' in masked.extensions)) return masked;
      const { http: _http, ...extensions } = masked.extensions;
      const { nodes, source, positions, path } = masked;
      return new GraphQLError(masked.message, { nodes, source, positions, path, extensions });
    });
  const fanOut = options.sharedFanOut === false ? null : new SharedFanOut({ logger: options.logger, formatErrors: refusal });
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
        let principal: Principal;
        try {
          principal = await options.verify(token);
        } catch (error) {
          if (!(error instanceof InvalidTokenError && expiredOnly(error))) {
            await limits.count(Limit.AUTH_FAILURES, clientIp(ctx.extra.request, options.trustProxyHops));
          }
          return false;
        }
        const expiresAt = (decodeJwt(token).exp ?? 0) * 1000; // verified, and exp is a required claim
        const { socket } = ctx.extra;
        // closed while the token was verified: onClose has run, nothing may be registered now
        if (expiresAt <= Date.now() || socket.readyState === WebSocket.CLOSED) return false;
        // graphql-ws keeps the upgrade request for the socket's life; nothing here reads it again
        ctx.extra.wire = ctx.extra.request.socket;
        Reflect.deleteProperty(ctx.extra, 'request');
        const { role, id } = actorOf(principal);
        const caller = `${role}:${id}`;
        let refused = await limits.consume(Limit.WS_CONNECTIONS, caller).then(
          () => null,
          (error: unknown) => {
            if (error instanceof RateLimitedError) return `RATE_LIMITED: retry after ${error.retryAfterSeconds} s`;
            throw error;
          },
        );
        // synchronously up to register(): a burst of connections is counted exactly
        if (!refused && counter.full(caller))
          refused = `RATE_LIMITED: at most ${options.caps.socketsPerPrincipal} connections at once per caller`;
        if (refused) {
          socket.close(TRY_AGAIN_LATER, refused); // graphql-ws's own 4403 after `false` comes too late to replace it
          return false;
        }
        if (socket.readyState !== WebSocket.OPEN) return false; // closed while the limit was checked
        ctx.extra.principal = principal;
        ctx.extra.operations = counter.register(caller, () => ctx.subscriptions);
        ctx.extra.expiry = at(expiresAt, () => socket.close(FORBIDDEN, 'Token expired'));
        return true;
      },
      onClose: (ctx) => {
        ctx.extra.operations?.release();
        ctx.extra.expiry?.cancel();
      },
      execute: (args) => (args.rootValue as EnvelopedRoot).execute(args),
      subscribe: (args) => (args.rootValue as EnvelopedRoot).subscribe(args),
      onSubscribe: async (ctx, id, incoming) => {
        try {
          // synchronously, before any await: a burst of subscribe messages is counted exactly
          const capped = ctx.extra.operations?.admit(id);
          if (capped) return [capped];
          const tooLong = queryTooLong(incoming.query);
          if (tooLong) return refusal([tooLong]);
          let payload = incoming;
          const query = options.trustedDocuments.resolve(incoming, ctx.extra.principal ?? ANONYMOUS);
          if (query !== undefined && query !== incoming.query) payload = { ...incoming, query };
          const target: FanOutTarget | undefined = fanOut ? { hub: fanOut, socket: ctx.extra.socket, wire: ctx.extra.wire, id } : undefined;
          const enveloped = yoga.getEnveloped({
            principal: ctx.extra.principal,
            params: payload,
            request: undefined,
            fanOut: target,
          } as never);
          // graphql-armor throws from parse (tokens) and validate (depth, aliases, directives, cost)
          const document = enveloped.parse(payload.query);
          const errors = enveloped.validate(enveloped.schema, document);
          if (errors.length) return refusal(errors);
          const args: ExecutionArgs = {
            schema: enveloped.schema,
            document,
            operationName: payload.operationName,
            variableValues: payload.variables,
            contextValue: await enveloped.contextFactory(),
            rootValue: { execute: enveloped.execute, subscribe: enveloped.subscribe },
          };
          return args;
        } catch (error) {
          return refusal([error]);
        }
      },
      onError: (_ctx, _id, _payload, errors) => {
        options.logger.debug({ errors: errors.map((e) => e.message) }, 'subscription error');
      },
    },
    wss,
    options.keepAliveMs ?? 12_000,
  );
  return {
    fanOut,
    async close() {
      fanOut?.close();
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
