import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { azuriteConnectionString } from '../../server/embedded/azurite.ts';
import { type CorruptingProxy, startCorruptingProxy } from '../testkit/corrupting-proxy.ts';
import { codes, expectRejectedBeforeExecution, type Res } from '../testkit/graphql-assertions.ts';
import { CSRF_HEADER, nestedInlineFragments, postRaw } from '../testkit/graphql-requests.ts';
import { newUserId } from '../testkit/seed.ts';
import { startTestServer, type TestServer } from '../testkit/server.ts';

/**
 * Development vs production: introspection, suggestions and error masking.
 * A real server per describe block over real HTTP, real PostgreSQL and Azurite, real JWTs.
 * The documents are hand-written on purpose: introspection, misspelt fields and failing selections.
 */

const INTROSPECTION = '{ __schema { queryType { name } mutationType { name } } }';

/**
 * A failure no resolver expects: storage (through a fault proxy in front of Azurite) refuses
 * with 403 the properties request behind a shared-LoRA download URL.
 */
interface ProxiedServer {
  server: TestServer;
  proxy: CorruptingProxy;
}
async function startServerBehindProxy(env: Record<string, string> = {}): Promise<ProxiedServer> {
  const azuritePort = Number(/BlobEndpoint=http:\/\/127\.0\.0\.1:(\d+)/.exec(inject('storageConnectionString'))?.[1]);
  const proxy = await startCorruptingProxy(azuritePort);
  const server = await startTestServer({ ...env, AZURE_STORAGE_CONNECTION_STRING: azuriteConnectionString(proxy.port) });
  return { server, proxy };
}
async function provokeUnexpectedFailure({ server, proxy }: ProxiedServer): Promise<Res> {
  const name = `broken/${randomUUID()}.safetensors`;
  proxy.add({ fault: { kind: 'status', status: 403 }, times: 10, match: (r) => r.url.includes(name) });
  return server.gql(
    'query($n: String!) { sharedLoraDownload(name: $n) { __typename } }',
    { n: name },
    { token: await server.tokens.machine() },
  );
}
const STACK_TRACE = /\n\s+at |\bat [\w$.<>]+ \(|(?:file:\/\/|\/work\/|node_modules)|\.ts:\d+|"stack"/;

describe('introspection and suggestions in development (NODE_ENV=test)', () => {
  let server: TestServer;
  let proxied: ProxiedServer;
  beforeAll(async () => {
    proxied = await startServerBehindProxy();
    server = proxied.server;
  });
  afterAll(async () => {
    await server?.stop();
    await proxied?.proxy.close();
  });

  it('__schema introspection works for a user (and anonymously)', async () => {
    for (const token of [await server.tokens.user(newUserId()), null]) {
      const res = await server.gql(INTROSPECTION, {}, { token });
      expect(res.body).toEqual({ data: { __schema: { queryType: { name: 'Query' }, mutationType: { name: 'Mutation' } } } });
    }
  });

  it('the provoked failure is an unexpected one: development shows its real message (the control for masking)', async () => {
    const res = await provokeUnexpectedFailure(proxied);
    expect(res.body.data ?? null).toBeNull();
    expect(res.body.errors?.[0]?.extensions?.code).toBe('INTERNAL_SERVER_ERROR');
    expect(res.body.errors?.[0]?.message).not.toBe('Unexpected error.');
    expect(res.body.errors?.[0]?.message).toMatch(/403|ServerBusy|injected|status code/i);
  });

  it('field suggestions appear (the control for production)', async () => {
    const res = await server.gql('{ loraQouta { loraCount } }', {}, { token: await server.tokens.user(newUserId()) });
    expect(res.body.errors?.[0]?.message).toContain('Did you mean "loraQuota"?');
  });
});

describe('production (NODE_ENV=production)', () => {
  let server: TestServer;
  let proxied: ProxiedServer;
  beforeAll(async () => {
    proxied = await startServerBehindProxy({ NODE_ENV: 'production' });
    server = proxied.server;
  });
  afterAll(async () => {
    await server?.stop();
    await proxied?.proxy.close();
  });

  it('the server really runs in production mode', () => {
    expect(server.app.config.production).toBe(true);
  });

  it('introspection is refused for users, machines, services and anonymous callers, with no data', async () => {
    const tokens = [await server.tokens.user(newUserId()), await server.tokens.machine(), await server.tokens.service(), null];
    for (const token of tokens) {
      for (const query of [
        INTROSPECTION,
        '{ __type(name: "Lora") { name fields { name } } }',
        '{ loraQuota { __typename } __schema { types { name } } }',
      ]) {
        const res = await server.gql(query, {}, { token });
        expectRejectedBeforeExecution(res);
        expect(res.body.errors?.[0]?.message, JSON.stringify(res.body)).toMatch(/introspection/i);
      }
    }
  });

  it('introspection is allowed for an admin token', async () => {
    const res = await server.gql(INTROSPECTION, {}, { token: await server.tokens.admin() });
    expect(res.body).toEqual({ data: { __schema: { queryType: { name: 'Query' }, mutationType: { name: 'Mutation' } } } });
  });

  it("an admin's accepted introspection is not reused for a user's identical query, nor the other way round", async () => {
    const admin = await server.tokens.admin();
    const user = await server.tokens.user(newUserId());
    const first = `{ __schema { subscriptionType { name } } } # ${randomUUID()}`;
    expect((await server.gql(first, {}, { token: admin })).body.data).toBeTruthy();
    expectRejectedBeforeExecution(await server.gql(first, {}, { token: user }));
    const second = `{ __schema { subscriptionType { name } } } # ${randomUUID()}`;
    expectRejectedBeforeExecution(await server.gql(second, {}, { token: user }));
    expect((await server.gql(second, {}, { token: admin })).body.data).toBeTruthy();
  });

  it('a misspelled field, argument or type gets no "Did you mean" suggestion', async () => {
    const token = await server.tokens.user(newUserId());
    const cases: [string, string][] = [
      ['{ loraQouta { loraCount } }', '"loraQuota"'],
      ['{ loraQuota { loraCont } }', '"loraCount"'],
      ['{ loras(limt: 5) { total } }', '"limit"'],
      ['{ loraQuota { ... on LoraQuot { loraCount } } }', '"LoraQuota"'],
    ];
    for (const [query, hidden] of cases) {
      const res = await server.gql(query, {}, { token });
      expectRejectedBeforeExecution(res);
      const text = JSON.stringify(res.body.errors);
      expect(text, query).not.toMatch(/did you mean/i);
      expect(text, query).not.toContain(hidden.replaceAll('"', '\\"'));
    }
  });

  it('a misspelled enum value gets no suggestion either (no schema names leak to non-admins)', async () => {
    const token = await server.tokens.user(newUserId());
    const res = await server.gql('{ loras(sort: NAEM) { total } }', {}, { token });
    expectRejectedBeforeExecution(res);
    expect(JSON.stringify(res.body)).not.toMatch(/did you mean/i);
  });

  it('a bad variable value is a client error (BAD_USER_INPUT) without suggestions, not an INTERNAL_SERVER_ERROR', async () => {
    const token = await server.tokens.user(newUserId());
    const res = await server.gql('query($s: LoraSort) { loras(sort: $s) { total } }', { s: 'NAEM' }, { token });
    expectRejectedBeforeExecution(res);
    expect(codes(res)).toEqual(['BAD_USER_INPUT']);
    expect(JSON.stringify(res.body)).not.toMatch(/did you mean/i);
  });

  it('an unexpected failure is masked: a generic message, INTERNAL_SERVER_ERROR, no stack or internals', async () => {
    const res = await provokeUnexpectedFailure(proxied);
    expect(res.body.data ?? null).toBeNull();
    expect(res.body.errors).toHaveLength(1);
    expect(res.body.errors?.[0]).toMatchObject({ message: 'Unexpected error.', extensions: { code: 'INTERNAL_SERVER_ERROR' } });
    const text = JSON.stringify(res.body);
    expect(text).not.toMatch(STACK_TRACE);
    expect(text).not.toMatch(/prisma|postgres|azure|blob|403|ServerBusy|injected|broken\//i);
  });

  it('no response to any provoked failure carries a stack trace or server paths', async () => {
    const user = await server.tokens.user(newUserId());
    const auth = { authorization: `Bearer ${user}` };
    const json = { 'content-type': 'application/json', ...auth };
    const url = server.graphqlUrl;
    const responses = await Promise.all([
      postRaw(url, {
        method: 'POST',
        headers: json,
        body: JSON.stringify({ query: 'query($s: String) { loras(search: $s) { total } }', variables: { s: 'a\u0000b' } }),
      }),
      postRaw(url, { method: 'POST', headers: json, body: '{"query": "{ loraQuota' }),
      postRaw(url, { method: 'POST', headers: json, body: JSON.stringify({ query: '{ loraQuota { loraCount }' }) }),
      postRaw(url, { method: 'POST', headers: json, body: JSON.stringify({ query: 42 }) }),
      postRaw(url, { method: 'POST', headers: json, body: JSON.stringify({}) }),
      postRaw(url, {
        method: 'POST',
        headers: json,
        body: JSON.stringify({ query: '{ loraQuota { loraCount } }', operationName: 'Nope' }),
      }),
      postRaw(url, {
        method: 'POST',
        headers: json,
        body: JSON.stringify({ query: 'query($n: Int!) { loras(limit: $n) { total } }', variables: { n: 'many' } }),
      }),
      postRaw(url, { method: 'POST', headers: json, body: JSON.stringify({ query: '{ loras(limit: 100000) { total } }' }) }),
      postRaw(url, {
        method: 'POST',
        headers: json,
        body: JSON.stringify({ query: 'query($id: ID!) { lora(id: $id) { __typename } }', variables: { id: { $gt: '' } } }),
      }),
      postRaw(url, {
        method: 'POST',
        headers: json,
        body: JSON.stringify({ query: 'mutation { setUserLoraQuota(userId: "x", maxStorageBytes: -1) { userId } }' }),
      }),
      postRaw(url, { method: 'POST', headers: json, body: JSON.stringify([{ query: '{ __typename }' }]) }),
      postRaw(url, {
        method: 'POST',
        headers: json,
        body: JSON.stringify({ query: `{ loraQuota { ${nestedInlineFragments('loraCount', 'LoraQuota', 20)} } }` }),
      }),
      postRaw(url, { method: 'POST', headers: json, body: JSON.stringify({ query: `{ __typename } #${'x'.repeat(20_001)}` }) }),
      postRaw(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: 'Bearer a.b.c' },
        body: JSON.stringify({ query: '{ __typename }' }),
      }),
      postRaw(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ query: '{ loraQuota { loraCount } }' }),
      }),
      postRaw(url, { method: 'POST', headers: { 'content-type': 'text/plain', ...auth }, body: '{ __typename }' }),
      postRaw(url, {
        method: 'POST',
        headers: { 'content-type': 'multipart/form-data; boundary=xyz', ...auth, ...CSRF_HEADER },
        body: '--xyz\r\nContent-Disposition: form-data; name="operations"\r\n\r\n{bad json\r\n--xyz--\r\n',
      }),
      postRaw(url, { method: 'POST', headers: json, body: `{"query":"{ __typename }","pad":"${'x'.repeat(1_100_000)}"}` }),
      postRaw(`${url}?query=${encodeURIComponent('mutation { setUserLoraQuota(userId: "x") { userId } }')}`, {
        method: 'GET',
        headers: { ...auth, ...CSRF_HEADER },
      }),
      postRaw(`${url}?query=${encodeURIComponent('{ loraQuota { loraCount }')}`, { method: 'GET', headers: { ...auth, ...CSRF_HEADER } }),
      postRaw(url, { method: 'PUT', headers: json, body: JSON.stringify({ query: '{ __typename }' }) }),
    ]);
    for (const res of responses) {
      expect(res.text, res.text.slice(0, 300)).not.toMatch(STACK_TRACE);
      expect(res.status, res.text.slice(0, 300)).toBeLessThan(500);
    }
  });
});
