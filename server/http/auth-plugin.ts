import { GraphQLError, NoSchemaIntrospectionCustomRule } from 'graphql';
import type { Plugin } from 'graphql-yoga';
import { ANONYMOUS, type Principal } from '../auth/principal.ts';
import { InvalidTokenError, type TokenVerifier } from '../auth/tokens.ts';
import { RateLimitedError, RequestErrorCode } from '../domain/errors.ts';
import { Limit, type RateLimits } from '../limits/rate-limits.ts';
import { tooManyRequests } from './errors.ts';

/**
 * Authenticates each request once, before validation, so that validation rules (introspection
 * for admins only in production) and the context factory both see the same principal.
 * No token = anonymous (the schema's scopes refuse what needs one); a bad token = UNAUTHENTICATED.
 * Failed authentications are counted per client IP; while an address is over RATE_LIMIT_AUTH_FAILURES,
 * its requests carrying a token are refused with HTTP 429 + Retry-After before the token is looked at.
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

export interface AuthOptions {
  verify: TokenVerifier;
  introspectionForAdminsOnly: boolean;
  limits: RateLimits;
  /** The client's address, from the Node request Yoga was handed (see client-ip.ts); undefined without one. */
  clientIp: (serverContext: unknown) => string | undefined;
}

export function useAuth(options: AuthOptions): Plugin {
  const resolved = new WeakMap<Request, Principal>();
  return {
    onRequest({ request, serverContext }) {
      const token = bearerToken(request.headers.get('authorization'));
      const ip = options.clientIp(serverContext);
      const pending = token ? authenticate(options, token, ip) : Promise.resolve(ANONYMOUS);
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

/** The token's principal; UNAUTHENTICATED (counted against the IP) or, for an IP over its failures, 429. */
async function authenticate(options: AuthOptions, token: string, ip: string | undefined): Promise<Principal> {
  const [blocked, outcome] = await Promise.all([
    ip ? options.limits.exhausted(Limit.AUTH_FAILURES, ip) : null,
    options.verify(token).catch((error: unknown) => (error instanceof InvalidTokenError ? error : Promise.reject(error))),
  ]);
  if (blocked !== null) throw tooManyRequests(new RateLimitedError(blocked, 'failed authentications from this address'));
  if (outcome instanceof InvalidTokenError) {
    if (ip && !expiredOnly(outcome)) await options.limits.count(Limit.AUTH_FAILURES, ip);
    throw new GraphQLError('Invalid or expired token', {
      extensions: { code: RequestErrorCode.UNAUTHENTICATED, http: { status: 401 } },
    });
  }
  return outcome;
}

/**
 * A token that verified but for its `exp`: an honest client whose token ran out (many may share one
 * address behind NAT), not a guess. It is refused all the same, but not counted against the IP.
 */
export function expiredOnly(error: InvalidTokenError): boolean {
  return (error.cause as { code?: unknown } | undefined)?.code === 'ERR_JWT_EXPIRED';
}
