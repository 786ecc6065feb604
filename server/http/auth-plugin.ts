import { GraphQLError, NoSchemaIntrospectionCustomRule } from 'graphql';
import type { Plugin } from 'graphql-yoga';
import { ANONYMOUS, type Principal } from '../auth/principal.ts';
import { InvalidTokenError, type TokenVerifier } from '../auth/tokens.ts';
import { RequestErrorCode } from '../domain/errors.ts';

/**
 * Authenticates each request once, before validation, so that validation rules (introspection
 * for admins only in production) and the context factory both see the same principal.
 * No token = anonymous (the schema's scopes refuse what needs one); a bad token = UNAUTHENTICATED.
 */

const principals = new WeakMap<Request, Promise<Principal>>();

export function bearerToken(header: string | null): string | null {
  if (!header) return null;
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
  return match?.[1] ?? null;
}

export function principalOf(request: Request): Promise<Principal> {
  return principals.get(request) ?? Promise.resolve(ANONYMOUS);
}

export function useAuth(options: { verify: TokenVerifier; introspectionForAdminsOnly: boolean }): Plugin {
  const resolved = new WeakMap<Request, Principal>();
  return {
    onRequest({ request }) {
      const token = bearerToken(request.headers.get('authorization'));
      const pending = token
        ? options.verify(token).catch((error: unknown) => {
            if (error instanceof InvalidTokenError) {
              throw new GraphQLError('Invalid or expired token', {
                extensions: { code: RequestErrorCode.UNAUTHENTICATED, http: { status: 401 } },
              });
            }
            throw error;
          })
        : Promise.resolve(ANONYMOUS);
      pending.catch(() => {}); // surfaced by onParams / the context factory
      principals.set(request, pending);
    },
    async onParams({ request }) {
      resolved.set(request, await principalOf(request));
    },
    onValidate({ context, addValidationRule }) {
      if (!options.introspectionForAdminsOnly) return;
      const { request, principal: wsPrincipal } = context as { request?: Request; principal?: Principal };
      const principal = wsPrincipal ?? (request ? resolved.get(request) : undefined);
      if (principal?.role !== 'admin') addValidationRule(NoSchemaIntrospectionCustomRule);
    },
  };
}
