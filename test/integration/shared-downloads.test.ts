import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SharedLoraDownloadDocument } from '../../sdk/index.ts';
import { dataOf, member } from '../testkit/graphql-assertions.ts';
import { expectThrownCode } from '../testkit/library-helpers.ts';
import { sizedLora } from '../testkit/safetensors.ts';
import { newUserId } from '../testkit/seed.ts';
import { startTestServer, type TestServer } from '../testkit/server.ts';

/** The shared library: machines get short-lived read URLs for shared blobs by name (`sharedLoraDownload`). */

describe('sharedLoraDownload', () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer();
  });
  afterAll(async () => {
    await server?.stop();
  });

  it('gives a machine a short-lived URL that downloads the shared blob', async () => {
    const name = `style/foo-${randomUUID().slice(0, 8)}.safetensors`;
    const bytes = sizedLora(6);
    await server.app.blobs.putShared(name, bytes);
    const before = Date.now();
    const res = await server.request(SharedLoraDownloadDocument, { name }, { token: await server.tokens.machine(`gpu-${randomUUID()}`) });
    const dl = member(dataOf(res).sharedLoraDownload, 'LoraDownload');
    expect(dl).toMatchObject({
      __typename: 'LoraDownload',
      loraId: null,
      sharedName: name,
      sha256: null,
      sizeBytes: bytes.length,
      fileName: name.split('/').pop(),
      userId: null,
    });
    expect(dl.etag).not.toBe('');
    const expires = Date.parse(dl.expiresAt);
    expect(expires).toBeGreaterThan(before);
    expect(expires).toBeLessThanOrEqual(before + 3600_000);
    const url = new URL(dl.url);
    expect(url.searchParams.get('sp')).toBe('r'); // read-only
    const body = Buffer.from(await (await fetch(dl.url)).arrayBuffer());
    expect(body.equals(bytes)).toBe(true);
    // The URL names that one blob: swapping the name breaks the signature.
    const forged = dl.url.replace(encodeURIComponent(name.split('/').pop() ?? ''), 'other.safetensors');
    expect((await fetch(forged)).status).toBeGreaterThanOrEqual(400);
  });

  it('refuses traversal, absolute, backslash and NUL names (ValidationError) and answers NotFoundError for a missing one', async () => {
    const token = await server.tokens.machine(`gpu-${randomUUID()}`);
    const secret = `style/secret-${randomUUID().slice(0, 8)}.safetensors`;
    await server.app.blobs.putShared(secret, sizedLora(1));
    const badNames = [
      '../secret.safetensors',
      `style/../${secret}`,
      '..',
      'style/..',
      '/style/foo.safetensors',
      'style\\foo.safetensors',
      '..\\..\\foo.safetensors',
      'style/foo\u0000.safetensors',
      '',
      'style//foo.safetensors',
      './foo.safetensors',
      'style/\u202Egnp.safetensors',
    ];
    for (const name of badNames) {
      const res = await server.request(SharedLoraDownloadDocument, { name }, { token });
      const result = member(dataOf(res).sharedLoraDownload, 'ValidationError');
      expect(result.code, JSON.stringify(name)).toBe('VALIDATION_FAILED');
      expect(result.issues.map((i) => i.path)).toContain('name');
    }
    const missing = `style/missing-${randomUUID()}.safetensors`;
    const res = await server.request(SharedLoraDownloadDocument, { name: missing }, { token });
    expect(res.body.data?.sharedLoraDownload).toMatchObject({ __typename: 'NotFoundError', code: 'LORA_NOT_FOUND' });
    // Users cannot use it at all.
    expectThrownCode(
      await server.request(SharedLoraDownloadDocument, { name: secret }, { token: await server.tokens.user(newUserId()) }),
      'FORBIDDEN',
    );
  });
});
