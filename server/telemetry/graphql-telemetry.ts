import { readFileSync } from 'node:fs';
import { useOpenTelemetry } from '@envelop/opentelemetry';
import { type Span, SpanKind, trace } from '@opentelemetry/api';
import {
  type DocumentNode,
  defaultFieldResolver,
  type ExecutionResult,
  type GraphQLError,
  type GraphQLField,
  type GraphQLFieldResolver,
  type GraphQLSchema,
  getOperationAST,
} from 'graphql';
import type { Plugin } from 'graphql-yoga';
import { serverInstruments } from './instruments.ts';
import { errorCode, failSpan, tracer } from './tracing.ts';

/**
 * GraphQL spans and figures, as Yoga plugins:
 * - `graphql.parse` and `graphql.validate` spans (ours), the `query.Loras` / `mutation.UploadLora`
 *   execution span (@envelop/opentelemetry, with no document, variables or result recorded: a
 *   variable may be a job grant), and one span per root field resolver — with no arguments either.
 *   Field resolvers below the root are not traced, nor wrapped: the list path resolves hundreds of fields.
 * - `lora_vault.graphql.operation.duration` by operation name and type, and
 *   `lora_vault.graphql.errors` by code; `lora_vault.subscriptions.active` and
 *   `lora_vault.events.delivered` by subscription field.
 * Operation names are the SDK's (from the trusted-documents file); any other name counts as
 * "other", so a client cannot grow the label set.
 */

const tracedFields = new WeakSet<GraphQLField<unknown, unknown>>();

/**
 * One span per root field resolver: only the fields of Query, Mutation and Subscription are wrapped,
 * so every other field keeps its own resolver and graphql-jit inlines the default ones. (Wrapping every
 * field and returning early below the root, as `@envelop/on-resolve` would, cost the list path ~500
 * field calls per page through the wrapper: bench:api:profile, docs/decisions.md.)
 */
function traceRootFields(schema: GraphQLSchema): void {
  for (const type of [schema.getQueryType(), schema.getMutationType(), schema.getSubscriptionType()]) {
    for (const field of Object.values(type?.getFields() ?? {})) {
      if (tracedFields.has(field)) continue;
      field.resolve = tracedResolver(type?.name ?? '', field.name, field.resolve ?? defaultFieldResolver);
      tracedFields.add(field);
    }
  }
}

function tracedResolver(
  parent: string,
  name: string,
  resolve: GraphQLFieldResolver<unknown, unknown>,
): GraphQLFieldResolver<unknown, unknown> {
  const spanName = `graphql.resolve ${parent}.${name}`;
  const attributes = { 'graphql.field.name': name, 'graphql.field.parent': parent };
  return (root, args, context, info) => {
    const span = tracer().startSpan(spanName, { attributes });
    const done = (result: unknown) => {
      if (result instanceof Error) failSpan(span, result);
      span.end();
    };
    let result: unknown;
    try {
      result = resolve(root, args, context, info);
    } catch (error) {
      done(error);
      throw error;
    }
    if (!isPromiseLike(result)) {
      done(result);
      return result;
    }
    return Promise.resolve(result).then(
      (value) => {
        done(value);
        return value;
      },
      (error: unknown) => {
        done(error);
        throw error;
      },
    );
  };
}

function isPromiseLike(value: unknown): value is PromiseLike<unknown> {
  return typeof (value as { then?: unknown } | null)?.then === 'function';
}

/** Operation names of the SDK's generated documents. */
export function sdkOperationNames(persistedDocumentsFile: string): Set<string> {
  const names = new Set<string>();
  try {
    const documents = JSON.parse(readFileSync(persistedDocumentsFile, 'utf8')) as Record<string, string>;
    for (const text of Object.values(documents)) {
      for (const match of text.matchAll(/\b(?:query|mutation|subscription)\s+([_A-Za-z][_0-9A-Za-z]*)/g)) names.add(match[1] as string);
    }
  } catch {
    // no generated documents: every operation is "other"
  }
  return names;
}

export function useGraphQLTelemetry(options: { operationNames: ReadonlySet<string> }): Plugin {
  const started = new WeakMap<object, number>();
  const labelOf = (name: string | undefined) => (name && options.operationNames.has(name) ? name : 'other');
  const countErrors = (result: ExecutionResult) => {
    for (const error of result.errors ?? []) serverInstruments().graphqlErrors.add(1, { 'error.code': errorCode(error) });
  };
  return {
    onPluginInit({ addPlugin }) {
      addPlugin(
        useOpenTelemetry(
          { resolvers: false, variables: false, result: false, document: false },
          trace.getTracerProvider(),
          SpanKind.INTERNAL,
        ) as Plugin,
      );
    },
    onSchemaChange({ schema }) {
      traceRootFields(schema);
    },
    onParse() {
      const span = tracer().startSpan('graphql.parse');
      return ({ result }) => endWith(span, result instanceof Error ? result : null);
    },
    onValidate() {
      const span = tracer().startSpan('graphql.validate');
      return ({ result }) => endWith(span, result.length ? (result[0] as GraphQLError) : null);
    },
    onExecute({ args }) {
      started.set(args.contextValue, performance.now());
      const operation = getOperationAST(args.document, args.operationName);
      const attributes = {
        'graphql.operation.name': labelOf(operation?.name?.value),
        'graphql.operation.type': operation?.operation ?? 'query',
      };
      return {
        onExecuteDone({ result }) {
          const begun = started.get(args.contextValue) ?? performance.now();
          serverInstruments().operationDuration.record((performance.now() - begun) / 1000, attributes);
          if (!isAsyncIterable(result)) countErrors(result);
        },
      };
    },
    onSubscribe({ args }) {
      const field = subscriptionField(args.document, args.operationName);
      return {
        onSubscribeResult({ result }) {
          if (!isAsyncIterable(result)) {
            countErrors(result);
            return;
          }
          const m = serverInstruments();
          m.subscriptions.add(1, { 'graphql.field': field });
          return {
            // on the shared fan-out path the iterator yields nothing: the hub records its deliveries
            onNext: ({ result: next }) => recordDelivery(field, 1, next),
            onEnd: () => m.subscriptions.add(-1, { 'graphql.field': field }),
          };
        },
      };
    },
  };
}

/**
 * One subscription result delivered to `recipients` clients: `lora_vault.events.delivered` by
 * field, a `deliver <field>` span, and its errors. Called per subscriber on the per-subscription
 * path and once per shared execution by the shared fan-out (server/http/shared-fanout.ts).
 */
export function recordDelivery(field: string, recipients: number, result: ExecutionResult): void {
  serverInstruments().eventsDelivered.add(recipients, { 'graphql.field': field });
  tracer()
    .startSpan(`deliver ${field}`, {
      kind: SpanKind.CONSUMER,
      attributes: { 'graphql.field': field, 'messaging.operation.type': 'process', 'messaging.batch.message_count': recipients },
    })
    .end();
  for (const error of result.errors ?? []) serverInstruments().graphqlErrors.add(recipients, { 'error.code': errorCode(error) });
}

/** The subscription's root field, the `graphql.field` label of its figures. */
export function subscriptionField(document: DocumentNode, operationName?: string | null): string {
  return rootField(getOperationAST(document, operationName));
}

function endWith(span: Span, error: Error | null): void {
  if (error) failSpan(span, error);
  span.end();
}

function rootField(operation: ReturnType<typeof getOperationAST>): string {
  const selection = operation?.selectionSet.selections[0];
  return selection?.kind === 'Field' ? selection.name.value : 'unknown';
}

function isAsyncIterable(value: unknown): value is AsyncIterable<unknown> {
  return typeof value === 'object' && value !== null && Symbol.asyncIterator in value;
}
