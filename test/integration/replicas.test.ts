import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { print } from 'graphql';
import type { Client } from 'graphql-ws';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CacheEventsDocument,
  type CacheEventsSubscription,
  ReportCacheEventDocument,
  UploadProgressDocument,
  type UploadProgressSubscription,
} from '../../sdk/index.ts';
import { cacheEventsLive, follow } from '../testkit/follow.ts';
import { dataOf, member } from '../testkit/graphql-assertions.ts';
import { deleteLora, getLora } from '../testkit/library-helpers.ts';
import { sdxlLora } from '../testkit/lora-files.ts';
import { newUploadId, postMultipart } from '../testkit/multipart.ts';
import { startRedis } from '../testkit/redis.ts';
import { newUserId, seedLora } from '../testkit/seed.ts';
import { startTestServer, type TestServer } from '../testkit/server.ts';
import { wsClient } from '../testkit/ws.ts';

/**
 * Two replicas of the API — two apps, each with its own HTTP + graphql-ws server and its own
 * Redis connections — over one PostgreSQL and one real redis-server (started here, on a free
 * port): what a client does on one replica must reach subscribers connected to the other.
 * Without redis-server the Redis half reports itself skipped, with the reason.
 *
 * The replicas run in this process (like two pods, they share nothing but PostgreSQL and Redis:
 * the bus, the pub/sub and the WebSocket server are per app); the in-memory control below proves
 * that nothing in-process carries events between them.
 */

const redis = await startRedis();
const skipReason = 'unavailable' in redis ? redis.unavailable : undefined;
if (skipReason) console.warn(`[replicas.test.ts] SKIPPED the Redis replica tests: ${skipReason}`);

/** The SDK's subscription documents, printed: graphql-ws's client takes the document's text. */
const CACHE_EVENTS = print(CacheEventsDocument);
const PROGRESS = print(UploadProgressDocument);

type ProgressData = UploadProgressSubscription;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe.skipIf(skipReason !== undefined)(
  skipReason ? `two replicas over one redis-server — SKIPPED: ${skipReason}` : 'two replicas over one redis-server',
  () => {
    let a: TestServer;
    let b: TestServer;
    let inspector: Redis;
    const clients: Client[] = [];
    const connect = (server: TestServer, token: string) => {
      const client = wsClient(server.graphqlUrl, token);
      clients.push(client);
      return client;
    };

    beforeAll(async () => {
      if ('unavailable' in redis) throw new Error('unreachable');
      // One after the other: two replicas starting at once on a database whose pg-boss queues do
      // not exist yet can deadlock in boss.createQueue (server/jobs/runner.ts) — not what this tests.
      a = await startTestServer({ REDIS_URL: redis.url });
      b = await startTestServer({ REDIS_URL: redis.url });
      inspector = new Redis(redis.url, { lazyConnect: true });
      await inspector.connect();
    });
    afterAll(async () => {
      await Promise.allSettled(clients.map((c) => c.dispose()));
      await Promise.allSettled([a?.stop(), b?.stop()]);
      inspector?.disconnect();
      if (!('unavailable' in redis)) await redis.stop();
    });

    it('the replicas are distinct servers on the same redis-server', async () => {
      expect(a.url).not.toBe(b.url);
      expect(a.app.bus).not.toBe(b.app.bus);
      // each replica holds its own publish and subscribe connections
      const list = String(await inspector.call('CLIENT', 'LIST'));
      expect(list.split('\n').filter((line) => line.includes('cmd=')).length).toBeGreaterThanOrEqual(5); // 2 × 2 + this one
    });

    it("a deleteLora on replica A reaches a machine's cacheEvents subscriber on replica B within a second, once", async () => {
      const userId = newUserId();
      const owner = await a.tokens.user(userId);
      const lora = await seedLora(a.app, userId);
      const machineToken = await b.tokens.machine('gpu-on-b');
      const onB = follow<CacheEventsSubscription>(connect(b, machineToken), CACHE_EVENTS);
      const adminOnA = follow<CacheEventsSubscription>(connect(a, await a.tokens.admin()), CACHE_EVENTS);
      await cacheEventsLive(b, machineToken, onB);
      await cacheEventsLive(a, await a.tokens.machine('probe-a'), adminOnA);

      const started = performance.now();
      expect(member(await deleteLora(a, owner, lora.id), 'DeleteLoraSuccess').loraId).toBe(lora.id);
      const deleted = (v: CacheEventsSubscription) => v.cacheEvents.type === 'LORA_DELETED' && v.cacheEvents.loraId === lora.id;
      const seenOnB = await onB.waitFor(deleted, 1_000, 'LORA_DELETED on replica B');
      expect(seenOnB.receivedAt - started).toBeLessThan(1_000);
      expect(seenOnB.value.cacheEvents).toMatchObject({ type: 'LORA_DELETED', loraId: lora.id, userId: null, machineId: null }); // machines learn no user ids
      expect(Date.parse(seenOnB.value.cacheEvents.at)).toBeGreaterThan(Date.now() - 5_000);
      await adminOnA.waitFor(deleted, 1_000, 'LORA_DELETED on replica A');

      await sleep(300); // no duplicate (e.g. delivered both locally and through Redis)
      expect(onB.values.filter((v) => deleted(v.value))).toHaveLength(1);
      expect(adminOnA.values.filter((v) => deleted(v.value))).toHaveLength(1);
      expect(onB.errors).toEqual([]);
    });

    it("an upload's progress posted to replica A reaches its owner subscribed on replica B, in order, ending DONE", async () => {
      const userId = newUserId();
      const token = await b.tokens.user(userId);
      const uploadId = newUploadId();
      const progress = follow<ProgressData>(connect(b, token), PROGRESS, { uploadId });
      // Live once B has subscribed its Redis connection to this upload's channel (nobody else has).
      const channel = `upload-progress:${uploadId}`;
      const deadline = performance.now() + 5_000;
      for (;;) {
        const [, count] = (await inspector.call('PUBSUB', 'NUMSUB', channel)) as [string, number];
        if (Number(count) >= 1) break;
        if (progress.errors.length || performance.now() > deadline) throw new Error(`B never subscribed ${channel}: ${progress.errors}`);
        await sleep(10);
      }

      const file = sdxlLora();
      const res = await postMultipart({ url: a.graphqlUrl, token, file, variables: { uploadId, sizeBytes: file.length } });
      expect(res.body.data?.uploadLora?.__typename).toBe('UploadLoraSuccess');
      await progress.waitComplete(5_000); // the subscription ends after DONE

      expect(progress.errors).toEqual([]);
      const updates = progress.values.map((v) => v.value.uploadProgress);
      const phases = updates.map((p) => p.phase).filter((p, i, all) => all[i - 1] !== p);
      expect(phases).toEqual(['RECEIVING', 'VALIDATING', 'STORING', 'DONE']);
      const bytes = updates.map((p) => p.bytesReceived);
      expect(bytes).toEqual([...bytes].sort((x, y) => x - y)); // never goes back
      expect(updates.every((p) => p.uploadId === uploadId && p.totalBytes === file.length)).toBe(true);
      expect(updates.at(-1)).toMatchObject({ phase: 'DONE', loraId: res.body.data.uploadLora.lora.id, bytesReceived: file.length });
      // and the LoRA is there for B's clients too (same database)
      const onB = member(await getLora(b, token, String(updates.at(-1)?.loraId)), 'Lora');
      expect(onB).toMatchObject({ id: res.body.data.uploadLora.lora.id, status: 'READY' });
    });

    it('a reportCacheEvent on replica B reaches an admin subscribed on replica A, once, and not other machines', async () => {
      const admin = await a.tokens.admin();
      const adminOnA = follow<CacheEventsSubscription>(connect(a, admin), CACHE_EVENTS);
      const adminOfReporterOnA = follow<CacheEventsSubscription>(connect(a, admin), CACHE_EVENTS, { machineId: 'gpu-reporter' });
      const otherToken = await a.tokens.machine('gpu-other');
      const otherMachineOnA = follow<CacheEventsSubscription>(connect(a, otherToken), CACHE_EVENTS);
      await cacheEventsLive(a, await a.tokens.machine('probe-a2'), adminOnA);
      await cacheEventsLive(a, otherToken, otherMachineOnA);
      // adminOfReporterOnA shares A's Redis subscription (one per channel per replica), which is live now

      const reason = `lru-${randomUUID()}`;
      const started = performance.now();
      const res = await b.request(
        ReportCacheEventDocument,
        { input: { type: 'EVICTED', loraId: '42', reason } },
        { token: await b.tokens.machine('gpu-reporter') },
      );
      expect(dataOf(res).reportCacheEvent).toMatchObject({
        __typename: 'CacheEvent',
        type: 'EVICTED',
        loraId: '42',
        machineId: 'gpu-reporter',
        reason,
      });
      const mine = (v: CacheEventsSubscription) => v.cacheEvents.reason === reason;
      const seen = await adminOnA.waitFor(mine, 1_000, 'the EVICTED report on replica A');
      expect(seen.receivedAt - started).toBeLessThan(1_000);
      expect(seen.value.cacheEvents).toMatchObject({ type: 'EVICTED', loraId: '42', machineId: 'gpu-reporter', userId: null });
      await adminOfReporterOnA.waitFor(mine, 1_000, 'the report for the admin following gpu-reporter');

      await sleep(300);
      expect(adminOnA.values.filter((v) => mine(v.value))).toHaveLength(1);
      expect(adminOfReporterOnA.values.filter((v) => mine(v.value))).toHaveLength(1);
      expect(otherMachineOnA.values.filter((v) => mine(v.value))).toEqual([]);
      expect([adminOnA.errors, adminOfReporterOnA.errors, otherMachineOnA.errors]).toEqual([[], [], []]);
    });
  },
);

describe('control: two replicas without Redis (in-memory buses)', () => {
  let a: TestServer;
  let b: TestServer;
  const clients: Client[] = [];

  beforeAll(async () => {
    a = await startTestServer(); // one after the other: see above
    b = await startTestServer();
  });
  afterAll(async () => {
    await Promise.allSettled(clients.map((c) => c.dispose()));
    await Promise.allSettled([a?.stop(), b?.stop()]);
  });

  it('share nothing in this process: a delete on A reaches A only (so the Redis tests above prove Redis carries events)', async () => {
    const userId = newUserId();
    const lora = await seedLora(a.app, userId);
    const [machineA, machineB] = [await a.tokens.machine('ctl-a'), await b.tokens.machine('ctl-b')];
    const clientA = wsClient(a.graphqlUrl, machineA);
    const clientB = wsClient(b.graphqlUrl, machineB);
    clients.push(clientA, clientB);
    const onA = follow<CacheEventsSubscription>(clientA, CACHE_EVENTS);
    const onB = follow<CacheEventsSubscription>(clientB, CACHE_EVENTS);
    await cacheEventsLive(a, machineA, onA);
    await cacheEventsLive(b, machineB, onB);
    member(await deleteLora(a, await a.tokens.user(userId), lora.id), 'DeleteLoraSuccess');
    const deleted = (v: CacheEventsSubscription) => v.cacheEvents.type === 'LORA_DELETED' && v.cacheEvents.loraId === lora.id;
    await onA.waitFor(deleted, 1_000, 'LORA_DELETED on A');
    await sleep(500);
    expect(onB.values.filter((v) => deleted(v.value))).toEqual([]);
  });
});
