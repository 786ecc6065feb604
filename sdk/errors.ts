/**
 * One error type for every failure the SDK reports, so callers branch on `kind`, `code` and
 * `retryable`, never on messages.
 *
 * - `domain`: an expected outcome the API returns as a typed union member implementing `Error`
 *   (`LORA_NOT_FOUND`, `QUOTA_EXCEEDED`, …); `details` is that member with all its fields.
 * - `graphql`: a thrown GraphQL error (`UNAUTHENTICATED`, `FORBIDDEN`, `BAD_USER_INPUT`,
 *   `RATE_LIMITED`, `INTERNAL_SERVER_ERROR`, …), `code` from `extensions.code`.
 * - `network`: the request did not get a GraphQL answer: connection refused or reset, timeout,
 *   a 5xx or 429 without a GraphQL body, a WebSocket closed abnormally.
 *
 * A rate limit (`RATE_LIMITED`, as a `RateLimitedError` member, a thrown error, or an HTTP 429)
 * sets `retryAfterSeconds`: wait that long before the same call.
 */

import type { ErrorCode } from './gql/graphql.ts';

export type LoraSdkErrorKind = 'network' | 'graphql' | 'domain';

/** Codes of thrown GraphQL errors that a later identical request may not meet again. */
const RETRYABLE_GRAPHQL_CODES = new Set(['RATE_LIMITED', 'INTERNAL_SERVER_ERROR', 'SERVICE_UNAVAILABLE']);
/** Domain codes a retry of the same request can fix (the upload stream was cut, or too many ran at once; nothing was stored). */
const RETRYABLE_DOMAIN_CODES = new Set<string>(['UPLOAD_INTERRUPTED', 'TOO_MANY_UPLOADS', 'RATE_LIMITED']);

export interface GraphQLErrorLike {
  message: string;
  path?: readonly (string | number)[];
  extensions?: Record<string, unknown>;
}

export interface LoraSdkErrorOptions {
  kind: LoraSdkErrorKind;
  code: string;
  message: string;
  retryable: boolean;
  /** HTTP status, when there was a response. */
  status?: number;
  /** Every GraphQL error of the response (kind 'graphql'). */
  graphqlErrors?: readonly GraphQLErrorLike[];
  /** The union member (kind 'domain'), e.g. a QuotaExceededError with its figures. */
  details?: { __typename: string; code: string; message: string } & Record<string, unknown>;
  /** Seconds to wait before retrying, when a rate limit refused the call. */
  retryAfterSeconds?: number;
  cause?: unknown;
}

export class LoraSdkError extends Error {
  override readonly name = 'LoraSdkError';
  readonly kind: LoraSdkErrorKind;
  /** A domain `ErrorCode`, a GraphQL `extensions.code`, or a network code (`NETWORK_ERROR`, `TIMEOUT`, `HTTP_503`, `ABORTED`, …). */
  readonly code: ErrorCode | (string & {});
  readonly retryable: boolean;
  readonly status: number | undefined;
  readonly graphqlErrors: readonly GraphQLErrorLike[];
  readonly details: LoraSdkErrorOptions['details'];
  /** `RATE_LIMITED`: whole seconds until the limit lets the same call through (from the error, or HTTP `Retry-After`). */
  readonly retryAfterSeconds: number | undefined;

  constructor(options: LoraSdkErrorOptions) {
    super(options.message, options.cause === undefined ? undefined : { cause: options.cause });
    this.kind = options.kind;
    this.code = options.code;
    this.retryable = options.retryable;
    this.status = options.status;
    this.graphqlErrors = options.graphqlErrors ?? [];
    this.details = options.details;
    this.retryAfterSeconds = options.retryAfterSeconds;
  }

  static network(
    code: string,
    message: string,
    options: { status?: number; cause?: unknown; retryable?: boolean; retryAfterSeconds?: number | undefined } = {},
  ): LoraSdkError {
    return new LoraSdkError({
      kind: 'network',
      code,
      message,
      retryable: options.retryable ?? true,
      ...(options.status === undefined ? {} : { status: options.status }),
      ...seconds(options.retryAfterSeconds),
      cause: options.cause,
    });
  }

  static graphql(errors: readonly GraphQLErrorLike[], status?: number, retryAfterHeader?: string | null): LoraSdkError {
    const first = errors[0];
    const code = typeof first?.extensions?.code === 'string' ? first.extensions.code : 'GRAPHQL_ERROR';
    return new LoraSdkError({
      kind: 'graphql',
      code,
      message: first?.message ?? 'GraphQL error',
      retryable: RETRYABLE_GRAPHQL_CODES.has(code) || (status !== undefined && (status >= 500 || status === 429)),
      graphqlErrors: errors,
      ...(status === undefined ? {} : { status }),
      ...seconds(first?.extensions?.retryAfterSeconds ?? retryAfterSeconds(retryAfterHeader)),
    });
  }

  static domain(details: { __typename: string; code: string; message: string }): LoraSdkError {
    return new LoraSdkError({
      kind: 'domain',
      code: details.code,
      message: details.message,
      retryable: RETRYABLE_DOMAIN_CODES.has(details.code),
      details: details as LoraSdkErrorOptions['details'],
      ...seconds((details as { retryAfterSeconds?: unknown }).retryAfterSeconds),
    });
  }
}

/** `{ retryAfterSeconds }` when `value` is a usable number of seconds, else nothing. */
function seconds(value: unknown): { retryAfterSeconds?: number } {
  return typeof value === 'number' && Number.isFinite(value) && value >= 0 ? { retryAfterSeconds: value } : {};
}

/** An HTTP `Retry-After` in seconds (delta-seconds or an HTTP date); undefined when absent or unreadable. */
export function retryAfterSeconds(header: string | null | undefined): number | undefined {
  if (!header) return undefined;
  if (/^\d+$/.test(header.trim())) return Number(header.trim());
  const at = Date.parse(header);
  return Number.isNaN(at) ? undefined : Math.max(0, Math.ceil((at - Date.now()) / 1000));
}

export function isLoraSdkError(error: unknown): error is LoraSdkError {
  return error instanceof LoraSdkError;
}

/** The JSON body of a GraphQL HTTP response. */
export interface GraphQLResponseBody<T> {
  data?: T | null;
  errors?: GraphQLErrorLike[];
}

/**
 * Turns an HTTP answer into data or a LoraSdkError. A body with GraphQL errors is a 'graphql'
 * error whatever the status; a 5xx/429/408 without one is a retryable 'network' error.
 */
export function resultFromResponse<T>(status: number, text: string, retryAfter?: string | null): T {
  let body: GraphQLResponseBody<T> | undefined;
  try {
    body = JSON.parse(text) as GraphQLResponseBody<T>;
  } catch {
    body = undefined;
  }
  if (body && Array.isArray(body.errors) && body.errors.length > 0) throw LoraSdkError.graphql(body.errors, status, retryAfter);
  if (status >= 200 && status < 300 && body && body.data !== undefined && body.data !== null) return body.data;
  const retryable = status >= 500 || status === 429 || status === 408 || status === 0;
  throw LoraSdkError.network(`HTTP_${status}`, `Unexpected response from the API (HTTP ${status})`, {
    status,
    retryable,
    retryAfterSeconds: retryAfterSeconds(retryAfter),
  });
}

/** A network failure (fetch threw, a socket errored) as a LoraSdkError. */
export function networkError(error: unknown, timedOut = false): LoraSdkError {
  if (error instanceof LoraSdkError) return error;
  if (timedOut) return LoraSdkError.network('TIMEOUT', 'The request timed out', { cause: error });
  const name = (error as { name?: string } | null)?.name;
  if (name === 'AbortError') return LoraSdkError.network('ABORTED', 'The request was aborted', { cause: error, retryable: false });
  if (name === 'TimeoutError') return LoraSdkError.network('TIMEOUT', 'The request timed out', { cause: error });
  const message = error instanceof Error ? error.message : String(error);
  return LoraSdkError.network('NETWORK_ERROR', `Network error: ${message}`, { cause: error });
}
