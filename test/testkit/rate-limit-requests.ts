import { expect } from 'vitest';
import type { GqlResponse } from './server.ts';

/** The hand-written requests and checks of the rate-limit suites (rate-limits, rate-limits-replicas). */

/** A user mutation whose refusal is typed (RATE_LIMITED with retryAfterSeconds). */
export const UPDATE_LORA =
  'mutation($id: ID!, $name: String) { updateLora(id: $id, name: $name) { __typename ... on Error { code } ... on RateLimitedError { retryAfterSeconds } } }';

/** A machine mutation whose refusal is thrown (its result is a Boolean). */
export const REPORT_CACHE_STATS = 'mutation($input: CacheStatsInput!) { reportCacheStats(input: $input) }';

/** Expects a thrown RATE_LIMITED: its retryAfterSeconds. */
export function rateLimitedSeconds(res: GqlResponse): number {
  const error = res.body.errors?.[0];
  expect(error?.extensions?.code, JSON.stringify(res.body)).toBe('RATE_LIMITED');
  return error?.extensions?.retryAfterSeconds as number;
}
