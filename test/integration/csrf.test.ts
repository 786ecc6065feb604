import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CSRF_HEADER, postRaw } from '../testkit/graphql-requests.ts';
import { quotaRow } from '../testkit/rows.ts';
import { newUserId } from '../testkit/seed.ts';
import { startTestServer, type TestServer } from '../testkit/server.ts';

/**
 * CSRF prevention: requests a browser could send without a preflight need the header.
 * A real server per describe block over real HTTP, real PostgreSQL and Azurite, real JWTs.
 * Requests are written by hand on purpose: the transport (method, content type, headers) is tested.
 */

const CSRF_HEADERS: Record<string, string>[] = [{ 'x-graphql-yoga-csrf': '1' }, { 'apollo-require-preflight': 'true' }];

describe('CSRF prevention', () => {
  let server: TestServer;
  let admin: string;
  beforeAll(async () => {
    server = await startTestServer();
    admin = await server.tokens.admin();
  });
  afterAll(() => server?.stop());

  const getUrl = (query: string) => `${server.graphqlUrl}?query=${encodeURIComponent(query)}`;

  function multipartBody(
    operations: object,
    boundary = `----lv${randomUUID().replaceAll('-', '')}`,
  ): { body: string; contentType: string } {
    const part = (name: string, value: string) => `--${boundary}\r\nContent-Disposition: form-data; name="${name}"\r\n\r\n${value}\r\n`;
    return {
      body: `${part('operations', JSON.stringify(operations))}${part('map', '{}')}--${boundary}--\r\n`,
      contentType: `multipart/form-data; boundary=${boundary}`,
    };
  }

  function expectCsrfRefusal(res: { status: number; text: string }): void {
    expect(res.status).toBe(403);
    expect(res.text).toContain('Required CSRF header(s) not present');
    expect(res.text).not.toContain('"data"');
  }

  it('a GET with a query but no CSRF header is refused with 403', async () => {
    const user = newUserId();
    const res = await postRaw(getUrl('{ loraQuota { userId } }'), {
      headers: { authorization: `Bearer ${await server.tokens.user(user)}` },
    });
    expectCsrfRefusal(res);
  });

  it('a GET with x-graphql-yoga-csrf or apollo-require-preflight is served', async () => {
    const user = newUserId();
    const token = await server.tokens.user(user);
    for (const header of CSRF_HEADERS) {
      const res = await postRaw(getUrl('{ loraQuota { userId } }'), { headers: { authorization: `Bearer ${token}`, ...header } });
      expect(res.status).toBe(200);
      expect(res.json).toEqual({ data: { loraQuota: { userId: user } } });
    }
  });

  it('a mutation over GET is never executed (403 without the header, 405 with it)', async () => {
    const target = newUserId();
    const url = getUrl(`mutation { setUserLoraQuota(userId: "${target}", maxLoraCount: 9) { userId } }`);
    expectCsrfRefusal(await postRaw(url, { headers: { authorization: `Bearer ${admin}` } }));
    const withHeader = await postRaw(url, { headers: { authorization: `Bearer ${admin}`, ...CSRF_HEADER } });
    expect(withHeader.status).toBe(405);
    expect(await quotaRow(server, target)).toBeNull();
  });

  it('a multipart/form-data POST without the header is refused with 403 and not executed', async () => {
    const target = newUserId();
    const operations = { query: `mutation { setUserLoraQuota(userId: "${target}", maxLoraCount: 9) { userId } }` };
    const { body, contentType } = multipartBody(operations);
    expectCsrfRefusal(
      await postRaw(server.graphqlUrl, {
        method: 'POST',
        headers: { 'content-type': contentType, authorization: `Bearer ${admin}` },
        body,
      }),
    );
    const upper = multipartBody(operations);
    expectCsrfRefusal(
      await postRaw(server.graphqlUrl, {
        method: 'POST',
        headers: {
          'content-type': upper.contentType.replace('multipart/form-data', 'Multipart/Form-Data'),
          authorization: `Bearer ${admin}`,
        },
        body: upper.body,
      }),
    );
    const form = new FormData();
    form.set('operations', JSON.stringify(operations));
    form.set('map', '{}');
    expectCsrfRefusal(await postRaw(server.graphqlUrl, { method: 'POST', headers: { authorization: `Bearer ${admin}` }, body: form }));
    expect(await quotaRow(server, target)).toBeNull();
  });

  it('a multipart/form-data POST with the header is not refused for CSRF', async () => {
    const target = newUserId();
    const { body, contentType } = multipartBody({
      query: `mutation { setUserLoraQuota(userId: "${target}", maxLoraCount: 9) { userId } }`,
    });
    for (const header of CSRF_HEADERS) {
      const res = await postRaw(server.graphqlUrl, {
        method: 'POST',
        headers: { 'content-type': contentType, authorization: `Bearer ${admin}`, ...header },
        body,
      });
      expect(res.status, res.text).not.toBe(403);
      expect(res.text).not.toContain('CSRF');
      expect(res.json).toEqual({ data: { setUserLoraQuota: { userId: target } } });
    }
    expect((await quotaRow(server, target))?.max_lora_count).toBe(9);
  });

  it('text/plain, form-urlencoded and content-type-less POSTs need the header; application/json does not', async () => {
    const target = newUserId();
    const payload = JSON.stringify({ query: `mutation { setUserLoraQuota(userId: "${target}", maxLoraCount: 9) { userId } }` });
    const auth = { authorization: `Bearer ${admin}` };
    expectCsrfRefusal(
      await postRaw(server.graphqlUrl, { method: 'POST', headers: { 'content-type': 'text/plain', ...auth }, body: payload }),
    );
    expectCsrfRefusal(
      await postRaw(server.graphqlUrl, { method: 'POST', headers: { 'content-type': 'text/plain;charset=UTF-8', ...auth }, body: payload }),
    );
    expectCsrfRefusal(
      await postRaw(server.graphqlUrl, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', ...auth },
        body: new URLSearchParams({ query: `mutation { setUserLoraQuota(userId: "${target}", maxLoraCount: 9) { userId } }` }).toString(),
      }),
    );
    expectCsrfRefusal(await postRaw(server.graphqlUrl, { method: 'POST', headers: auth, body: new Blob([payload]) }));
    expect(await quotaRow(server, target)).toBeNull();
    // With the header, text/plain is no longer a CSRF matter (Yoga may still not parse it).
    const withHeader = await postRaw(server.graphqlUrl, {
      method: 'POST',
      headers: { 'content-type': 'text/plain', ...auth, ...CSRF_HEADER },
      body: payload,
    });
    expect(withHeader.text).not.toContain('CSRF');
    // application/json always triggers a browser preflight, so it needs no header.
    const jsonRes = await postRaw(server.graphqlUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...auth },
      body: payload,
    });
    expect(jsonRes.status).toBe(200);
    expect(jsonRes.json).toEqual({ data: { setUserLoraQuota: { userId: target } } });
  });
});
