/**
 * Domain outcomes a client must branch on (API.md "Error codes"). Services throw these; the
 * schema's errors plugin turns each into a typed member of the mutation/query result union.
 * Each class carries the name of its GraphQL type (`NotFoundError` is the type `NotFoundError`).
 * One place for every code: domain codes (`ErrorCode`) and thrown request codes (`RequestErrorCode`).
 */

export const ErrorCode = {
  LORA_NOT_FOUND: 'LORA_NOT_FOUND',
  QUOTA_EXCEEDED: 'QUOTA_EXCEEDED',
  INVALID_FILE_FORMAT: 'INVALID_FILE_FORMAT',
  FILE_TOO_LARGE: 'FILE_TOO_LARGE',
  UNSAFE_FILE: 'UNSAFE_FILE',
  UPLOAD_INTERRUPTED: 'UPLOAD_INTERRUPTED',
  INVALID_GRANT: 'INVALID_GRANT',
  VALIDATION_FAILED: 'VALIDATION_FAILED',
  TOO_MANY_UPLOADS: 'TOO_MANY_UPLOADS',
  ACCOUNT_DELETED: 'ACCOUNT_DELETED',
  RATE_LIMITED: 'RATE_LIMITED',
  UPLOAD_SESSION_NOT_FOUND: 'UPLOAD_SESSION_NOT_FOUND',
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/** Codes of thrown GraphQLErrors (`extensions.code`). */
export const RequestErrorCode = {
  UNAUTHENTICATED: 'UNAUTHENTICATED',
  FORBIDDEN: 'FORBIDDEN',
  BAD_USER_INPUT: 'BAD_USER_INPUT',
  RATE_LIMITED: 'RATE_LIMITED',
  INTERNAL_SERVER_ERROR: 'INTERNAL_SERVER_ERROR',
  /** A persisted-query hash the server does not know (the code persisted-query clients look for). */
  PERSISTED_QUERY_NOT_FOUND: 'PERSISTED_QUERY_NOT_FOUND',
} as const;
export type RequestErrorCode = (typeof RequestErrorCode)[keyof typeof RequestErrorCode];

export abstract class DomainError extends Error {
  abstract readonly code: ErrorCode;
}

export class NotFoundError extends DomainError {
  override name = 'NotFoundError';
  readonly code = ErrorCode.LORA_NOT_FOUND;
  constructor(readonly loraId: string) {
    super(`LoRA with ID ${loraId} not found or access denied`);
  }
}

/** A resumable upload session that does not exist or is not yours (indistinguishable on purpose). */
export class UploadSessionNotFoundError extends DomainError {
  override name = 'UploadSessionNotFoundError';
  readonly code = ErrorCode.UPLOAD_SESSION_NOT_FOUND;
  constructor(readonly sessionId: string) {
    super(`Upload session ${sessionId} not found or access denied`);
  }
}

export interface QuotaFigures {
  currentUsageBytes: number;
  maxQuotaBytes: number;
  availableBytes: number;
  currentCount: number;
  maxCount: number;
}

export class QuotaExceededError extends DomainError {
  override name = 'QuotaExceededError';
  readonly code = ErrorCode.QUOTA_EXCEEDED;
  constructor(
    readonly figures: QuotaFigures,
    message = 'LoRA storage quota exceeded',
  ) {
    super(message);
  }
}

export class InvalidGrantError extends DomainError {
  override name = 'InvalidGrantError';
  readonly code = ErrorCode.INVALID_GRANT;
  constructor(readonly reason: string) {
    super(`Job grant is missing, expired, or not valid for this request (${reason})`);
  }
}

export interface ValidationIssue {
  path: string;
  message: string;
}

export class ValidationError extends DomainError {
  override name = 'ValidationError';
  readonly code = ErrorCode.VALIDATION_FAILED;
  constructor(readonly issues: ValidationIssue[]) {
    super(`Invalid arguments: ${issues.map((i) => `${i.path}: ${i.message}`).join('; ')}`);
  }
}

/** The bytes are not a LoRA we accept (decided by content, never by the extension). */
export class InvalidFileError extends DomainError {
  override name = 'InvalidFileError';
  readonly code = ErrorCode.INVALID_FILE_FORMAT;
  constructor(
    /** What the bytes look like: safetensors, pt-zip, pt-pickle, zip, png, empty, unknown, … */
    readonly detectedFormat: string,
    /** Which check failed, in words a user can act on. */
    readonly reason: string,
  ) {
    super(`Invalid LoRA file (${detectedFormat}): ${reason}`);
  }
}

export interface UnsafeFinding {
  /** e.g. GLOBAL / STACK_GLOBAL / REDUCE / unknown-opcode */
  kind: string;
  /** e.g. "os.system", "builtins.eval" */
  detail: string;
  /** Which pickle inside the file (archive entry name, or "<file>" for a legacy pickle). */
  location: string;
}

/** A .pt whose pickle would run or import something outside the allowlist. */
export class UnsafeFileError extends DomainError {
  override name = 'UnsafeFileError';
  readonly code = ErrorCode.UNSAFE_FILE;
  constructor(readonly findings: UnsafeFinding[]) {
    super(`Unsafe file: its pickle imports ${findings.map((f) => f.detail).join(', ') || 'something not allowed'}`);
  }
}

export class FileTooLargeError extends DomainError {
  override name = 'FileTooLargeError';
  readonly code = ErrorCode.FILE_TOO_LARGE;
  constructor(readonly maxBytes: number) {
    super(`File is larger than the limit of ${maxBytes} bytes`);
  }
}

export class UploadInterruptedError extends DomainError {
  override name = 'UploadInterruptedError';
  readonly code = ErrorCode.UPLOAD_INTERRUPTED;
  constructor(reason = 'the upload stream ended early') {
    super(`Upload interrupted: ${reason}`);
  }
}

/** Which concurrency limit refused an upload. */
export type UploadLimitScope = 'USER' | 'PROCESS';

/** Too many uploads at once (per user, or on this server process): retry when one has finished. */
export class TooManyUploadsError extends DomainError {
  override name = 'TooManyUploadsError';
  readonly code = ErrorCode.TOO_MANY_UPLOADS;
  constructor(
    readonly scope: UploadLimitScope,
    readonly limit: number,
  ) {
    super(
      scope === 'USER'
        ? `Too many uploads at once: at most ${limit} per user; retry when one has finished`
        : `The server is busy with ${limit} uploads; retry shortly`,
    );
  }
}

/**
 * The user's LoRA account was deleted (deleteUserLoraAccount): no new uploads or job grants for
 * them; for an admin's cancel, the purge has already started or run.
 */
export class AccountDeletedError extends DomainError {
  override name = 'AccountDeletedError';
  readonly code = ErrorCode.ACCOUNT_DELETED;
  constructor(
    readonly userId: string,
    readonly purgeAfter: Date,
    readonly purgeStarted: boolean,
  ) {
    super(
      purgeStarted
        ? `The LoRA account of user ${userId} has been purged (or is being purged); it cannot be restored`
        : `The LoRA account of user ${userId} is deleted (purge after ${purgeAfter.toISOString()})`,
    );
  }
}

/**
 * A rate limit refused the operation (API.md "Rate limits"): retry after `retryAfterSeconds`.
 * A typed member of result unions; thrown (`extensions.code` RATE_LIMITED, `extensions.retryAfterSeconds`)
 * where the operation has none.
 */
export class RateLimitedError extends DomainError {
  override name = 'RateLimitedError';
  readonly code = ErrorCode.RATE_LIMITED;
  constructor(
    /** Whole seconds until the limit lets the same caller through again (≥ 1). */
    readonly retryAfterSeconds: number,
    what = 'requests',
  ) {
    super(`Too many ${what}; retry after ${retryAfterSeconds} s`);
  }
}

/** Thrown (not returned) request errors carry one of these codes. */
export class RequestError extends Error {
  override name = 'RequestError';
  constructor(
    readonly code: RequestErrorCode,
    message: string,
  ) {
    super(message);
  }
}
