import { GraphQLError, Kind } from 'graphql';
import { DateTimeResolver, JSONResolver } from 'graphql-scalars';
import { builder } from './builder.ts';

builder.addScalarType('DateTime', DateTimeResolver);
builder.addScalarType('JSON', JSONResolver);

function toBytes(value: unknown): number {
  const n = typeof value === 'bigint' ? Number(value) : value;
  if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 0) {
    throw new GraphQLError(`Bytes must be a non-negative safe integer, got ${String(value)}`, {
      extensions: { code: 'BAD_USER_INPUT' },
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
    if (ast.kind !== Kind.INT) throw new GraphQLError('Bytes must be an integer literal', { extensions: { code: 'BAD_USER_INPUT' } });
    return toBytes(Number(ast.value));
  },
});
