import { randomUUID } from 'node:crypto';
import { createClient } from 'graphql-ws';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { createLoraClient, isLoraSdkError, type LoraSdkError, UpdateLoraDocument } from '../../sdk/index.ts';
import { signToken } from '../../server/auth/tokens.ts';
import { dataOf, member } from '../testkit/graphql-assertions.ts';
import { STATS_INPUT } from '../testkit/graphql-requests.ts';
import { signRawJwt } from '../testkit/jwt.ts';
import { listLoras, sleep } from '../testkit/library-helpers.ts';
import { sdxlLora } from '../testkit/lora-files.ts';
import { postMultipart } from '../testkit/multipart.ts';
import { REPORT_CACHE_STATS, rateLimitedSeconds, UPDATE_LORA } from '../testkit/rate-limit-requests.ts';
import { newUserId, seedLora } from '../testkit/seed.ts';
import { type GqlResponse, startTestServer, TEST_JWT_SECRET, type TestServer } from '../testkit/server.ts';

/**
 * Rate limits (API.md "Rate limits", THREATS.md row 45), one real server per limit with a small
 * window so that each is tripped and seen recovering without long sleeps: the refusal's own
 * `retryAfterSeconds` says how long to wait, and the test waits just that (no timing assertion
 * beyond "at most the window"). Cross-replica limits: rate-limits-replicas.test.ts.
 */

const servers: TestServer[] = [];
async function serverWith(env: Record<string, string>): Promise<TestServer> {
  const server = await startTestServer(env);
  servers.push(server);
  return server;
}
afterAll(async () => {
  await Promise.allSettled(servers.map((s) => s.stop()));
});

/** Waits out a refusal: its retryAfterSeconds plus a little. */
const waitOut = (seconds: number) => sleep(seconds * 1000 + 250);

const MINT = 'mutation($userId: ID!, $jobId: String!) { createJobGrant(userId: $userId, jobId: $jobId) { token } }';

/** The thrown RATE_LIMITED of a response: its retryAfterSeconds (checked to be within the window). */
function thrownRateLimit(res: GqlResponse, windowSeconds: number): number {
  const seconds = rateLimitedSeconds(res);
  expect(seconds).toBeGreaterThanOrEqual(1);
  expect(seconds).toBeLessThanOrEqual(windowSeconds);
  return seconds;
}

describe('mutations per principal (one place for every mutation)', () => {
  it("a user's mutations past the limit answer the RateLimitedError member; others are not affected; the window's end lets them through again", async () => {
    const server = await serverWith({ RATE_LIMIT_USER_MUTATIONS: '3/5' });
    const userId = newUserId();
    const token = await server.tokens.user(userId);
    const lora = await seedLora(server.app, userId);
    for (let i = 0; i < 3; i++) {
      expect((await server.gql(UPDATE_LORA, { id: lora.id, name: `n${i}` }, { token })).body.data?.updateLora.__typename).toBe('Lora');
    }
    const refused = (await server.gql(UPDATE_LORA, { id: lora.id, name: 'too many' }, { token })).body.data?.updateLora;
    expect(refused).toMatchObject({ __typename: 'RateLimitedError', code: 'RATE_LIMITED' });
    expect(refused.retryAfterSeconds).toBeGreaterThanOrEqual(1);
    expect(refused.retryAfterSeconds).toBeLessThanOrEqual(5);
    // nothing was done: the name is the last accepted one
    expect((await listLoras(server, token)).loras[0]?.name).toBe('n2');
    // a NotFound id counts too (the limit is on mutations, not on successes), and deleteLora shares the budget
    const del = await server.gql('mutation($id: ID!) { deleteLora(id: $id) { __typename } }', { id: lora.id }, { token });
    expect(del.body.data?.deleteLora.__typename).toBe('RateLimitedError');

    // another user has a budget of their own
    const other = newUserId();
    const otherLora = await seedLora(server.app, other);
    const otherToken = await server.tokens.user(other);
    expect(
      (await server.gql(UPDATE_LORA, { id: otherLora.id, name: 'mine' }, { token: otherToken })).body.data?.updateLora.__typename,
    ).toBe('Lora');

    await waitOut(refused.retryAfterSeconds);
    expect((await server.gql(UPDATE_LORA, { id: lora.id, name: 'again' }, { token })).body.data?.updateLora.__typename).toBe('Lora');
  });

  it('the SDK maps the refusal to a retryable LoraSdkError carrying retryAfterSeconds', async () => {
    const server = await serverWith({ RATE_LIMIT_USER_MUTATIONS: '1/5' });
    const userId = newUserId();
    const lora = await seedLora(server.app, userId);
    const token = await server.tokens.user(userId);
    expect(member(dataOf(await server.request(UpdateLoraDocument, { id: lora.id, name: 'one' }, { token })).updateLora, 'Lora').name).toBe(
      'one',
    );
    // the SDK's own document selects retryAfterSeconds (ErrorFields)
    const raw = dataOf(await server.request(UpdateLoraDocument, { id: lora.id, name: 'two' }, { token })).updateLora;
    expect(member(raw, 'RateLimitedError').retryAfterSeconds).toBeGreaterThanOrEqual(1);
    const client = createLoraClient({ url: server.graphqlUrl, token, webSocketImpl: WebSocket });
    try {
      const error = await client.updateLora({ id: lora.id, name: 'three' }).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(isLoraSdkError(error)).toBe(true);
      const sdkError = error as LoraSdkError;
      expect(sdkError).toMatchObject({ kind: 'domain', code: 'RATE_LIMITED', retryable: true });
      expect(sdkError.retryAfterSeconds).toBeGreaterThanOrEqual(1);
      expect(sdkError.retryAfterSeconds).toBeLessThanOrEqual(5);
    } finally {
      await client.close();
    }
  });

  it("a machine's mutations have a budget of their own; one without a result union throws RATE_LIMITED with retryAfterSeconds", async () => {
    const server = await serverWith({ RATE_LIMIT_MACHINE_MUTATIONS: '2/5', RATE_LIMIT_USER_MUTATIONS: '1/60' });
    const machine = await server.tokens.machine(`gpu-${randomUUID().slice(0, 8)}`);
    for (let i = 0; i < 2; i++)
      expect(dataOf(await server.gql(REPORT_CACHE_STATS, { input: STATS_INPUT }, { token: machine })).reportCacheStats).toBe(true);
    const refused = await server.gql(REPORT_CACHE_STATS, { input: STATS_INPUT }, { token: machine });
    expect(refused.status).toBe(200); // a GraphQL answer, not a transport refusal
    const seconds = thrownRateLimit(refused, 5);
    // a union member for a mutation with one
    const event = await server.gql(
      'mutation { reportCacheEvent(input: { type: DOWNLOADED, sharedName: "x.safetensors" }) { __typename } }',
      {},
      { token: machine },
    );
    expect(event.body.data?.reportCacheEvent.__typename).toBe('RateLimitedError');
    // the user limit (1 per minute) is not the machine's: another machine is untouched
    const another = await server.tokens.machine(`gpu-${randomUUID().slice(0, 8)}`);
    expect(dataOf(await server.gql(REPORT_CACHE_STATS, { input: STATS_INPUT }, { token: another })).reportCacheStats).toBe(true);
    await waitOut(seconds);
    expect(dataOf(await server.gql(REPORT_CACHE_STATS, { input: STATS_INPUT }, { token: machine })).reportCacheStats).toBe(true);
  });

  it('refused callers are not counted: UNAUTHENTICATED and FORBIDDEN come first and use no budget', async () => {
    const server = await serverWith({ RATE_LIMIT_USER_MUTATIONS: '1/60' });
    const userId = newUserId();
    const lora = await seedLora(server.app, userId);
    const token = await server.tokens.user(userId);
    // a user may not report cache stats: FORBIDDEN, and that costs nothing
    const forbidden = await server.gql(REPORT_CACHE_STATS, { input: STATS_INPUT }, { token });
    expect(forbidden.body.errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
    expect((await server.gql(UPDATE_LORA, { id: lora.id, name: 'first' }, { token })).body.data?.updateLora.__typename).toBe('Lora');
  });
});

describe('uploads started per user', () => {
  it('the upload past the limit is the RateLimitedError member before a byte is stored, then uploads pass again', async () => {
    const server = await serverWith({ RATE_LIMIT_UPLOADS: '2/8' });
    const userId = newUserId();
    const token = await server.tokens.user(userId);
    const upload = () => postMultipart({ url: server.graphqlUrl, token, file: sdxlLora(), variables: {} });
    for (let i = 0; i < 2; i++) expect((await upload()).body?.data?.uploadLora.__typename).toBe('UploadLoraSuccess');
    const refused = await upload();
    expect(refused.body?.data?.uploadLora).toMatchObject({ __typename: 'RateLimitedError', code: 'RATE_LIMITED' });
    const seconds = refused.body.data.uploadLora.retryAfterSeconds as number;
    expect(seconds).toBeGreaterThanOrEqual(1);
    expect(seconds).toBeLessThanOrEqual(8);
    expect((await listLoras(server, token)).total).toBe(2); // nothing stored
    await waitOut(seconds);
    expect((await upload()).body?.data?.uploadLora.__typename).toBe('UploadLoraSuccess');
  });
});

describe('job grants minted per service', () => {
  it('createJobGrant past the limit throws RATE_LIMITED with retryAfterSeconds; another service is not affected; then it mints again', async () => {
    const server = await serverWith({ RATE_LIMIT_GRANTS: '2/5' });
    const service = await server.tokens.service();
    const mint = (token: string) => server.gql(MINT, { userId: newUserId(), jobId: `job-${randomUUID()}` }, { token });
    for (let i = 0; i < 2; i++) expect(dataOf(await mint(service)).createJobGrant.token).toMatch(/^ey/);
    const refused = await mint(service);
    expect(refused.body.data).toBeNull();
    const seconds = thrownRateLimit(refused, 5);
    const otherService = await signToken(TEST_JWT_SECRET, { role: 'service', sub: 'another-dispatcher' });
    expect(dataOf(await mint(otherService)).createJobGrant.token).toMatch(/^ey/);
    await waitOut(seconds);
    expect(dataOf(await mint(service)).createJobGrant.token).toMatch(/^ey/);
  });
});

describe('failed authentications per client IP (refused before GraphQL)', () => {
  const xff = (ip: string) => ({ 'x-forwarded-for': ip });
  const ME = '{ loraQuota { usedStorageBytes } }';

  it('past the limit, requests with a token from that address get HTTP 429 + Retry-After — even a valid token; other addresses and anonymous requests are not affected; then it recovers', async () => {
    // one trusted proxy: the client is the last X-Forwarded-For entry (how the test plays several clients)
    const server = await serverWith({ RATE_LIMIT_AUTH_FAILURES: '3/5', TRUST_PROXY_HOPS: '1' });
    const attacker = `203.0.113.${Math.floor(Math.random() * 200) + 1}`;
    const valid = await server.tokens.user(newUserId());
    for (let i = 0; i < 3; i++) {
      const res = await server.gql(ME, {}, { token: `not-a-token-${i}`, headers: xff(attacker) });
      expect(res.status).toBe(401);
      expect(res.body.errors?.[0]?.extensions?.code).toBe('UNAUTHENTICATED');
    }
    const blocked = await server.gql(ME, {}, { token: valid, headers: xff(`198.51.100.7, ${attacker}`) });
    expect(blocked.status).toBe(429);
    const retryAfter = Number(blocked.headers.get('retry-after'));
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(5);
    expect(blocked.body.errors?.[0]?.extensions).toMatchObject({ code: 'RATE_LIMITED', retryAfterSeconds: retryAfter });
    expect(blocked.body.data ?? null).toBeNull();

    // the entry the client wrote itself (left of the proxy's) is not trusted: still the attacker's address
    expect((await server.gql(ME, {}, { token: valid, headers: xff(`192.0.2.1, ${attacker}`) })).status).toBe(429);
    // another address with the same valid token, and the attacker's address without a token
    expect(dataOf(await server.gql(ME, {}, { token: valid, headers: xff('192.0.2.55') })).loraQuota.usedStorageBytes).toBe(0);
    expect(dataOf(await server.gql('{ __typename }', {}, { headers: xff(attacker) })).__typename).toBe('Query');
    // a WebSocket upgrade from that address: 429 + Retry-After before any frame
    const upgrade = await new Promise<{ status: number; retryAfter: string | undefined }>((resolve, reject) => {
      const socket = new WebSocket(server.graphqlUrl.replace(/^http/, 'ws'), 'graphql-transport-ws', { headers: xff(attacker) });
      socket.on('unexpected-response', (_req, res) => {
        resolve({ status: res.statusCode ?? 0, retryAfter: res.headers['retry-after'] as string | undefined });
        socket.terminate();
      });
      socket.on('open', () => reject(new Error('upgrade accepted')));
      socket.on('error', () => {});
    });
    expect(upgrade.status).toBe(429);
    expect(Number(upgrade.retryAfter)).toBeGreaterThanOrEqual(1);

    await waitOut(retryAfter);
    expect(dataOf(await server.gql(ME, {}, { token: valid, headers: xff(attacker) })).loraQuota.usedStorageBytes).toBe(0);
  });

  it('expired tokens (honest clients whose token ran out, many behind one NAT) are refused but not counted', async () => {
    const server = await serverWith({ RATE_LIMIT_AUTH_FAILURES: '2/30', TRUST_PROXY_HOPS: '1' });
    const office = `192.0.2.${Math.floor(Math.random() * 200) + 1}`;
    for (let i = 0; i < 5; i++) {
      const expired = await signRawJwt({ secret: TEST_JWT_SECRET, claims: { role: 'user', sub: newUserId() }, expiresIn: -3600 });
      expect((await server.gql(ME, {}, { token: expired, headers: xff(office) })).status).toBe(401);
    }
    const valid = await server.tokens.user(newUserId());
    expect(dataOf(await server.gql(ME, {}, { token: valid, headers: xff(office) })).loraQuota.usedStorageBytes).toBe(0);
    // while a forged one is: two of them and the address is refused
    for (let i = 0; i < 2; i++) expect((await server.gql(ME, {}, { token: `forged-${i}`, headers: xff(office) })).status).toBe(401);
    expect((await server.gql(ME, {}, { token: valid, headers: xff(office) })).status).toBe(429);
  });

  it('bad tokens over the WebSocket count too (socket closed 4403), and then HTTP from that address is refused 429', async () => {
    const server = await serverWith({ RATE_LIMIT_AUTH_FAILURES: '2/30', TRUST_PROXY_HOPS: '1' });
    const attacker = `198.51.100.${Math.floor(Math.random() * 200) + 1}`;
    for (let i = 0; i < 2; i++) {
      const closed = await new Promise<number>((resolve) => {
        const socket = new WebSocket(server.graphqlUrl.replace(/^http/, 'ws'), 'graphql-transport-ws', { headers: xff(attacker) });
        socket.on('open', () => socket.send(JSON.stringify({ type: 'connection_init', payload: { authorization: 'Bearer forged' } })));
        socket.on('close', (code) => resolve(code));
        socket.on('error', () => {});
      });
      expect(closed).toBe(4403);
    }
    const res = await server.gql(ME, {}, { token: await server.tokens.user(newUserId()), headers: xff(attacker) });
    expect(res.status).toBe(429);
    expect(res.headers.get('retry-after')).toMatch(/^\d+$/);
  });
});

describe('WebSocket connections per principal', () => {
  const sockets: WebSocket[] = [];
  afterEach(() => {
    for (const s of sockets.splice(0)) s.terminate();
  });

  /** Opens a socket and sends connection_init; resolves 'ack' or the close code and reason. */
  function connect(server: TestServer, token: string): Promise<{ ack: true } | { code: number; reason: string }> {
    return new Promise((resolve) => {
      const socket = new WebSocket(server.graphqlUrl.replace(/^http/, 'ws'), 'graphql-transport-ws');
      sockets.push(socket);
      socket.on('open', () => socket.send(JSON.stringify({ type: 'connection_init', payload: { authorization: `Bearer ${token}` } })));
      socket.on('message', (data) => {
        if (JSON.parse(data.toString()).type === 'connection_ack') resolve({ ack: true });
      });
      socket.on('close', (code, reason) => resolve({ code, reason: reason.toString() }));
      socket.on('error', () => {});
    });
  }

  it('connections opened past the rate are closed 1013 "RATE_LIMITED: retry after N s" (graphql-ws clients retry it); the window lets them in again', async () => {
    const server = await serverWith({ RATE_LIMIT_WS_CONNECTIONS: '2/5' });
    const token = await server.tokens.machine(`gpu-ws-${randomUUID().slice(0, 8)}`);
    expect(await connect(server, token)).toEqual({ ack: true });
    expect(await connect(server, token)).toEqual({ ack: true });
    const refused = await connect(server, token);
    expect(refused).toMatchObject({ code: 1013 });
    const seconds = Number(/^RATE_LIMITED: retry after (\d+) s$/.exec((refused as { reason: string }).reason)?.[1]);
    expect(seconds).toBeGreaterThanOrEqual(1);
    expect(seconds).toBeLessThanOrEqual(5);
    // another principal connects meanwhile
    expect(await connect(server, await server.tokens.machine(`gpu-ws-${randomUUID().slice(0, 8)}`))).toEqual({ ack: true });
    await waitOut(seconds);
    expect(await connect(server, token)).toEqual({ ack: true });
  });

  it("the SDK reports a subscription refused by the rate, after graphql-ws's retries, as RATE_LIMITED with retryAfterSeconds", async () => {
    const server = await serverWith({ RATE_LIMIT_WS_CONNECTIONS: '1/30' });
    const token = await server.tokens.machine(`gpu-ws-${randomUUID().slice(0, 8)}`);
    expect(await connect(server, token)).toEqual({ ack: true });
    const client = createLoraClient({ url: server.graphqlUrl, token, webSocketImpl: WebSocket, wsRetryAttempts: 0 });
    try {
      const error = await (async () => {
        for await (const _event of client.cacheEvents()) return undefined;
        return undefined;
      })().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(isLoraSdkError(error)).toBe(true);
      expect(error).toMatchObject({ code: 'RATE_LIMITED', retryable: true });
      expect((error as LoraSdkError).retryAfterSeconds).toBeGreaterThanOrEqual(1);
      expect((error as LoraSdkError).retryAfterSeconds).toBeLessThanOrEqual(30);
    } finally {
      await client.close();
    }
  });

  it('sockets held at once per principal are capped (1013); closing one frees its place', async () => {
    const server = await serverWith({ WS_MAX_CONNECTIONS_PER_PRINCIPAL: '2' });
    const token = await server.tokens.user(newUserId());
    expect(await connect(server, token)).toEqual({ ack: true });
    expect(await connect(server, token)).toEqual({ ack: true });
    expect(await connect(server, token)).toMatchObject({
      code: 1013,
      reason: expect.stringMatching(/^RATE_LIMITED: at most 2 connections/),
    });
    sockets[0]?.close();
    let accepted = false;
    for (let attempt = 0; attempt < 20 && !accepted; attempt++) {
      accepted = 'ack' in (await connect(server, token));
      if (!accepted) await sleep(100); // the server sees the close a moment later
    }
    expect(accepted).toBe(true);
  });

  it('a graphql-ws client refused by the rate reconnects by itself once the window has passed (1013 is not fatal to it)', async () => {
    const server = await serverWith({ RATE_LIMIT_WS_CONNECTIONS: '1/3' });
    const token = await server.tokens.user(newUserId());
    expect(await connect(server, token)).toEqual({ ack: true });
    const closes: number[] = [];
    let acked = false;
    const retrying = createClient({
      url: server.graphqlUrl.replace(/^http/, 'ws'),
      webSocketImpl: WebSocket,
      connectionParams: { authorization: `Bearer ${token}` },
      retryAttempts: 20,
      retryWait: () => sleep(300),
      lazy: false,
      on: {
        connected: () => {
          acked = true;
        },
        closed: (event) => {
          closes.push((event as { code: number }).code);
        },
      },
    });
    try {
      for (let i = 0; i < 100 && !acked; i++) await sleep(100);
      expect(closes[0]).toBe(1013);
      expect(acked).toBe(true);
    } finally {
      await retrying.dispose();
    }
  });
});
