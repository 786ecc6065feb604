import SchemaBuilder from '@pothos/core';
import ErrorsPlugin from '@pothos/plugin-errors';
import PrismaPlugin from '@pothos/plugin-prisma';
import ScopeAuthPlugin from '@pothos/plugin-scope-auth';
import { GraphQLError } from 'graphql';
import type { Context } from '../server/context.ts';
import type { PrismaClient } from '../server/db/generated/client.ts';
import type PrismaTypes from '../server/db/generated/pothos-types.ts';
import { getDatamodel } from '../server/db/generated/pothos-types.ts';
import { RateLimitedError, RequestErrorCode } from '../server/domain/errors.ts';
import MutationRateLimitPlugin from './rate-limit-plugin.ts';

/** The Pothos builder and its plugins. Defines no types: see ./modules. */

export interface AuthScopes {
  user: boolean;
  admin: boolean;
  machine: boolean;
  service: boolean;
}

export const builder = new SchemaBuilder<{
  Context: Context;
  PrismaTypes: PrismaTypes;
  AuthScopes: AuthScopes;
  DefaultFieldNullability: false;
  Scalars: {
    ID: { Input: string; Output: string | bigint };
    DateTime: { Input: Date; Output: Date | string };
    JSON: { Input: unknown; Output: unknown };
    Bytes: { Input: number; Output: number | bigint };
    Upload: { Input: Promise<import('../server/uploads/multipart-parser.ts').ReceivedFile>; Output: never };
  };
}>({
  // Order matters: the first plugin's wrapper is outermost. Auth, then the errors plugin's catch, then
  // the mutation rate limit inside both (./rate-limit-plugin.ts).
  plugins: [ScopeAuthPlugin, ErrorsPlugin, MutationRateLimitPlugin, PrismaPlugin],
  defaultFieldNullability: false,
  scopeAuth: {
    authorizeOnSubscribe: true,
    authScopes: (ctx) => ({
      user: ctx.principal.role === 'user',
      admin: ctx.principal.role === 'admin',
      machine: ctx.principal.role === 'machine',
      service: ctx.principal.role === 'service',
    }),
    unauthorizedError: (_parent, ctx) =>
      ctx.principal.role === 'anonymous'
        ? new GraphQLError('Authentication required', { extensions: { code: RequestErrorCode.UNAUTHENTICATED, http: { status: 200 } } })
        : new GraphQLError('Not allowed for your role', { extensions: { code: RequestErrorCode.FORBIDDEN } }),
  },
  // A result union (`errors: { types }`) resolves itself: an error the plugin caught is the object
  // type of its class (builder.objectType(ErrorClass, …) in ./errors.ts), anything else is the
  // field's own type. So no object type needs an isTypeOf.
  // Every result union also has RateLimitedError (API.md "Rate limits"), so a mutation added later is covered too.
  errors: { directResult: true, defaultTypes: [RateLimitedError] },
  // prismaObject types (docs/decisions.md "Server") are always loaded by their service, which
  // passes Pothos's `query` into its Prisma call. The plugin would use a client only to load
  // what a parent did not (a relation, a missing column): that would be a query behind the
  // service's back, so it fails loudly instead. `dmmf` is passed because Prisma 7 clients no
  // longer carry it.
  prisma: {
    client: (): PrismaClient => {
      throw new Error('A prismaObject field asked the Pothos Prisma plugin to query: load it in its service instead');
    },
    dmmf: getDatamodel(),
  },
});

builder.queryType({});
builder.mutationType({});
