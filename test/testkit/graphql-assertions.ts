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
