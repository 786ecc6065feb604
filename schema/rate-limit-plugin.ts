import SchemaBuilder, { BasePlugin, type PothosOutputFieldConfig, type SchemaTypes } from '@pothos/core';
import type { GraphQLFieldResolver } from 'graphql';
import type { Context } from '../server/context.ts';

/**
 * The per-principal mutation limit in one place: every root Mutation field — present and future —
 * counts one against its caller's budget (`RateLimits.mutation`) before its resolver runs. Listed
 * after the scope-auth and errors plugins in builder.ts, so it runs inside both: a caller the field
 * refuses is never counted, and a refusal is the `RateLimitedError` member of the field's result
 * union (every union has it: `errors.defaultTypes`) or, for a field without one, a thrown
 * RATE_LIMITED with `retryAfterSeconds` (server/http/errors.ts).
 */

const pluginName = 'mutationRateLimit';

export class MutationRateLimitPlugin<Types extends SchemaTypes> extends BasePlugin<Types> {
  override wrapResolve(
    resolver: GraphQLFieldResolver<unknown, Types['Context'], object>,
    fieldConfig: PothosOutputFieldConfig<Types>,
  ): GraphQLFieldResolver<unknown, Types['Context'], object> {
    if (fieldConfig.kind !== 'Mutation') return resolver;
    return async (parent, args, context, info) => {
      const ctx = context as Context;
      await ctx.services.limits.mutation(ctx.principal);
      return resolver(parent, args, context, info);
    };
  }
}

declare global {
  export namespace PothosSchemaTypes {
    interface Plugins<Types extends SchemaTypes> {
      mutationRateLimit: MutationRateLimitPlugin<Types>;
    }
  }
}

SchemaBuilder.registerPlugin(pluginName, MutationRateLimitPlugin);

export default pluginName;
