import { randomBytes } from 'node:crypto';
import { parse as parseDisposition } from 'content-disposition';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CreateLoraDownloadDocument, DeleteLoraDocument } from '../../sdk/index.ts';
import { userClient } from '../testkit/agent.ts';
import { dataOf, expectRefused, member, withoutId } from '../testkit/graphql-assertions.ts';
import { sha256 } from '../testkit/hashes.ts';
import { newUserId, seedLora } from '../testkit/seed.ts';
import { startTestServer, type TestServer } from '../testkit/server.ts';

/** §3 of issue 13: owners (and admins) download their own LoRAs; nobody else learns anything. */

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer();
});
afterAll(async () => {
  await server?.stop();
});

async function createDownload(on: TestServer, token: string, id: string) {
  return on.request(CreateLoraDownloadDocument, { id }, { token });
}

describe('createLoraDownload', () => {
  it('the owner gets a URL that fetches the exact bytes, saved under the display name (RFC 6266 filename*), audited', async () => {
    const userId = newUserId();
    const bytes = randomBytes(200_000);
    const name = 'Ink "wash" 日本/風\\v1.5';
    const lora = await seedLora(server.app, userId, { bytes, name });
    const token = await server.tokens.user(userId);

    const link = member(dataOf(await createDownload(server, token, lora.id)).createLoraDownload, 'LoraDownloadLink');
    expect(link).toMatchObject({
      loraId: lora.id,
      fileName: 'Ink _wash_ 日本_風_v1.5.safetensors',
      sizeBytes: bytes.length,
      sha256: sha256(bytes),
    });
    expect(new Date(link.expiresAt).getTime()).toBeGreaterThan(Date.now());

    const res = await fetch(link.url);
    expect(res.status).toBe(200);
    expect(sha256(Buffer.from(await res.arrayBuffer()))).toBe(sha256(bytes));
    const header = res.headers.get('content-disposition') ?? '';
    expect(header).not.toMatch(/[\r\n]/);
    expect(header).toContain("filename*=UTF-8''");
    const parsed = parseDisposition(header);
    expect(parsed.type).toBe('attachment');
    expect(parsed.parameters.filename).toBe(link.fileName); // the extended (UTF-8) value wins
    expect(/^[\x20-\x7e]+$/.test(header)).toBe(true); // the fallback is plain ASCII

    const [entry] = await server.app.db.audit_log.findMany({ where: { lora_id: BigInt(lora.id), action: 'lora.owner-download' } });
    expect(entry).toMatchObject({ actor_role: 'user', actor_id: userId, user_id: userId });

    // the SDK's method (Studio's Download action) gets the same
    const sdk = await userClient(server, userId);
    expect(await sdk.createDownload({ id: lora.id })).toMatchObject({ __typename: 'LoraDownloadLink', fileName: link.fileName });
    await sdk.close();
  });

  it('an admin gets one for any LoRA; a stranger, a deleted LoRA and a missing id all answer the same LORA_NOT_FOUND', async () => {
    const owner = newUserId();
    const lora = await seedLora(server.app, owner, { name: 'Plain' });
    const admin = member(dataOf(await createDownload(server, await server.tokens.admin(), lora.id)).createLoraDownload, 'LoraDownloadLink');
    expect(admin.fileName).toBe('Plain.safetensors');

    const stranger = await server.tokens.user(newUserId());
    const theirs = await createDownload(server, stranger, lora.id);
    const missing = await createDownload(server, stranger, '999999999999');
    expect(member(dataOf(theirs).createLoraDownload, 'NotFoundError').code).toBe('LORA_NOT_FOUND');
    expect(withoutId(theirs.body, lora.id)).toEqual(withoutId(missing.body, '999999999999'));
    const before = await server.app.db.audit_log.count({ where: { lora_id: BigInt(lora.id), action: 'lora.owner-download' } });
    expect(before).toBe(1); // the admin's; the stranger's attempt wrote nothing

    const ownerToken = await server.tokens.user(owner);
    member(dataOf(await server.request(DeleteLoraDocument, { id: lora.id }, { token: ownerToken })).deleteLora, 'DeleteLoraSuccess');
    const deleted = await createDownload(server, ownerToken, lora.id);
    expect(withoutId(deleted.body, lora.id)).toEqual(withoutId(missing.body, '999999999999'));

    // machines and services use grants (loraDownload), not this
    expectRefused(await createDownload(server, await server.tokens.machine(), lora.id), 'FORBIDDEN');
    expectRefused(await createDownload(server, await server.tokens.service(), lora.id), 'FORBIDDEN');
  });

  it("the URL is the API's (no storage URL, no Authorization needed) and only reads: no write, no delete, the file untouched", async () => {
    const userId = newUserId();
    const bytes = randomBytes(10_000);
    const lora = await seedLora(server.app, userId, { bytes });
    const link = member(
      dataOf(await createDownload(server, await server.tokens.user(userId), lora.id)).createLoraDownload,
      'LoraDownloadLink',
    );
    expect(link.url.startsWith(`${server.url}/downloads/loras/`)).toBe(true);
    const url = new URL(link.url);
    expect(url.search).toBe('');
    const put = await fetch(url, { method: 'PUT', body: 'overwritten' });
    expect(put.status).toBe(405);
    expect(put.headers.get('allow')).toBe('GET, HEAD');
    expect((await fetch(url, { method: 'DELETE' })).status).toBe(405);
    expect(sha256(Buffer.from(await (await fetch(url)).arrayBuffer()))).toBe(sha256(bytes)); // untouched
  });

  it('the URL stops working once it expires (SAS_TTL_SECONDS)', async () => {
    const shortLived = await startTestServer({ SAS_TTL_SECONDS: '2' });
    try {
      const userId = newUserId();
      const lora = await seedLora(shortLived.app, userId);
      const link = member(
        dataOf(await createDownload(shortLived, await shortLived.tokens.user(userId), lora.id)).createLoraDownload,
        'LoraDownloadLink',
      );
      const expiresAt = new Date(link.expiresAt).getTime();
      expect(expiresAt - Date.now()).toBeLessThanOrEqual(2000);
      await new Promise((r) => setTimeout(r, Math.max(0, expiresAt - Date.now()) + 1500));
      expect((await fetch(link.url)).status).toBe(404); // LORA_NOT_FOUND, as a forged link (owner-download-route.test.ts)
    } finally {
      await shortLived.stop();
    }
  });
});
