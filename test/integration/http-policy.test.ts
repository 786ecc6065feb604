import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../testkit/server.ts';

/**
 * What the HTTP endpoint offers browsers and HTTP clients beyond plain queries (issue 10, point 11;
 * THREATS.md row 36): CORS only for configured origins and never with credentials, GraphiQL off in
 * production unless asked for, subscriptions over WebSocket only (no SSE / multipart streams).
 */

const STUDIO = 'https://studio.example.com';
const EVIL = 'https://evil.example.net';

async function preflight(server: TestServer, origin: string): Promise<Response> {
  return fetch(server.graphqlUrl, {
    method: 'OPTIONS',
    headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization, content-type' },
  });
}

async function postFrom(server: TestServer, origin: string): Promise<Response> {
  return fetch(server.graphqlUrl, {
    method: 'POST',
    headers: { origin, 'content-type': 'application/json' },
    body: JSON.stringify({ query: '{ __typename }' }),
  });
}

describe('production defaults (NODE_ENV=production, nothing else set)', () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer({ NODE_ENV: 'production' });
  });
  afterAll(() => server?.stop());

  it('sends no CORS headers to a foreign origin: neither its origin reflected nor credentials', async () => {
    for (const res of [await preflight(server, EVIL), await postFrom(server, EVIL)]) {
      expect(res.headers.get('access-control-allow-origin')).toBeNull();
      expect(res.headers.get('access-control-allow-credentials')).toBeNull();
    }
  });

  it('does not serve GraphiQL', async () => {
    const page = await fetch(server.graphqlUrl, { headers: { accept: 'text/html' } });
    const html = await page.text();
    expect(html).not.toMatch(/graphiql/i);
  });
});

describe('CORS_ORIGINS in production', () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer({ NODE_ENV: 'production', CORS_ORIGINS: `${STUDIO}, http://localhost:5173`, GRAPHIQL: 'true' });
  });
  afterAll(() => server?.stop());

  it('allows a listed origin (preflight and request), without credentials', async () => {
    const pre = await preflight(server, STUDIO);
    expect(pre.status).toBe(204);
    expect(pre.headers.get('access-control-allow-origin')).toBe(STUDIO);
    expect(pre.headers.get('access-control-allow-headers')?.toLowerCase()).toContain('authorization');
    expect(pre.headers.get('access-control-allow-credentials')).toBeNull();
    const res = await postFrom(server, 'http://localhost:5173');
    expect(res.headers.get('access-control-allow-origin')).toBe('http://localhost:5173');
    expect(res.headers.get('access-control-allow-credentials')).toBeNull();
    expect(await res.json()).toEqual({ data: { __typename: 'Query' } });
  });

  it('gives an unlisted origin nothing', async () => {
    const res = await preflight(server, EVIL);
    expect(res.headers.get('access-control-allow-origin')).toBeNull();
    expect(res.headers.get('access-control-allow-credentials')).toBeNull();
  });

  it('serves GraphiQL when GRAPHIQL=true says so', async () => {
    const page = await fetch(server.graphqlUrl, { headers: { accept: 'text/html' } });
    expect(await page.text()).toMatch(/graphiql/i);
  });
});

describe('development defaults', () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer({ NODE_ENV: 'development' });
  });
  afterAll(() => server?.stop());

  it('answers any origin (convenient for local front-ends) but never with credentials', async () => {
    const res = await preflight(server, EVIL);
    expect(res.headers.get('access-control-allow-origin')).toBe(EVIL);
    expect(res.headers.get('access-control-allow-credentials')).toBeNull();
  });

  it('refuses subscriptions over HTTP (SSE, multipart) with a clear error; they are served over WebSocket only', async () => {
    const token = await server.tokens.admin();
    const query = 'subscription { cacheEvents { type loraId } }';
    const post = (accept: string) =>
      // a stream that stays open (SSE before the fix) hits the timeout instead of ending
      fetch(server.graphqlUrl, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept, authorization: `Bearer ${token}` },
        body: JSON.stringify({ query }),
        signal: AbortSignal.timeout(5_000),
      });
    for (const accept of ['text/event-stream', 'application/json']) {
      const res = await post(accept);
      const text = await res.text();
      expect(res.status, text).toBe(400);
      expect(text, text).toMatch(/Subscriptions are served over WebSocket only/);
      expect(text).toMatch(/BAD_USER_INPUT/);
    }
    const multipart = await post('multipart/mixed'); // incremental delivery is off altogether
    expect(multipart.status).toBe(406);
    expect(await multipart.text()).not.toMatch(/cacheEvents/);
    const get = await fetch(`${server.graphqlUrl}?query=${encodeURIComponent(query)}`, {
      headers: { accept: 'text/event-stream', authorization: `Bearer ${token}`, 'x-graphql-yoga-csrf': '1' },
      signal: AbortSignal.timeout(5_000),
    });
    expect(await get.text()).toMatch(/Subscriptions are served over WebSocket only/);
  });
});
