import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dataOf } from '../testkit/graphql-assertions.ts';
import { STATS_INPUT } from '../testkit/graphql-requests.ts';
import { listLoras, sleep } from '../testkit/library-helpers.ts';
import { sdxlLora } from '../testkit/lora-files.ts';
import { postMultipart } from '../testkit/multipart.ts';
import { REPORT_CACHE_STATS, rateLimitedSeconds, UPDATE_LORA } from '../testkit/rate-limit-requests.ts';
import { type RedisHandle, startRedis } from '../testkit/redis.ts';
import { newUserId, seedLora } from '../testkit/seed.ts';
import { startTestServer, type TestServer } from '../testkit/server.ts';

/**
 * Rate limits across replicas (API.md "Rate limits"): two API servers sharing one real
 * redis-server (started here on a free port) hold one budget per caller between them; without
 * Redis each replica counts alone (the control). With Redis gone, each replica falls back to its
 * own memory: still limited, never hanging. Without redis-server the file reports itself skipped.
 */

const redis = await startRedis();
const skipReason = 'unavailable' in redis ? redis.unavailable : undefined;
if (skipReason) console.warn(`[rate-limits-replicas.test.ts] SKIPPED: ${skipReason}`);

const LIMITS = {
  RATE_LIMIT_USER_MUTATIONS: '4/6',
  RATE_LIMIT_GRANTS: '2/6',
  RATE_LIMIT_AUTH_FAILURES: '3/6',
  TRUST_PROXY_HOPS: '1',
  UPLOAD_CONCURRENCY_PER_USER: '1',
};

const update = async (server: TestServer, token: string, id: string, name: string) =>
  (await server.gql(UPDATE_LORA, { id, name }, { token })).body.data?.updateLora as { __typename: string; retryAfterSeconds?: number };

describe.skipIf(skipReason !== undefined)('two replicas over one redis-server share every budget', () => {
  let a: TestServer;
  let b: TestServer;
  beforeAll(async () => {
    if ('unavailable' in redis) throw new Error('unreachable');
    // one after the other: pg-boss queue creation by two fresh replicas at once can deadlock (replicas.test.ts)
    a = await startTestServer({ ...LIMITS, REDIS_URL: redis.url });
    b = await startTestServer({ ...LIMITS, REDIS_URL: redis.url });
  });
  afterAll(async () => {
    await Promise.allSettled([a?.stop(), b?.stop()]);
  });

  it("a user's mutations: 2 on A + 2 on B use the budget of 4; the next is refused on both; both let them through after the window", async () => {
    const userId = newUserId();
    const token = await a.tokens.user(userId);
    const lora = await seedLora(a.app, userId);
    expect((await update(a, token, lora.id, 'a1')).__typename).toBe('Lora');
    expect((await update(b, token, lora.id, 'b1')).__typename).toBe('Lora');
    expect((await update(a, token, lora.id, 'a2')).__typename).toBe('Lora');
    expect((await update(b, token, lora.id, 'b2')).__typename).toBe('Lora');
    const onA = await update(a, token, lora.id, 'a3');
    const onB = await update(b, token, lora.id, 'b3');
    expect(onA.__typename).toBe('RateLimitedError');
    expect(onB.__typename).toBe('RateLimitedError');
    await sleep(Math.max(onA.retryAfterSeconds ?? 0, onB.retryAfterSeconds ?? 0) * 1000 + 250);
    expect((await update(b, token, lora.id, 'b4')).__typename).toBe('Lora');
    expect((await update(a, token, lora.id, 'a4')).__typename).toBe('Lora');
  });

  it('grants minted by one service: one on each replica, the third refused on either', async () => {
    const service = await a.tokens.service();
    const mint = (server: TestServer) =>
      server.gql(
        'mutation($u: ID!, $j: String!) { createJobGrant(userId: $u, jobId: $j) { token } }',
        { u: newUserId(), j: `job-${randomUUID()}` },
        { token: service },
      );
    dataOf(await mint(a));
    dataOf(await mint(b));
    expect(rateLimitedSeconds(await mint(a))).toBeGreaterThanOrEqual(1);
    expect(rateLimitedSeconds(await mint(b))).toBeGreaterThanOrEqual(1);
  });

  it('failed authentications from one address: 2 on A + 1 on B, then both answer 429', async () => {
    const ip = `203.0.113.${Math.floor(Math.random() * 200) + 1}`;
    const headers = { 'x-forwarded-for': ip };
    for (const server of [a, a, b])
      expect((await server.gql('{ loraQuota { loraCount } }', {}, { token: 'forged', headers })).status).toBe(401);
    const valid = await a.tokens.user(newUserId());
    for (const server of [a, b]) {
      const res = await server.gql('{ loraQuota { loraCount } }', {}, { token: valid, headers });
      expect(res.status).toBe(429);
      expect(Number(res.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    }
  });

  it('uploads at once per user hold across replicas: one held on A, one on B is TOO_MANY_UPLOADS; after A finishes, B accepts', async () => {
    const userId = newUserId();
    const token = await a.tokens.user(userId);
    let releaseHeld!: () => void;
    const hold = new Promise<void>((resolve) => {
      releaseHeld = resolve;
    });
    const file = sdxlLora();
    const held = postMultipart({ url: a.graphqlUrl, token, file, holdAfterBytes: 1024, hold, variables: {} });
    // A has taken its place once the upload is in flight there
    for (let i = 0; i < 100 && a.app.services.uploads.slots.active === 0; i++) await sleep(50);
    expect(a.app.services.uploads.slots.active).toBe(1);
    const refused = await postMultipart({ url: b.graphqlUrl, token, file: sdxlLora(), variables: {} });
    expect(refused.body?.data?.uploadLora).toMatchObject({
      __typename: 'TooManyUploadsError',
      code: 'TOO_MANY_UPLOADS',
      scope: 'USER',
      limit: 1,
    });
    releaseHeld();
    expect((await held).body?.data?.uploadLora.__typename).toBe('UploadLoraSuccess');
    // the place is given back asynchronously after the response: retry briefly
    let accepted = false;
    for (let i = 0; i < 20 && !accepted; i++) {
      const res = await postMultipart({ url: b.graphqlUrl, token, file: sdxlLora(), variables: {} });
      accepted = res.body?.data?.uploadLora.__typename === 'UploadLoraSuccess';
      if (!accepted) await sleep(100);
    }
    expect(accepted).toBe(true);
    expect((await listLoras(a, token)).total).toBe(2);
  });
});

describe('control: replicas without Redis count alone', () => {
  it('4 mutations on each of two in-memory replicas all pass a budget of 4', async () => {
    const c = await startTestServer(LIMITS);
    const d = await startTestServer(LIMITS);
    try {
      const userId = newUserId();
      const token = await c.tokens.user(userId);
      const lora = await seedLora(c.app, userId);
      for (let i = 0; i < 4; i++) {
        expect((await update(c, token, lora.id, `c${i}`)).__typename).toBe('Lora');
        expect((await update(d, token, lora.id, `d${i}`)).__typename).toBe('Lora');
      }
      expect((await update(c, token, lora.id, 'c-over')).__typename).toBe('RateLimitedError');
    } finally {
      await Promise.allSettled([c.stop(), d.stop()]);
    }
  });
});

describe.skipIf(skipReason !== undefined)('Redis gone', () => {
  let own: RedisHandle;
  let server: TestServer;
  beforeAll(async () => {
    const started = await startRedis();
    if ('unavailable' in started) throw new Error(started.unavailable);
    own = started;
    server = await startTestServer({ REDIS_URL: own.url, RATE_LIMIT_MACHINE_MUTATIONS: '3/30' });
  });
  afterAll(async () => {
    await server?.stop();
    await own?.stop();
  });

  it("each replica falls back to its own memory: the machine's budget still holds, nothing waits for Redis", async () => {
    const machine = await server.tokens.machine(`gpu-${randomUUID().slice(0, 8)}`);
    await own.stop();
    const started = Date.now();
    for (let i = 0; i < 3; i++)
      expect(dataOf(await server.gql(REPORT_CACHE_STATS, { input: STATS_INPUT }, { token: machine })).reportCacheStats).toBe(true);
    expect(rateLimitedSeconds(await server.gql(REPORT_CACHE_STATS, { input: STATS_INPUT }, { token: machine }))).toBeGreaterThanOrEqual(1);
    expect(Date.now() - started).toBeLessThan(10_000); // generous: only "does not hang on the dead Redis"
  });
});

afterAll(async () => {
  if (!('unavailable' in redis)) await redis.stop();
});
