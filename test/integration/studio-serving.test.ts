import { request as httpRequest } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LorasDocument } from '../../sdk/index.ts';
import { DEMO_USER_ID } from '../../server/auth/dev-identities.ts';
import { isLoopback } from '../../server/studio/dev-tokens.ts';
import { buildStudioIfStale } from '../testkit/browser.ts';
import { dataOf } from '../testkit/graphql-assertions.ts';
import { newUserId, seedLora } from '../testkit/seed.ts';
import { startTestServer, type TestServer } from '../testkit/server.ts';

/**
 * The API serves the built Studio at /studio/ (static files, SPA fallback, CSP, nothing outside
 * studio/dist) and, on a development server only, the dev token picker's tokens.
 */

let dev: TestServer;
let plain: TestServer;
beforeAll(async () => {
  buildStudioIfStale();
  [dev, plain] = await Promise.all([startTestServer({}, { studioDevTokens: true }), startTestServer()]);
}, 120_000);
afterAll(async () => {
  await Promise.all([dev?.stop(), plain?.stop()]);
});

/** A GET with the path sent exactly as given (fetch would normalise `..`). */
function rawGet(
  baseUrl: string,
  path: string,
  method = 'GET',
): Promise<{ status: number; headers: Record<string, unknown>; body: string }> {
  const url = new URL(baseUrl);
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: url.hostname, port: url.port, path, method }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        body += c;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('Studio static files', () => {
  it('/studio redirects to /studio/, which is the app with a strict Content-Security-Policy', async () => {
    const redirect = await rawGet(plain.url, '/studio');
    expect(redirect.status).toBe(308);
    expect(redirect.headers.location).toBe('/studio/');
    const page = await rawGet(plain.url, '/studio/');
    expect(page.status).toBe(200);
    expect(page.headers['content-type']).toMatch(/^text\/html/);
    expect(page.headers['content-security-policy']).toMatch(/default-src 'self'.*frame-ancestors 'none'/);
    expect(page.headers['cache-control']).toBe('no-cache');
    expect(page.body).toMatch(/<div id="root">/);
    const script = /src="(\/studio\/assets\/[^"]+\.js)"/.exec(page.body)?.[1];
    expect(script).toBeDefined();
    const asset = await rawGet(plain.url, script as string);
    expect(asset.status).toBe(200);
    expect(asset.headers['content-type']).toMatch(/^text\/javascript/);
    expect(asset.headers['cache-control']).toMatch(/immutable/);
  });

  it('page paths of the app get index.html; a missing asset is a 404', async () => {
    expect((await rawGet(plain.url, '/studio/picker')).body).toMatch(/<div id="root">/);
    expect((await rawGet(plain.url, '/studio/assets/missing.js')).status).toBe(404);
  });

  it('nothing outside studio/dist is served: traversal, encoded traversal, NUL, bad escapes', async () => {
    for (const path of [
      '/studio/../package.json',
      '/studio/%2e%2e/%2e%2e/package.json',
      '/studio/..%2f..%2fpackage.json',
      '/studio/%00',
      '/studio/%E0%A4%A',
    ]) {
      const res = await rawGet(plain.url, path);
      expect(res.body, path).not.toMatch(/"workspaces"|lora-vault/);
      expect([404, 200], path).toContain(res.status);
      if (res.status === 200) expect(res.body, path).toMatch(/<div id="root">/); // normalised by Node to a page path
    }
  });

  it('answers GET and HEAD only', async () => {
    expect((await rawGet(plain.url, '/studio/', 'POST')).status).toBe(405);
    const head = await rawGet(plain.url, '/studio/', 'HEAD');
    expect(head.status).toBe(200);
    expect(head.body).toBe('');
  });
});

describe('dev token picker', () => {
  it('is absent unless the server runs on its generated development secret', async () => {
    const res = await rawGet(plain.url, '/studio/dev-tokens');
    expect(res.body).not.toMatch(/token/);
    expect(res.body).toMatch(/<div id="root">/); // just a page path of the app
  });

  it('hands out working user tokens for the demo users and for a given user id, to loopback clients', async () => {
    const res = await fetch(`${dev.url}/studio/dev-tokens`);
    expect(res.status).toBe(200);
    expect(res.headers.get('cache-control')).toBe('no-store');
    const { identities } = (await res.json()) as { identities: { userId: string; token: string }[] };
    expect(identities.map((i) => i.userId)).toContain(DEMO_USER_ID);

    const userId = newUserId();
    const lora = await seedLora(dev.app, userId);
    const mine = (await (await fetch(`${dev.url}/studio/dev-tokens?user=${userId}`)).json()) as { identities: { token: string }[] };
    const page = dataOf(await dev.request(LorasDocument, {}, { token: mine.identities[0]?.token })).loras;
    expect(page.loras.map((l) => l.id)).toEqual([lora.id]);
  });

  it('refuses a user that is not a UUID', async () => {
    expect((await fetch(`${dev.url}/studio/dev-tokens?user=admin`)).status).toBe(400);
  });

  it('counts only loopback addresses as this machine', () => {
    for (const a of ['127.0.0.1', '127.8.9.10', '::1', '::ffff:127.0.0.1']) expect(isLoopback(a), a).toBe(true);
    for (const a of ['10.0.0.5', '192.168.1.2', '::ffff:10.0.0.1', 'fe80::1', '127.0.0.1.evil', undefined])
      expect(isLoopback(a), String(a)).toBe(false);
  });
});
