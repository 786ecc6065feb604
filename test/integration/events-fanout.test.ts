import { print } from 'graphql';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CacheEventsDocument, ReportCacheEventDocument } from '../../sdk/index.ts';
import type { SharedFanOut } from '../../server/http/shared-fanout.ts';
import { dataOf, member } from '../testkit/graphql-assertions.ts';
import { deleteLora } from '../testkit/library-helpers.ts';
import { newUserId, seedLora } from '../testkit/seed.ts';
import { startTestServer, type TestServer } from '../testkit/server.ts';
import { type ProtocolMessage, type ProtocolSocket, protocolSocket } from '../testkit/ws.ts';

/**
 * Shared fan-out (issue 16): an event is executed once per (document, variables, visibility) and
 * the same payload goes to every socket of that group, each subscriber still filtered by its own
 * authorisation. Real server, real WebSockets speaking graphql-transport-ws.
 */

let server: TestServer;
let fanOut: SharedFanOut;
beforeAll(async () => {
  server = await startTestServer();
  if (!server.app.fanOut) throw new Error('shared fan-out is off by default');
  fanOut = server.app.fanOut;
});
afterAll(() => server?.stop());

const CACHE_EVENTS = print(CacheEventsDocument);
const ALT_CACHE_EVENTS = 'subscription { cacheEvents { type loraId } }';

async function until(check: () => boolean, what: string, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const nextFor = (id: string, match: (event: Record<string, unknown>) => boolean) => (m: ProtocolMessage) =>
  m.type === 'next' && m.id === id && match(m.payload?.data?.cacheEvents ?? {});

describe('shared fan-out of cacheEvents', () => {
  it('one execution per event and visibility: machines share one payload, admins another with the owner; a different document is its own group', async () => {
    const userId = newUserId();
    const lora = await seedLora(server.app, userId);
    const machines = await Promise.all(
      ['fan-1', 'fan-2', 'fan-3'].map(async (m) => protocolSocket(server.graphqlUrl, await server.tokens.machine(m))),
    );
    const admins = await Promise.all([1, 2].map(async () => protocolSocket(server.graphqlUrl, await server.tokens.admin())));
    const alt = await protocolSocket(server.graphqlUrl, await server.tokens.machine('fan-alt'));
    const before = fanOut.size();
    for (const [i, s] of [...machines, ...admins].entries()) s.subscribe(`s${i}`, CACHE_EVENTS);
    alt.subscribe('alt', ALT_CACHE_EVENTS);
    await until(() => fanOut.size().members === before.members + 6, 'six members');
    expect(fanOut.size().groups).toBe(before.groups + 3); // machine, admin, and the other document

    const executions = fanOut.stats.executions;
    const { frames, direct } = fanOut.stats;
    member(await deleteLora(server, await server.tokens.user(userId), lora.id), 'DeleteLoraSuccess');
    const deleted = (e: Record<string, unknown>) => e.type === 'LORA_DELETED' && e.loraId === lora.id;
    const got = await Promise.all([...machines, ...admins].map((s, i) => s.waitFor(nextFor(`s${i}`, deleted))));
    const altGot = await alt.waitFor(nextFor('alt', deleted));
    expect(fanOut.stats.executions - executions).toBe(3);
    // every frame was written prebuilt, straight to its TCP socket (ws-frames.ts): the server negotiates no extension
    expect(fanOut.stats.frames - frames).toBe(6);
    expect(fanOut.stats.direct - direct).toBe(6);

    const payloads = got.map((m) => JSON.stringify(m.payload));
    expect(new Set(payloads.slice(0, 3)).size).toBe(1); // the machines' bytes are the same
    expect(new Set(payloads.slice(3)).size).toBe(1);
    expect(got[0]?.payload.data.cacheEvents.userId).toBeNull();
    expect(got[3]?.payload.data.cacheEvents.userId).toBe(userId);
    expect(altGot.payload).toEqual({ data: { cacheEvents: { type: 'LORA_DELETED', loraId: lora.id } } });
    for (const s of [...machines, ...admins, alt]) await s.close();
    await until(() => fanOut.size().members === before.members, 'members gone');
    expect(fanOut.size().groups).toBe(before.groups);
  });

  it("a machine's report reaches only that machine inside a shared group; admins of another machine (other variables) do not get it", async () => {
    const [reporterToken, otherToken] = await Promise.all([server.tokens.machine('fan-reporter'), server.tokens.machine('fan-bystander')]);
    const reporter = await protocolSocket(server.graphqlUrl, reporterToken);
    const bystander = await protocolSocket(server.graphqlUrl, otherToken);
    const adminOfOther = await protocolSocket(server.graphqlUrl, await server.tokens.admin());
    const before = fanOut.size().members;
    reporter.subscribe('r', CACHE_EVENTS);
    bystander.subscribe('b', CACHE_EVENTS);
    adminOfOther.subscribe('a', CACHE_EVENTS, { machineId: 'fan-bystander' });
    await until(() => fanOut.size().members === before + 3, 'three members');

    const res = await server.request(
      ReportCacheEventDocument,
      { input: { type: 'EVICTED', loraId: '4242', reason: 'lru' } },
      { token: reporterToken },
    );
    expect(dataOf(res).reportCacheEvent).toMatchObject({ type: 'EVICTED', machineId: 'fan-reporter' });
    await reporter.waitFor(nextFor('r', (e) => e.type === 'EVICTED' && e.loraId === '4242'));
    // a later global event reaches the bystander: had the report been sent to it, it came first
    const userId = newUserId();
    const lora = await seedLora(server.app, userId);
    member(await deleteLora(server, await server.tokens.user(userId), lora.id), 'DeleteLoraSuccess');
    await bystander.waitFor(nextFor('b', (e) => e.loraId === lora.id));
    await adminOfOther.waitFor(nextFor('a', (e) => e.loraId === lora.id));
    expect(bystander.messages.filter((m) => m.payload?.data?.cacheEvents?.type === 'EVICTED')).toEqual([]);
    expect(adminOfOther.messages.filter((m) => m.payload?.data?.cacheEvents?.type === 'EVICTED')).toEqual([]);
    for (const s of [reporter, bystander, adminOfOther]) await s.close();
  });

  it('a subscriber that completes leaves its group at once; the others keep receiving', async () => {
    const a = await protocolSocket(server.graphqlUrl, await server.tokens.machine('fan-stay'));
    const b = await protocolSocket(server.graphqlUrl, await server.tokens.machine('fan-leave'));
    const before = fanOut.size().members;
    a.subscribe('x', CACHE_EVENTS);
    b.subscribe('x', CACHE_EVENTS);
    await until(() => fanOut.size().members === before + 2, 'two members');
    b.complete('x');
    await until(() => fanOut.size().members === before + 1, 'one member left');
    const userId = newUserId();
    const lora = await seedLora(server.app, userId);
    member(await deleteLora(server, await server.tokens.user(userId), lora.id), 'DeleteLoraSuccess');
    await a.waitFor(nextFor('x', (e) => e.loraId === lora.id));
    await new Promise((r) => setTimeout(r, 200));
    expect(b.messages.filter((m) => m.type === 'next')).toEqual([]);
    for (const s of [a, b]) await s.close();
  });

  it('refusals stay per subscriber: a machine asking for another machine is refused without joining a group', async () => {
    const s = await protocolSocket(server.graphqlUrl, await server.tokens.machine('fan-x'));
    const before = fanOut.size().members;
    s.subscribe('y', CACHE_EVENTS, { machineId: 'fan-y' });
    const refused = await s.waitFor((m) => m.id === 'y' && (m.type === 'error' || m.type === 'next'));
    expect(JSON.stringify(refused.payload)).toMatch(/FORBIDDEN/);
    expect(fanOut.size().members).toBe(before);
    await s.close();
  });
});

describe('WS_SHARED_FANOUT=false', () => {
  let plain: TestServer;
  beforeAll(async () => {
    plain = await startTestServer({ WS_SHARED_FANOUT: 'false' });
  });
  afterAll(() => plain?.stop());

  it('every subscription runs on its own and still gets its events', async () => {
    expect(plain.app.fanOut).toBeNull();
    const sockets: ProtocolSocket[] = await Promise.all(
      ['p-1', 'p-2'].map(async (m) => protocolSocket(plain.graphqlUrl, await plain.tokens.machine(m))),
    );
    for (const s of sockets) s.subscribe('z', CACHE_EVENTS);
    await new Promise((r) => setTimeout(r, 300));
    const userId = newUserId();
    const lora = await seedLora(plain.app, userId);
    member(await deleteLora(plain, await plain.tokens.user(userId), lora.id), 'DeleteLoraSuccess');
    for (const s of sockets) await s.waitFor(nextFor('z', (e) => e.type === 'LORA_DELETED' && e.loraId === lora.id && e.userId === null));
    for (const s of sockets) await s.close();
  });
});
