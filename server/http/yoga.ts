import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { useGraphQlJit } from '@envelop/graphql-jit';
import { EnvelopArmorPlugin } from '@escape.tech/graphql-armor';
import { useCSRFPrevention } from '@graphql-yoga/plugin-csrf-prevention';
import { renderGraphiQL } from '@graphql-yoga/render-graphiql';
import { type ExecutionArgs, GraphQLError, Kind, type OperationDefinitionNode } from 'graphql';
import { createYoga, type Plugin, type YogaServerInstance } from 'graphql-yoga';
import type { Logger } from 'pino';
import { buildSchema } from '../../schema/index.ts';
import { ANONYMOUS, type Principal } from '../auth/principal.ts';
import type { TokenVerifier } from '../auth/tokens.ts';
import { type Context, RequestLoaders } from '../context.ts';
import { RequestErrorCode } from '../domain/errors.ts';
import type { Services } from '../services/index.ts';
import { useStreamingUploads } from '../uploads/multipart.ts';
import { principalOf, useAuth } from './auth-plugin.ts';
import { clientIp } from './client-ip.ts';
import { corsFor } from './cors.ts';
import { createMaskError, withoutSuggestions } from './errors.ts';
import { useSharedFanOut } from './shared-fanout.ts';
import { type TrustedDocuments, useTrustedDocuments } from './trusted-documents.ts';

/** Request limits applied before execution (THREATS.md row 9). */
export const QUERY_LIMITS = {
  maxQueryChars: 20_000,
  maxDepth: 10,
  maxAliases: 15,
  maxDirectives: 20,
  maxTokens: 2_000,
  maxCost: 5_000,
} as const;

export interface YogaDeps {
  services: Services;
  verify: TokenVerifier;
  logger: Logger;
  production: boolean;
  graphiql: boolean;
  /** CORS_ORIGINS: origins answered with CORS headers (`*` = any), never with credentials. */
  corsOrigins: readonly string[];
  maxUploadBytes: number;
  /** No byte of an upload body for this long → UPLOAD_INTERRUPTED, socket closed. */
  uploadIdleMs: number;
  trustedDocuments: TrustedDocuments;
  /** TRUST_PROXY_HOPS: proxies whose X-Forwarded-For entries name the client (client-ip.ts). */
  trustProxyHops: number;
  /** Spans and figures (telemetry/graphql-telemetry.ts). */
  telemetry?: Plugin;
}

const REQUEST_ID = /^[A-Za-z0-9._-]{1,64}$/;
const requestIds = new WeakMap<Request, string>();

function useRequestId(): Plugin {
  return {
    onRequest({ request }) {
      const given = request.headers.get('x-request-id');
      requestIds.set(request, given && REQUEST_ID.test(given) ? given : randomUUID());
    },
    onResponse({ request, response }) {
      const id = requestIds.get(request);
      if (id) response.headers.set('x-request-id', id);
    },
  };
}

/** Validation errors in production carry no "Did you mean …?" (enum values included). */
function useNoSuggestions(): Plugin {
  return {
    onValidate() {
      return ({ result, setResult }) => {
        if (result.length) setResult(result.map((e) => (e instanceof GraphQLError ? withoutSuggestions(e) : e)));
      };
    },
  };
}

/** The character limit, checked on the text as sent (before a trusted document replaces it); over WebSocket too. */
export function queryTooLong(query: unknown, max: number = QUERY_LIMITS.maxQueryChars): GraphQLError | null {
  if (typeof query !== 'string' || query.length <= max) return null;
  return new GraphQLError(`Query is longer than ${max} characters`, {
    extensions: { code: RequestErrorCode.BAD_USER_INPUT, http: { status: 400 } },
  });
}

function useQueryCharLimit(max: number): Plugin {
  return {
    onParams({ params }) {
      const error = queryTooLong(params.query, max);
      if (error) throw error;
    },
  };
}

/**
 * Subscriptions are served over WebSocket only (subscriptions.ts, with its socket limits and
 * token checks). Yoga would also stream them over HTTP (SSE, multipart): refused with a clear error.
 */
function useWebSocketOnlySubscriptions(): Plugin {
  return {
    onSubscribe({ args, setResultAndStopExecution }) {
      if (!(args.contextValue as { request?: Request }).request) return; // WebSocket: no HTTP request
      setResultAndStopExecution({
        errors: [
          new GraphQLError('Subscriptions are served over WebSocket only (graphql-transport-ws on /graphql), not over HTTP', {
            extensions: { code: RequestErrorCode.BAD_USER_INPUT, http: { status: 400 } },
          }),
        ],
      });
    },
  };
}

export function createYogaServer(deps: YogaDeps): YogaServerInstance<Record<string, never>, Context> {
  const armor = EnvelopArmorPlugin({
    maxDepth: { n: QUERY_LIMITS.maxDepth, ignoreIntrospection: true },
    maxAliases: { n: QUERY_LIMITS.maxAliases },
    maxDirectives: { n: QUERY_LIMITS.maxDirectives },
    maxTokens: { n: QUERY_LIMITS.maxTokens },
    costLimit: { maxCost: QUERY_LIMITS.maxCost, ignoreIntrospection: true },
    blockFieldSuggestion: { enabled: deps.production },
  });
  return createYoga<Record<string, never>, Context>({
    schema: buildSchema(),
    graphqlEndpoint: '/graphql',
    landingPage: false,
    cors: corsFor(deps.corsOrigins),
    graphiql: deps.graphiql ? { title: 'lora-vault', defaultQuery: GRAPHIQL_DEFAULT_QUERY } : false,
    renderGraphiQL,
    logging: yogaLogger(deps.logger),
    maskedErrors: { maskError: createMaskError(deps.logger, deps.production) },
    // Yoga's multipart parsing buffers whole files: off; useStreamingUploads parses them as streams.
    multipart: false,
    // Yoga's 25 MB body limit would also refuse uploads: off. Ordinary bodies are capped at 1 MiB
    // by the HTTP handler (app.ts), files at MAX_UPLOAD_BYTES by the upload pipeline.
    maxRequestBodySize: false,
    plugins: [
      useRequestId(),
      ...(deps.telemetry ? [deps.telemetry] : []),
      useQueryCharLimit(QUERY_LIMITS.maxQueryChars),
      useWebSocketOnlySubscriptions(),
      useAuth({
        verify: deps.verify,
        introspectionForAdminsOnly: deps.production,
        limits: deps.services.limits,
        clientIp: (serverContext) => {
          const req = (serverContext as { req?: IncomingMessage } | undefined)?.req;
          return req?.socket ? clientIp(req, deps.trustProxyHops) : undefined;
        },
      }),
      useCSRFPrevention({ requestHeaders: ['x-graphql-yoga-csrf', 'apollo-require-preflight'] }),
      useTrustedDocuments(deps.trustedDocuments),
      useStreamingUploads({ maxFileBytes: deps.maxUploadBytes, idleMs: deps.uploadIdleMs }),
      armor,
      // Compiled execution for queries and mutations; subscriptions keep graphql-js (graphql-jit's
      // subscribe path does not see the operation's variables).
      useGraphQlJit({}, { enableIf: (args) => !isSubscription(args) }),
      // WebSocket subscriptions marked for it share one execution per event (shared-fanout.ts)
      useSharedFanOut(),
      ...(deps.production ? [useNoSuggestions()] : []),
    ],
    context: async (initial) => {
      // HTTP requests are authenticated by useAuth; WebSocket connections bring their principal
      const ws = (initial as { principal?: Principal }).principal;
      const principal = ws ?? (initial.request ? await principalOf(initial.request) : ANONYMOUS);
      const requestId = (initial.request && requestIds.get(initial.request)) || randomUUID();
      return {
        principal: { ...principal, requestId },
        services: deps.services,
        requestId,
        loaders: new RequestLoaders(deps.services),
      };
    },
  });
}

const GRAPHIQL_DEFAULT_QUERY = `# Paste a token into the Headers tab: {"Authorization": "Bearer <token>"}
query MyLoras {
  loras(limit: 20) {
    total
    loras { id name sizeBytes createdAt tags metadata { baseModel rank } }
  }
  loraQuota { usedStorageBytes maxStorageBytes loraCount maxLoraCount warning }
}
`;

/** Yoga logs every execution error; ours are logged (once, unmasked) by maskError, so keep Yoga's at debug. */
function yogaLogger(logger: Logger) {
  const debug = (...args: unknown[]) => logger.debug({ args }, 'yoga');
  return { debug, info: debug, warn: (...args: unknown[]) => logger.warn({ args }, 'yoga'), error: debug };
}

function isSubscription(args: ExecutionArgs): boolean {
  const operation = args.document.definitions.find(
    (d): d is OperationDefinitionNode =>
      d.kind === Kind.OPERATION_DEFINITION && (!args.operationName || d.name?.value === args.operationName),
  );
  return operation?.operation === 'subscription';
}
