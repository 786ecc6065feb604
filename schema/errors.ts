import {
  AccountDeletedError,
  type DomainError,
  ErrorCode,
  FileTooLargeError,
  InvalidFileError,
  InvalidGrantError,
  NotFoundError,
  QuotaExceededError,
  RateLimitedError,
  TooManyUploadsError,
  UnsafeFileError,
  UploadInterruptedError,
  UploadSessionNotFoundError,
  ValidationError,
} from '../server/domain/errors.ts';
import { builder } from './builder.ts';

/** The `Error` interface and one object type per domain error class (API.md "Error codes"). */

export const ErrorCodeEnum = builder.enumType('ErrorCode', { values: Object.values(ErrorCode) });

export const ErrorInterface = builder.interfaceRef<DomainError>('Error').implement({
  description: 'Every expected failure: branch on `code`, show `message`.',
  fields: (t) => ({
    code: t.field({ type: ErrorCodeEnum, resolve: (e) => e.code }),
    message: t.exposeString('message'),
  }),
});

builder.objectType(NotFoundError, {
  name: 'NotFoundError',
  description: 'The LoRA does not exist or is not yours (indistinguishable on purpose).',
  interfaces: [ErrorInterface],
  fields: (t) => ({ loraId: t.exposeID('loraId') }),
});

builder.objectType(QuotaExceededError, {
  name: 'QuotaExceededError',
  interfaces: [ErrorInterface],
  fields: (t) => ({
    currentUsageBytes: t.field({ type: 'Bytes', resolve: (e) => e.figures.currentUsageBytes }),
    maxQuotaBytes: t.field({ type: 'Bytes', resolve: (e) => e.figures.maxQuotaBytes }),
    availableBytes: t.field({ type: 'Bytes', resolve: (e) => e.figures.availableBytes }),
    currentCount: t.int({ resolve: (e) => e.figures.currentCount }),
    maxCount: t.int({ resolve: (e) => e.figures.maxCount }),
  }),
});

builder.objectType(InvalidGrantError, {
  name: 'InvalidGrantError',
  description: 'The job grant is missing, forged, expired, or malformed.',
  interfaces: [ErrorInterface],
  fields: (t) => ({ reason: t.exposeString('reason') }),
});

const ValidationIssue = builder.objectRef<{ path: string; message: string }>('ValidationIssue').implement({
  fields: (t) => ({ path: t.exposeString('path'), message: t.exposeString('message') }),
});

builder.objectType(ValidationError, {
  name: 'ValidationError',
  interfaces: [ErrorInterface],
  fields: (t) => ({ issues: t.field({ type: [ValidationIssue], resolve: (e) => e.issues }) }),
});

builder.objectType(InvalidFileError, {
  name: 'InvalidFileError',
  description: 'The bytes are not a LoRA we accept (decided by content, never by the extension).',
  interfaces: [ErrorInterface],
  fields: (t) => ({
    detectedFormat: t.exposeString('detectedFormat', { description: 'safetensors, pt-zip, pt-pickle, png, empty, unknown, …' }),
    reason: t.exposeString('reason', { description: 'Which check failed' }),
  }),
});

const UnsafeFinding = builder.objectRef<UnsafeFileError['findings'][number]>('UnsafeFinding').implement({
  fields: (t) => ({
    kind: t.exposeString('kind'),
    detail: t.exposeString('detail', { description: 'e.g. os.system' }),
    location: t.exposeString('location', { description: 'Which pickle in the file' }),
  }),
});

builder.objectType(UnsafeFileError, {
  name: 'UnsafeFileError',
  description: 'A .pt whose pickle imports something outside the allowlist (it is never unpickled).',
  interfaces: [ErrorInterface],
  fields: (t) => ({ findings: t.field({ type: [UnsafeFinding], resolve: (e) => e.findings }) }),
});

builder.objectType(FileTooLargeError, {
  name: 'FileTooLargeError',
  interfaces: [ErrorInterface],
  fields: (t) => ({ maxBytes: t.field({ type: 'Bytes', resolve: (e) => e.maxBytes }) }),
});

builder.objectType(UploadInterruptedError, {
  name: 'UploadInterruptedError',
  description: 'The upload stream ended before the file did; nothing was stored.',
  interfaces: [ErrorInterface],
  fields: () => ({}),
});

const UploadLimitScopeEnum = builder.enumType('UploadLimitScope', {
  description: 'USER: your own uploads running at once; PROCESS: all uploads on the server process that took the request.',
  values: ['USER', 'PROCESS'] as const,
});

builder.objectType(TooManyUploadsError, {
  name: 'TooManyUploadsError',
  description: 'Too many uploads at once; nothing was read or stored. Retry when one of yours has finished (USER) or shortly (PROCESS).',
  interfaces: [ErrorInterface],
  fields: (t) => ({
    scope: t.field({ type: UploadLimitScopeEnum, resolve: (e) => e.scope }),
    limit: t.exposeInt('limit'),
  }),
});

builder.objectType(AccountDeletedError, {
  name: 'AccountDeletedError',
  description:
    "The user's LoRA account is deleted: no uploads or job grants; for cancelUserLoraAccountDeletion, the purge has started (nothing can be restored).",
  interfaces: [ErrorInterface],
  fields: (t) => ({
    userId: t.exposeID('userId'),
    purgeAfter: t.expose('purgeAfter', { type: 'DateTime' }),
    purgeStarted: t.exposeBoolean('purgeStarted'),
  }),
});

builder.objectType(RateLimitedError, {
  name: 'RateLimitedError',
  description: 'A rate limit refused the operation; nothing was done. Retry after retryAfterSeconds (API.md "Rate limits").',
  interfaces: [ErrorInterface],
  fields: (t) => ({
    retryAfterSeconds: t.exposeInt('retryAfterSeconds', { description: 'Whole seconds until the limit lets you through again (≥ 1)' }),
  }),
});

builder.objectType(UploadSessionNotFoundError, {
  name: 'UploadSessionNotFoundError',
  description: 'The upload session does not exist or is not yours (indistinguishable on purpose).',
  interfaces: [ErrorInterface],
  fields: (t) => ({ sessionId: t.exposeID('sessionId') }),
});
