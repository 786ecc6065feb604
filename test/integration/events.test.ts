import { print } from 'graphql';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CacheEventsDocument,
  type CacheEventsSubscription,
  LorasStillValidDocument,
  ReportCacheEventDocument,
  UploadProgressDocument,
  type UploadProgressSubscription,
} from '../../sdk/index.ts';
import { cacheEventsLive, follow } from '../testkit/follow.ts';
import { dataOf, member } from '../testkit/graphql-assertions.ts';
import { deleteLora, updateLora } from '../testkit/library-helpers.ts';
import { makeLora, sdxlLora } from '../testkit/lora-files.ts';
import { newUploadId, postMultipart } from '../testkit/multipart.ts';
import { eventually, newUserId, seedLora } from '../testkit/seed.ts';
import { startTestServer, type TestServer } from '../testkit/server.ts';
import { collect, rawSocket, wsClient } from '../testkit/ws.ts';

/** Subscriptions over real WebSockets (graphql-ws) against the real server. */

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer();
});
afterAll(() => server?.stop());

/** The SDK's subscription documents, printed: the graphql-ws helpers take the document's text. */
const PROGRESS = print(UploadProgressDocument);
const CACHE_EVENTS = print(CacheEventsDocument);

/**
 * uploadProgress is live once the server has claimed the uploadId for its user (a row written just
 * before it follows the upload), plus a moment: a fixed sleep alone lost RECEIVING on a loaded machine.
 */
async function claimed(uploadId: string): Promise<void> {
  await eventually(() => server.app.db.upload_claim.findUnique({ where: { upload_id: uploadId } }).then((row) => row ?? undefined));
  await new Promise((r) => setTimeout(r, 200));
}

describe('uploadProgress', () => {
  it('the owner sees RECEIVING → VALIDATING → STORING → DONE in order, ending with the LoRA id', async () => {
    const userId = newUserId();
    const token = await server.tokens.user(userId);
    const client = wsClient(server.graphqlUrl, token);
    const uploadId = newUploadId();
    const progress = collect<UploadProgressSubscription>(client, PROGRESS, { uploadId }, (v) =>
      ['DONE', 'FAILED'].includes(v.at(-1)?.uploadProgress.phase ?? ''),
    );
    await claimed(uploadId);
    const file = sdxlLora();
    const res = await postMultipart({ url: server.graphqlUrl, token, file, variables: { uploadId, sizeBytes: file.length } });
    const { values, errors } = await progress;
    await client.dispose();
    expect(errors).toEqual([]);
    const phases = values.map((v) => v.uploadProgress.phase).filter((p, i, all) => all[i - 1] !== p);
    expect(phases).toEqual(['RECEIVING', 'VALIDATING', 'STORING', 'DONE']);
    expect(values.at(-1)?.uploadProgress).toMatchObject({
      loraId: res.body.data.uploadLora.lora.id,
      bytesReceived: file.length,
      totalBytes: file.length,
    });
  });

  it("a stranger cannot follow someone else's upload, and cannot hijack its uploadId", async () => {
    const owner = await server.tokens.user(newUserId());
    const stranger = await server.tokens.user(newUserId());
    const uploadId = newUploadId();
    const ownerClient = wsClient(server.graphqlUrl, owner);
    const ownerSub = collect(ownerClient, PROGRESS, { uploadId }, () => false, 1_000);
    await claimed(uploadId); // the owner claimed the id first
    const strangerClient = wsClient(server.graphqlUrl, stranger);
    const refused = await collect(strangerClient, PROGRESS, { uploadId }, () => true);
    expect(refused.values).toEqual([]);
    expect(JSON.stringify(refused.errors)).toMatch(/FORBIDDEN|belongs to someone else/);
    const hijack = await postMultipart({ url: server.graphqlUrl, token: stranger, file: sdxlLora(), variables: { uploadId } });
    expect(hijack.body.data.uploadLora).toMatchObject({ __typename: 'ValidationError', issues: [{ path: 'uploadId' }] });
    expect((await ownerSub).values).toEqual([]); // nothing of the stranger's attempt reached the owner
    await ownerClient.dispose();
    await strangerClient.dispose();
  });
});

describe('cacheEvents', () => {
  it('a delete reaches every machine and admin subscriber within a second; a rename sends LORA_UPDATED; only admins learn the owner', async () => {
    const userId = newUserId();
    const token = await server.tokens.user(userId);
    const lora = await seedLora(server.app, userId);
    const machineToken = await server.tokens.machine('gpu-a');
    const machine = wsClient(server.graphqlUrl, machineToken);
    const admin = wsClient(server.graphqlUrl, await server.tokens.admin());
    const onMachine = follow<CacheEventsSubscription>(machine, CACHE_EVENTS);
    const onAdmin = follow<CacheEventsSubscription>(admin, CACHE_EVENTS);
    await cacheEventsLive(server, machineToken, onMachine);
    await cacheEventsLive(server, machineToken, onAdmin);
    member(await updateLora(server, token, { id: lora.id, name: 'renamed' }), 'Lora');
    const started = Date.now();
    member(await deleteLora(server, token, lora.id), 'DeleteLoraSuccess');
    const deleted = (v: CacheEventsSubscription) => v.cacheEvents.type === 'LORA_DELETED' && v.cacheEvents.loraId === lora.id;
    await Promise.all([onMachine, onAdmin].map((f) => f.waitFor(deleted, 10_000, 'the delete')));
    expect(Date.now() - started).toBeLessThan(1_000);
    for (const [seen, owner] of [
      [onMachine, null], // a machine acts on the LoRA id; whose LoRA it is would tell it every user's ids (issue 10 point 8)
      [onAdmin, userId],
    ] as const) {
      expect(seen.errors).toEqual([]);
      const mine = seen.values.map((v) => v.value.cacheEvents).filter((e) => e.loraId === lora.id);
      expect(mine.map((e) => e.type)).toEqual(['LORA_UPDATED', 'LORA_DELETED']);
      for (const event of mine) expect(event).toMatchObject({ userId: owner, machineId: null });
      expect(JSON.stringify(mine)).not.toMatch(/https?:|blob/);
    }
    expect(JSON.stringify(onMachine.values)).not.toContain(userId);
    await machine.dispose();
    await admin.dispose();
  });

  it("machines' reports reach admins (all, or of one machine) and the reporting machine, not other machines", async () => {
    const reporterToken = await server.tokens.machine('gpu-report');
    const otherToken = await server.tokens.machine('gpu-other');
    const admin = wsClient(server.graphqlUrl, await server.tokens.admin());
    const adminOfOther = wsClient(server.graphqlUrl, await server.tokens.admin());
    const reporter = wsClient(server.graphqlUrl, reporterToken);
    const other = wsClient(server.graphqlUrl, otherToken);
    const onAdmin = follow<CacheEventsSubscription>(admin, CACHE_EVENTS);
    const onReporter = follow<CacheEventsSubscription>(reporter, CACHE_EVENTS);
    const onOther = follow<CacheEventsSubscription>(other, CACHE_EVENTS);
    const onAdminOfOther = follow<CacheEventsSubscription>(adminOfOther, CACHE_EVENTS, { machineId: 'gpu-other' });
    await cacheEventsLive(server, reporterToken, onAdmin);
    await cacheEventsLive(server, reporterToken, onReporter);
    await cacheEventsLive(server, otherToken, onOther);
    await cacheEventsLive(server, otherToken, onAdminOfOther);
    const res = await server.request(
      ReportCacheEventDocument,
      { input: { type: 'EVICTED', loraId: '42', reason: 'lru' } },
      { token: reporterToken },
    );
    expect(dataOf(res).reportCacheEvent).toMatchObject({
      __typename: 'CacheEvent',
      type: 'EVICTED',
      loraId: '42',
      machineId: 'gpu-report',
      reason: 'lru',
    });
    const evicted = (v: CacheEventsSubscription) => v.cacheEvents.type === 'EVICTED';
    for (const seen of [onAdmin, onReporter]) {
      expect((await seen.waitFor(evicted, 10_000, 'the report')).value.cacheEvents).toMatchObject({
        type: 'EVICTED',
        machineId: 'gpu-report',
      });
    }
    // what reached the others by now: a probe of theirs sent after the report arrives after it would have
    await cacheEventsLive(server, otherToken, onOther);
    await cacheEventsLive(server, otherToken, onAdminOfOther);
    expect(onOther.values.filter((v) => evicted(v.value))).toEqual([]);
    expect(onAdminOfOther.values.filter((v) => evicted(v.value))).toEqual([]);
    for (const c of [admin, adminOfOther, reporter, other]) await c.dispose();
  });

  it('users cannot subscribe to cache events; a machine cannot follow another machine', async () => {
    const user = wsClient(server.graphqlUrl, await server.tokens.user(newUserId()));
    const refused = await collect(user, CACHE_EVENTS, {}, () => true);
    expect(JSON.stringify(refused.errors)).toMatch(/FORBIDDEN|Not allowed/);
    const machine = wsClient(server.graphqlUrl, await server.tokens.machine('gpu-x'));
    const other = await collect(machine, CACHE_EVENTS, { machineId: 'gpu-y' }, () => true);
    expect(JSON.stringify(other.errors)).toMatch(/FORBIDDEN|own machine/);
    await user.dispose();
    await machine.dispose();
  });
});

describe('reconciling after a reconnect', () => {
  it('lorasStillValid confirms only READY LoRAs named with their right sha256', async () => {
    const userId = newUserId();
    const token = await server.tokens.user(userId);
    const unique = () => makeLora('SD1', 'kohya', { extra: { ss_output_name: newUploadId() } });
    const [kept, deleted] = [
      await seedLora(server.app, userId, { bytes: unique() }),
      await seedLora(server.app, userId, { bytes: unique() }),
    ];
    const someoneElses = await seedLora(server.app, newUserId(), { bytes: unique() });
    member(await deleteLora(server, token, deleted.id), 'DeleteLoraSuccess');
    const res = await server.request(
      LorasStillValidDocument,
      {
        loras: [
          { id: kept.id, sha256: kept.sha256 },
          { id: deleted.id, sha256: deleted.sha256 },
          { id: someoneElses.id, sha256: kept.sha256 }, // an id it does not hold, guessed with another hash
          { id: '999999999999', sha256: '0'.repeat(64) },
        ],
      },
      { token: await server.tokens.machine('gpu-r') },
    );
    expect(dataOf(res).lorasStillValid).toEqual([kept.id]);
    const asUser = await server.request(LorasStillValidDocument, { loras: [] }, { token });
    expect(asUser.body.errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
  });
});

describe('the WebSocket endpoint refuses bad peers', () => {
  it('no token or a forged one: closed with 4403', async () => {
    for (const params of [{}, { authorization: 'Bearer forged.token.here' }]) {
      const closed = await rawSocket(`${server.url}/graphql`, (s) => s.send(JSON.stringify({ type: 'connection_init', payload: params })));
      expect(closed.code).toBe(4403);
    }
  });

  it('no connection_init within the timeout: closed with 4408', async () => {
    const started = Date.now();
    const closed = await rawSocket(`${server.url}/graphql`, () => {});
    expect(closed.code).toBe(4408);
    expect(Date.now() - started).toBeLessThan(6_000);
  });

  it('an oversized frame: closed with 1009', async () => {
    const token = await server.tokens.admin();
    const closed = await rawSocket(`${server.url}/graphql`, (s) => {
      s.send(JSON.stringify({ type: 'connection_init', payload: { authorization: `Bearer ${token}` } }));
      s.send(
        JSON.stringify({ id: '1', type: 'subscribe', payload: { query: `subscription { cacheEvents { type } } #${'x'.repeat(100_000)}` } }),
      );
    });
    expect(closed.code).toBe(1009);
  });
});
