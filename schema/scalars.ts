import { GraphQLError, Kind } from 'graphql';
import { JSONResolver } from 'graphql-scalars';
import { RequestErrorCode } from '../server/domain/errors.ts';
import { builder } from './builder.ts';

builder.addScalarType('JSON', JSONResolver);

function toBytes(value: unknown): number {
  const n = typeof value === 'bigint' ? Number(value) : value;
  if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 0) {
    throw new GraphQLError(`Bytes must be a non-negative safe integer, got ${String(value)}`, {
      extensions: { code: RequestErrorCode.BAD_USER_INPUT },
    });
  }
  return n;
}

/** Byte counts beyond Int's 32 bits (2 GiB = 2,147,483,648): a non-negative safe integer, as a JSON number. */
builder.scalarType('Bytes', {
  description: 'A byte count: a non-negative integer up to 2^53 - 1, serialized as a JSON number.',
  serialize: toBytes,
  parseValue: toBytes,
  parseLiteral: (ast) => {
    if (ast.kind !== Kind.INT)
      throw new GraphQLError('Bytes must be an integer literal', { extensions: { code: RequestErrorCode.BAD_USER_INPUT } });
    return toBytes(Number(ast.value));
  },
});

const ISO_DATE_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$/;

function toDate(value: unknown): Date {
  const date = typeof value === 'string' && ISO_DATE_TIME.test(value) ? new Date(value) : undefined;
  if (!date || Number.isNaN(date.getTime())) {
    throw new GraphQLError('DateTime must be an RFC 3339 date-time, e.g. 2026-01-31T12:00:00Z', {
      extensions: { code: RequestErrorCode.BAD_USER_INPUT },
    });
  }
  return date;
}

/** Instants as RFC 3339 strings in UTC (`Date#toISOString`): cheap on lists of hundreds of rows. */
builder.scalarType('DateTime', {
  description: 'An instant, as an RFC 3339 date-time string in UTC, e.g. 2026-01-31T12:00:00.000Z.',
  specifiedByURL: 'https://datatracker.ietf.org/doc/html/rfc3339',
  serialize: (value) => (value instanceof Date ? value.toISOString() : toDate(value).toISOString()),
  parseValue: toDate,
  parseLiteral: (ast) => toDate(ast.kind === Kind.STRING ? ast.value : undefined),
});
