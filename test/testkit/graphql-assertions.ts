import { expect } from 'vitest';
import type { GqlResponse } from './server.ts';

/** Assertions on GraphQL responses shared by the auth, grant, limit and production-mode suites. */

export type Res = GqlResponse<Record<string, any>>;

export function codes(res: Res): unknown[] {
  return (res.body.errors ?? []).map((e) => e.extensions?.code);
}

/** A thrown GraphQL error with exactly this code, and no data at all. */
export function expectRefused(res: Res, code: string): void {
  expect(res.body.data ?? null, JSON.stringify(res.body)).toBeNull();
  expect(codes(res), JSON.stringify(res.body)).toEqual([code]);
}

/** Refused before execution: a 4xx or a GraphQL error, never data. */
export function expectRejectedBeforeExecution(res: Res): void {
  expect(res.body.data ?? null, JSON.stringify(res.body)).toBeNull();
  expect(res.body.errors?.length ?? 0, JSON.stringify(res.body)).toBeGreaterThan(0);
  expect(res.status === 200 || (res.status >= 400 && res.status < 500), `status ${res.status}`).toBe(true);
}

/** Replaces the id in string values (loraId, "LoRA with ID <id> not found…") so responses can be compared. */
export function withoutId(body: unknown, id: string): unknown {
  const json = JSON.stringify(body, (_key, value: unknown) => {
    if (typeof value !== 'string') return value;
    if (value === id) return '<ID>';
    return value.split(`ID ${id} not found`).join('ID <ID> not found');
  });
  return JSON.parse(json);
}

/** The response's data, failing the test (with the body) on any error or on missing data. */
export function dataOf<T>(res: GqlResponse<T>): T {
  expect(res.body.errors, JSON.stringify(res.body)).toBeUndefined();
  const data = res.body.data;
  if (data === undefined || data === null) throw new Error(`no data: ${JSON.stringify(res.body)}`);
  return data;
}

/** The member of a result union with this `__typename`, narrowed; fails the test on any other. */
export function member<T extends { __typename: string }, K extends T['__typename']>(
  value: T | null | undefined,
  typename: K,
): Extract<T, { __typename: K }> {
  expect(value?.__typename, JSON.stringify(value)).toBe(typename);
  return value as Extract<T, { __typename: K }>;
}
