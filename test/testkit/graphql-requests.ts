/** Raw requests and query builders for the suites that probe the HTTP surface. */

export const CSRF_HEADER: Record<string, string> = { 'x-graphql-yoga-csrf': '1' };

/** A raw fetch whose body is kept as text and, when it parses, as JSON. */
export async function postRaw(url: string, init: RequestInit): Promise<{ status: number; text: string; json: any }> {
  const res = await fetch(url, init);
  const text = await res.text();
  let json: any;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, text, json };
}

/** `... on Type { ` nested n times around `field`: a query n fragments deep. */
export const nestedInlineFragments = (field: string, type: string, n: number) =>
  `${'... on '.concat(type, ' { ').repeat(n)}${field}${' }'.repeat(n)}`;

/** Documents and inputs the role and token suites both send, written by hand on purpose (their selections are compared). */
export const M_SET_QUOTA = 'mutation($u: ID!, $n: Int) { setUserLoraQuota(userId: $u, maxLoraCount: $n) { userId maxLoraCount } }';
export const STATS_INPUT = {
  totalLoraCacheBytes: 3_000_000_000,
  maxLoraCacheBytes: 6_000_000_000,
  userLoraCount: 3,
  sharedLoraCount: 2,
  cacheHitRate24h: 0.5,
  evictions24h: 1,
  oldestLoraAgeDays: 2.5,
};
