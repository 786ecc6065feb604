import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { createLoraClient } from '../../sdk/index.ts';
import { newUserId, seedLora } from '../testkit/seed.ts';
import { startTestServer, type TestServer } from '../testkit/server.ts';
import { collect, wsClient } from '../testkit/ws.ts';

/** TRUSTED_DOCUMENTS_ONLY: non-admins run only the SDK's generated operations (by hash). */

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer({ TRUSTED_DOCUMENTS_ONLY: 'true' });
});
afterAll(() => server?.stop());

describe('trusted documents only', () => {
  it("the SDK's operations run; the same user's hand-written query is refused; an admin may still explore", async () => {
    const userId = newUserId();
    const token = await server.tokens.user(userId);
    const lora = await seedLora(server.app, userId, { name: 'trusted' });
    const sdk = createLoraClient({ url: server.graphqlUrl, token, webSocketImpl: WebSocket });
    try {
      const page = await sdk.listLoras({});
      expect(page.loras.map((l) => l.id)).toEqual([lora.id]);

      const handWritten = await server.gql('{ loras { total } }', {}, { token });
      expect(handWritten.status).toBe(403);
      expect(handWritten.body.errors?.[0]?.extensions?.code).toBe('FORBIDDEN');

      const forged = await fetch(server.graphqlUrl, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
        body: JSON.stringify({ query: '{ loras { total } }', extensions: { persistedQuery: { version: 1, sha256Hash: '0'.repeat(64) } } }),
      });
      expect(forged.status).toBe(400);

      const admin = await server.gql('{ loras { total } }', {}, { token: await server.tokens.admin() });
      expect(admin.body.data?.loras.total).toBeGreaterThanOrEqual(1);
    } finally {
      await sdk.close();
    }
  });

  it('applies to subscriptions too', async () => {
    const machine = wsClient(server.graphqlUrl, await server.tokens.machine('gpu-trusted'));
    const refused = await collect(machine, 'subscription { cacheEvents { type } }', {}, () => true, 3_000);
    expect(JSON.stringify(refused.errors)).toMatch(/trusted documents only/);
    await machine.dispose();
  });
});
