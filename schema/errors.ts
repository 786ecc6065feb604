import {
  type DomainError,
  ErrorCode,
  InvalidGrantError,
  LoraNotFoundError,
  QuotaExceededError,
  ValidationFailedError,
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

builder.objectType(LoraNotFoundError, {
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

builder.objectType(ValidationFailedError, {
  name: 'ValidationError',
  interfaces: [ErrorInterface],
  fields: (t) => ({ issues: t.field({ type: [ValidationIssue], resolve: (e) => e.issues }) }),
});
