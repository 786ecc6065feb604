import SchemaBuilder from '@pothos/core';
import ErrorsPlugin from '@pothos/plugin-errors';
import ScopeAuthPlugin from '@pothos/plugin-scope-auth';
import { GraphQLError } from 'graphql';
import type { Context } from '../server/context.ts';
import { RequestErrorCode } from '../server/domain/errors.ts';

/** The Pothos builder and its plugins. Defines no types: see ./modules. */

export interface AuthScopes {
  user: boolean;
  admin: boolean;
  machine: boolean;
  service: boolean;
}

export const builder = new SchemaBuilder<{
  Context: Context;
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
  plugins: [ScopeAuthPlugin, ErrorsPlugin],
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
  errors: { directResult: true },
});

builder.queryType({});
builder.mutationType({});
