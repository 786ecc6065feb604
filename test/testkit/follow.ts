import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import type { Client } from 'graphql-ws';
import { expect } from 'vitest';
import { type CacheEventsSubscription, ReportCacheEventDocument } from '../../sdk/index.ts';
import { dataOf } from './graphql-assertions.ts';
import type { TestServer } from './server.ts';

/**
 * Subscriptions followed as they run (graphql-ws): every result with its arrival time, waited for
 * by content; and the wait until a cacheEvents subscription is live end to end (graphql-ws does
 * not acknowledge a subscribe, so a probe event is reported until the subscriber sees it).
 */

/** One live subscription: every result with the time it arrived (performance.now()). */
export interface Follower<T> {
  values: { value: T; receivedAt: number }[];
  errors: unknown[];
  completed: boolean;
  /** Resolves with the first arrival for which `match` holds (already arrived or not). */
  waitFor(match: (value: T) => boolean, timeoutMs: number, what: string): Promise<{ value: T; receivedAt: number }>;
  /** Resolves once the subscription completed. */
  waitComplete(timeoutMs: number): Promise<void>;
}

export function follow<T>(client: Client, query: string, variables: Record<string, unknown> = {}): Follower<T> {
  const f: Follower<T> = {
    values: [],
    errors: [],
    completed: false,
    async waitFor(match, timeoutMs, what) {
      const deadline = performance.now() + timeoutMs;
      for (;;) {
        const hit = f.values.find((v) => match(v.value));
        if (hit) return hit;
        if (f.errors.length || f.completed || performance.now() > deadline) {
          throw new Error(
            `no ${what} within ${timeoutMs} ms (completed: ${f.completed}; errors: ${JSON.stringify(f.errors)}; got: ${JSON.stringify(f.values.map((v) => v.value))})`,
          );
        }
        await new Promise((r) => setTimeout(r, 5));
      }
    },
    async waitComplete(timeoutMs) {
      const deadline = performance.now() + timeoutMs;
      while (!f.completed) {
        if (performance.now() > deadline) throw new Error(`subscription did not complete within ${timeoutMs} ms`);
        await new Promise((r) => setTimeout(r, 5));
      }
    },
  };
  client.subscribe<T>(
    { query, variables },
    {
      next: (result) => {
        if (result.errors) f.errors.push(...result.errors);
        if (result.data) f.values.push({ value: result.data as T, receivedAt: performance.now() });
      },
      error: (error) => {
        f.errors.push(error);
      },
      complete: () => {
        f.completed = true;
      },
    },
  );
  return f;
}

/**
 * Waits until a cacheEvents subscription is live end to end (its replica's Redis SUBSCRIBE done,
 * its listener registered): a machine reports a probe event to `server` until `follower` sees it.
 * The probe reaches `follower` only if it is an admin or that same machine.
 */
export async function cacheEventsLive(
  server: TestServer,
  machineToken: string,
  follower: Follower<CacheEventsSubscription>,
): Promise<void> {
  const probe = `probe/${randomUUID()}`;
  const deadline = performance.now() + 5_000;
  for (;;) {
    const res = await server.request(
      ReportCacheEventDocument,
      { input: { type: 'DOWNLOADED', sharedName: probe } },
      { token: machineToken },
    );
    expect(dataOf(res).reportCacheEvent).toMatchObject({ __typename: 'CacheEvent', sharedName: probe });
    try {
      await follower.waitFor((v) => v.cacheEvents.sharedName === probe, 200, 'probe');
      return;
    } catch (error) {
      if (performance.now() > deadline) throw error;
    }
  }
}
