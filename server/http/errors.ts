import { GraphQLError } from 'graphql';
import type { Logger } from 'pino';
import { DomainError, RequestError, RequestErrorCode, ValidationFailedError } from '../domain/errors.ts';

/**
 * Turns errors thrown outside a typed result union into GraphQLErrors with `extensions.code`.
 * Deliberate errors keep their message; anything unexpected is logged and masked (message and
 * stack hidden unless `expose`).
 */
export function createMaskError(logger: Logger, expose: boolean) {
  return (error: unknown, message: string): Error => {
    const original = error instanceof GraphQLError && error.originalError ? error.originalError : error;
    const path = error instanceof GraphQLError ? error.path : undefined;
    if (original instanceof GraphQLError && original.extensions?.code) return original;
    if (original instanceof ValidationFailedError) {
      return new GraphQLError(original.message, {
        path,
        extensions: { code: RequestErrorCode.BAD_USER_INPUT, issues: original.issues },
      });
    }
    if (original instanceof DomainError) {
      return new GraphQLError(original.message, { path, extensions: { code: original.code } });
    }
    if (original instanceof RequestError) {
      return new GraphQLError(original.message, { path, extensions: { code: original.code } });
    }
    if (error instanceof GraphQLError && !error.originalError) return error; // parse/validation errors
    logger.error({ err: original, path }, 'unexpected error');
    return new GraphQLError(expose ? String((original as Error)?.message ?? message) : message, {
      path,
      extensions: { code: RequestErrorCode.INTERNAL_SERVER_ERROR },
    });
  };
}
