import { print } from 'graphql';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LoraEventsDocument, type LoraEventsSubscription } from '../../sdk/index.ts';
import { deleteLora, updateLora } from '../testkit/library-helpers.ts';
import { eventually, newUserId, seedLora } from '../testkit/seed.ts';
import { startTestServer, type TestServer } from '../testkit/server.ts';
import { sample, scrape, startTestTelemetry } from '../testkit/telemetry.ts';
import { collect, wsClient } from '../testkit/ws.ts';

/**
 * `loraEvents`: a user's own library changing elsewhere (another tab, an admin), so Studio drops or
 * refreshes a LoRA live. Users see only their own LoRAs' events; machines use `cacheEvents`.
 */

let server: TestServer;
beforeAll(async () => {
  startTestTelemetry(); // /metrics tells when a subscription runs
  server = await startTestServer();
});
afterAll(() => server?.stop());

/** The SDK's document, printed: the graphql-ws helpers take the text. */
const LORA_EVENTS = print(LoraEventsDocument);

type Event = LoraEventsSubscription;

/**
 * Waits until the server runs the test's one loraEvents subscription (`lora_vault_subscriptions_active`,
 * counted when the subscription's stream is handed to graphql-ws, which joins the bus at once), so no
 * event is published before it listens. Each test ends its subscription before the next begins.
 */
const subscribed = () =>
  eventually(
    async () => sample(await scrape(`${server.url}/metrics`), 'lora_vault_subscriptions_active', { graphql_field: 'loraEvents' }) === 1,
    10_000,
    'the loraEvents subscription running',
  );

describe('loraEvents', () => {
  it("the owner sees LORA_UPDATED and LORA_DELETED of their own LoRAs, never another user's", async () => {
    const [alice, bob] = [newUserId(), newUserId()];
    const [aliceToken, bobToken] = await Promise.all([server.tokens.user(alice), server.tokens.user(bob)]);
    const [mine, theirs] = await Promise.all([seedLora(server.app, alice), seedLora(server.app, bob)]);
    const client = wsClient(server.graphqlUrl, aliceToken);
    const events = collect<Event>(client, LORA_EVENTS, {}, (v) => v.some((e) => e.loraEvents.type === 'LORA_DELETED'));
    await subscribed();
    await deleteLora(server, bobToken, theirs.id);
    await updateLora(server, aliceToken, { id: mine.id, name: 'renamed elsewhere' });
    await deleteLora(server, aliceToken, mine.id);
    const { values, errors } = await events;
    await client.dispose();
    expect(errors).toEqual([]);
    expect(values.map((v) => v.loraEvents)).toEqual([
      expect.objectContaining({ type: 'LORA_UPDATED', loraId: mine.id, userId: alice }),
      expect.objectContaining({ type: 'LORA_DELETED', loraId: mine.id, userId: alice }),
    ]);
  });

  it('an admin sees every user’s deletions, with the owner', async () => {
    const owner = newUserId();
    const lora = await seedLora(server.app, owner);
    const client = wsClient(server.graphqlUrl, await server.tokens.admin());
    const events = collect<Event>(client, LORA_EVENTS, {}, (v) => v.length > 0);
    await subscribed();
    await deleteLora(server, await server.tokens.user(owner), lora.id);
    const { values, errors } = await events;
    await client.dispose();
    expect(errors).toEqual([]);
    expect(values[0]?.loraEvents).toMatchObject({ type: 'LORA_DELETED', loraId: lora.id, userId: owner });
  });

  it('machines and services are refused (machines follow cacheEvents, without owners)', async () => {
    for (const token of [await server.tokens.machine(), await server.tokens.service()]) {
      const client = wsClient(server.graphqlUrl, token);
      const { values, errors } = await collect<Event>(client, LORA_EVENTS, {}, () => true, 5_000);
      await client.dispose();
      expect(values).toEqual([]);
      expect(JSON.stringify(errors)).toMatch(/FORBIDDEN|not authorized|Not allowed/i);
    }
  });
});
