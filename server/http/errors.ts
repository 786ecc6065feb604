import { GraphQLError } from 'graphql';
import type { Logger } from 'pino';
import { DomainError, RateLimitedError, RequestError, RequestErrorCode, ValidationError } from '../domain/errors.ts';

/**
 * Turns every error leaving the server into a GraphQLError with `extensions.code`, keeping its
 * location and path. Deliberate errors keep their message; errors graphql-js raises about the
 * request (bad variables, unknown enum values) are BAD_USER_INPUT; anything else is logged and
 * masked (its message shown only outside production). In production, "Did you mean …?"
 * suggestions are removed so schema names do not leak to callers without introspection.
 */
export function createMaskError(logger: Logger, production: boolean) {
  return (error: unknown, message: string): Error => {
    const located = error instanceof GraphQLError ? error : undefined;
    const original = located?.originalError ?? error;
    const where = { nodes: located?.nodes, path: located?.path };
    if (located?.extensions?.code) return production ? withoutSuggestions(located) : located;
    if (original instanceof ValidationError) {
      return new GraphQLError(original.message, {
        ...where,
        extensions: { code: RequestErrorCode.BAD_USER_INPUT, issues: original.issues },
      });
    }
    if (original instanceof RateLimitedError) {
      return new GraphQLError(original.message, { ...where, extensions: rateLimitedExtensions(original) });
    }
    if (original instanceof DomainError || original instanceof RequestError) {
      return new GraphQLError(original.message, { ...where, extensions: { code: original.code } });
    }
    if (located && (!located.originalError || located.originalError instanceof GraphQLError)) {
      // graphql-js (or Yoga) complaining about the request itself
      const extensions = { ...located.extensions, code: RequestErrorCode.BAD_USER_INPUT };
      const text = production ? stripSuggestions(located.message) : located.message;
      return new GraphQLError(text, { ...where, extensions });
    }
    logger.error({ err: original, path: located?.path }, 'unexpected error');
    return new GraphQLError(production ? message : describe(original), {
      ...where,
      extensions: { code: RequestErrorCode.INTERNAL_SERVER_ERROR },
    });
  };
}

/** A thrown RATE_LIMITED's extensions: the code and the seconds to wait (API.md "Rate limits"). */
export function rateLimitedExtensions(error: RateLimitedError): { code: string; retryAfterSeconds: number } {
  return { code: RequestErrorCode.RATE_LIMITED, retryAfterSeconds: error.retryAfterSeconds };
}

/** A refusal before GraphQL runs: HTTP 429 with `Retry-After`, and the same code and seconds in the body. */
export function tooManyRequests(error: RateLimitedError): GraphQLError {
  return new GraphQLError(error.message, {
    extensions: {
      ...rateLimitedExtensions(error),
      http: { status: 429, headers: { 'retry-after': String(error.retryAfterSeconds) } },
    },
  });
}

export function stripSuggestions(text: string): string {
  return text.replace(/\s*Did you mean [^?]*\?/g, '');
}

export function withoutSuggestions(error: GraphQLError): GraphQLError {
  const text = stripSuggestions(error.message);
  if (text === error.message) return error;
  return new GraphQLError(text, { nodes: error.nodes, path: error.path, extensions: error.extensions });
}

/** Outside production: what went wrong, for the developer (e.g. "RestError (HTTP 403): …"). */
function describe(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const status = (error as { statusCode?: unknown }).statusCode;
  return `${error.name}${typeof status === 'number' ? ` (HTTP ${status})` : ''}: ${error.message}`;
}
