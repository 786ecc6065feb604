import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { createLoraClient } from '../../sdk/index.ts';
import { signToken } from '../../server/auth/tokens.ts';
import { newUserId } from '../testkit/seed.ts';
import { startTestServer, TEST_JWT_SECRET, type TestServer } from '../testkit/server.ts';
import { type ProtocolMessage, type ProtocolSocket, protocolSocket } from '../testkit/ws.ts';

/**
 * WebSocket limits (THREATS.md row 33, issue 10 point 7): subscriptions are capped per socket and
 * per principal; a socket does not outlive its token; every pre-execution limit HTTP applies also
 * applies over the WebSocket, and a refusal answers that operation only — the socket stays open.
 * The documents are hand-written on purpose: their shape and count are what the limits judge.
 */

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer();
});
afterAll(() => server?.stop());

const CACHE_EVENTS = 'subscription { cacheEvents { type loraId machineId reason } }';
const REPORT = 'mutation($i: CacheEventInput!) { reportCacheEvent(input: $i) { __typename } }';

const errorFor = (id: string) => (m: ProtocolMessage) => m.type === 'error' && m.id === id;
const nextFor = (id: string, reason: string) => (m: ProtocolMessage) =>
  m.type === 'next' && m.id === id && m.payload?.data?.cacheEvents?.reason === reason;

/** A machine's own report reaches its own subscriptions: proof of which ones are live. */
async function report(token: string, reason: string): Promise<void> {
  const res = await server.gql(REPORT, { i: { type: 'EVICTED', loraId: '7', reason } }, { token });
  expect(res.body.data?.reportCacheEvent).toEqual({ __typename: 'CacheEvent' });
}

function subscribeMany(socket: ProtocolSocket, prefix: string, n: number): string[] {
  const ids = Array.from({ length: n }, (_, i) => `${prefix}${i + 1}`);
  for (const id of ids) socket.subscribe(id, CACHE_EVENTS);
  return ids;
}

/**
 * Reports (reason `<label>-<attempt>`) until every listed subscription has received one: graphql-ws
 * does not acknowledge a subscribe, and an accepted subscription joins its stream asynchronously,
 * so a single report sent right after the subscribe messages can outrun the last of them under load.
 * A subscription that never goes live fails the test after the attempts.
 */
async function untilLive(token: string, label: string, sockets: [ProtocolSocket, string[]][]): Promise<void> {
  const live = (socket: ProtocolSocket, id: string) =>
    socket.messages.some((m) => m.type === 'next' && m.id === id && String(m.payload?.data?.cacheEvents?.reason).startsWith(`${label}-`));
  const all = () => sockets.every(([socket, ids]) => ids.every((id) => live(socket, id)));
  for (let attempt = 1; attempt <= 10 && !all(); attempt++) {
    await report(token, `${label}-${attempt}`);
    for (let waited = 0; waited < 1_000 && !all(); waited += 50) await new Promise((r) => setTimeout(r, 50));
  }
  const missing = sockets.flatMap(([socket, ids]) => ids.filter((id) => !live(socket, id)));
  expect(missing).toEqual([]);
}

/** Retries a subscription until it is not refused (a closed socket's share is freed when the server sees the close). */
async function subscribeUntilAccepted(socket: ProtocolSocket, token: string, prefix: string): Promise<string> {
  for (let attempt = 1; attempt <= 20; attempt++) {
    const id = `${prefix}-${attempt}`;
    socket.subscribe(id, CACHE_EVENTS);
    const reason = `probe-${prefix}-${attempt}`;
    await report(token, reason);
    const answer = await socket.waitFor((m) => errorFor(id)(m) || nextFor(id, reason)(m));
    if (answer.type === 'next') return id;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error('never accepted');
}

describe('subscriptions per socket and per principal', () => {
  it('one socket: 32 subscriptions are accepted, the other 68 of 100 answer RATE_LIMITED for their own id; the socket stays open', async () => {
    const token = await server.tokens.machine('gpu-cap-socket');
    const socket = await protocolSocket(server.graphqlUrl, token);
    try {
      const ids = subscribeMany(socket, 's', 100);
      const refused = ids.slice(32);
      const errors = await Promise.all(refused.map((id) => socket.waitFor(errorFor(id))));
      for (const error of errors) {
        expect(error.payload).toEqual([expect.objectContaining({ extensions: { code: 'RATE_LIMITED' } })]);
        expect(error.payload[0].message).toMatch(/32 .*per connection/);
      }
      await untilLive(token, 'first', [[socket, ids.slice(0, 32)]]);
      expect(socket.messages.filter((m) => m.type === 'error')).toHaveLength(68);
      expect(socket.isOpen()).toBe(true);

      // completing one frees its place on this socket
      socket.complete('s1');
      const again = await subscribeUntilAccepted(socket, token, 'again');
      await report(token, 'second');
      await socket.waitFor(nextFor(again, 'second'));
      expect(socket.messages.some(nextFor('s1', 'second'))).toBe(false);
      expect(socket.isOpen()).toBe(true);
    } finally {
      await socket.close();
    }
  });

  it('one principal: 64 across its sockets, the 65th refused on a fresh socket; others unaffected; a closed socket frees its share', async () => {
    const token = await server.tokens.machine('gpu-cap-principal');
    const [a, b, c] = await Promise.all([
      protocolSocket(server.graphqlUrl, token),
      protocolSocket(server.graphqlUrl, token),
      protocolSocket(server.graphqlUrl, token),
    ]);
    const otherToken = await server.tokens.machine('gpu-cap-other');
    const other = await protocolSocket(server.graphqlUrl, otherToken);
    try {
      const idsA = subscribeMany(a, 'a', 32);
      const idsB = subscribeMany(b, 'b', 32);
      await untilLive(token, 'filled', [
        [a, idsA],
        [b, idsB],
      ]);
      expect([...a.messages, ...b.messages].filter((m) => m.type === 'error')).toEqual([]);

      c.subscribe('c1', CACHE_EVENTS);
      const refused = await c.waitFor(errorFor('c1'));
      expect(refused.payload[0]).toMatchObject({ extensions: { code: 'RATE_LIMITED' } });
      expect(refused.payload[0].message).toMatch(/64 .*per caller/);
      expect(c.isOpen()).toBe(true);

      other.subscribe('o1', CACHE_EVENTS);
      await untilLive(otherToken, 'other', [[other, ['o1']]]);

      await a.close();
      const accepted = await subscribeUntilAccepted(c, token, 'c');
      expect(accepted).toMatch(/^c-/);
    } finally {
      await Promise.all([a, b, c, other].map((s) => s.close()));
    }
  });
});

describe('token expiry', () => {
  it('a socket is closed with 4403 when its token expires; a socket with a 30-day token stays open and keeps receiving', async () => {
    const shortToken = await signToken(TEST_JWT_SECRET, { role: 'machine', sub: 'gpu-exp', machineId: 'gpu-exp' }, 2);
    const longToken = await server.tokens.machine('gpu-exp'); // 30 days: longer than a single Node timer can wait
    const short = await protocolSocket(server.graphqlUrl, shortToken);
    const long = await protocolSocket(server.graphqlUrl, longToken);
    try {
      short.subscribe('1', CACHE_EVENTS);
      long.subscribe('1', CACHE_EVENTS);
      const started = Date.now();
      const closed = await Promise.race([short.closed, new Promise((r) => setTimeout(() => r('still open'), 15_000))]);
      expect(closed).toEqual({ code: 4403, reason: expect.stringMatching(/expired/i) });
      expect(Date.now() - started).toBeLessThan(15_000);
      expect(long.isOpen()).toBe(true);
      await report(longToken, 'after-expiry');
      await long.waitFor(nextFor('1', 'after-expiry'));
      expect(short.messages.some((m) => m.type === 'next')).toBe(false);
    } finally {
      await Promise.all([short.close(), long.close()]);
    }
  });

  it('an SDK client with getToken reconnects after the 4403 with a fresh token, and its subscription carries on', async () => {
    const machineId = 'gpu-refresh';
    let minted = 0;
    const sdk = createLoraClient({
      url: server.graphqlUrl,
      webSocketImpl: WebSocket,
      getToken: () => {
        minted++;
        return signToken(TEST_JWT_SECRET, { role: 'machine', sub: machineId, machineId }, 2);
      },
    });
    const reporter = await server.tokens.machine(machineId);
    const seen: string[] = [];
    const events = sdk.cacheEvents();
    const consuming = (async () => {
      for await (const event of events) if (event.reason) seen.push(event.reason);
    })();
    try {
      // Ticks reported once the SDK has minted its second token can only arrive over the new socket.
      const afterRefresh = new Set<string>();
      const deadline = Date.now() + 20_000;
      for (let n = 0; Date.now() < deadline && !seen.some((r) => afterRefresh.has(r)); n++) {
        if (minted >= 2) afterRefresh.add(`tick-${n}`);
        await report(reporter, `tick-${n}`);
        await new Promise((r) => setTimeout(r, 300));
      }
      expect(seen.filter((r) => afterRefresh.has(r)).length).toBeGreaterThan(0);
      expect(seen.some((r) => !afterRefresh.has(r))).toBe(true); // and the first socket carried events too
    } finally {
      await events.return(undefined);
      await consuming.catch(() => {});
      await sdk.close();
    }
  });
});

describe('pre-execution limits over the WebSocket are those of HTTP, and answer one operation', () => {
  const nested = (n: number) => `${'... on LoraQuota { '.repeat(n)}loraCount${' }'.repeat(n)}`;
  const cases: [string, string][] = [
    ['characters', `subscription { cacheEvents { type } }\n#${'x'.repeat(20_000)}`],
    ['depth', `query { loraQuota { ${nested(9)} } }`],
    ['aliases', `query { ${Array.from({ length: 16 }, (_, i) => `a${i}: loraQuota { loraCount }`).join(' ')} }`],
    ['directives', `query { ${'__typename @include(if: true) '.repeat(21)} }`],
    ['tokens', `query { loraQuota { ${'x '.repeat(2100)} } }`],
    ['cost', `query { loraQuota { ...Q } } fragment Q on LoraQuota { ${'loras { id name sizeBytes } '.repeat(300)} }`],
    ['syntax', 'subscription { cacheEvents { type '],
    ['validation', 'subscription { cacheEvents { nope } }'],
  ];

  it.each(cases)('%s: the same error as over HTTP, for that id only', async (_name, query) => {
    const admin = await server.tokens.admin();
    const http = await server.gql(query, {}, { token: admin });
    expect(http.body.data ?? null).toBeNull();
    const expected = http.body.errors?.[0];
    expect(['BAD_USER_INPUT', 'GRAPHQL_PARSE_FAILED', 'GRAPHQL_VALIDATION_FAILED']).toContain(expected?.extensions?.code);
    const socket = await protocolSocket(server.graphqlUrl, admin);
    try {
      socket.subscribe('bad', query);
      const error = await socket.waitFor(errorFor('bad'));
      expect(error.payload).toEqual([expected]);
      expect(socket.isOpen()).toBe(true);
      socket.subscribe('good', '{ __typename }');
      const good = await socket.waitFor((m) => m.type === 'next' && m.id === 'good');
      expect(good.payload).toEqual({ data: { __typename: 'Query' } });
    } finally {
      await socket.close();
    }
  });

  it('a mutation refused by a limit over the WebSocket is not executed', async () => {
    const admin = await server.tokens.admin();
    const target = newUserId();
    const mutation = `mutation { setUserLoraQuota(userId: "${target}", maxLoraCount: 9) { userId } }\n#`;
    const socket = await protocolSocket(server.graphqlUrl, admin);
    try {
      socket.subscribe('long', mutation + 'x'.repeat(20_001 - mutation.length));
      expect((await socket.waitFor(errorFor('long'))).payload[0].extensions.code).toBe('BAD_USER_INPUT');
      expect(await server.app.db.user_lora_quota.findUnique({ where: { user_id: target } })).toBeNull();
      socket.subscribe('short', mutation + 'x'.repeat(19_999 - mutation.length));
      const done = await socket.waitFor((m) => m.type === 'next' && m.id === 'short');
      expect(done.payload).toEqual({ data: { setUserLoraQuota: { userId: target } } });
    } finally {
      await socket.close();
    }
  });
});
