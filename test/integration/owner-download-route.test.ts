import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { get, type IncomingMessage } from 'node:http';
import { decodeJwt, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { CreateLoraDownloadDocument } from '../../sdk/index.ts';
import { azuriteConnectionString } from '../../server/embedded/azurite.ts';
import { type CorruptingProxy, proxyToTestAzurite } from '../testkit/corrupting-proxy.ts';
import { mintGrant } from '../testkit/grants.ts';
import { dataOf, member } from '../testkit/graphql-assertions.ts';
import { sha256 } from '../testkit/hashes.ts';
import { deleteLora, sleep } from '../testkit/library-helpers.ts';
import { OWNER_DOWNLOAD_HEADERS } from '../testkit/owner-downloads.ts';
import { eventually, newUser, seedLora } from '../testkit/seed.ts';
import { startTestServer, type TestServer } from '../testkit/server.ts';

/**
 * `GET|HEAD /downloads/loras/<token>` (server/http/owner-download-route.ts): owners' downloads
 * streamed through the API (THREATS row 72 and the token rows after it). Real HTTP, real Azurite
 * behind a proxy that shows what the server reads from storage.
 */

let proxy: CorruptingProxy;
let server: TestServer;
beforeAll(async () => {
  proxy = await proxyToTestAzurite(inject('storageConnectionString'));
  server = await startTestServer({ AZURE_STORAGE_CONNECTION_STRING: azuriteConnectionString(proxy.port) });
});
afterAll(async () => {
  await server?.stop();
  await proxy?.close();
});

async function linkFor(on: TestServer, token: string, id: string) {
  return member(dataOf(await on.request(CreateLoraDownloadDocument, { id }, { token })).createLoraDownload, 'LoraDownloadLink');
}

/** A LoRA of `bytes` for a new user, and the owner's link to it. */
async function ownLink(bytes: Buffer) {
  const owner = await newUser(server);
  const lora = await seedLora(server.app, owner.id, { bytes, name: 'Route test' });
  return { owner, lora, link: await linkFor(server, owner.token, lora.id) };
}

function headerNames(res: Response): string[] {
  return [...res.headers.keys()].filter((h) => !OWNER_DOWNLOAD_HEADERS.has(h));
}

/** A GET over node:http whose response the test reads (or stops reading) itself. */
function open(url: string, headers: Record<string, string> = {}): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => get(url, { headers }, resolve).once('error', reject));
}

async function readAll(res: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of res) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** The storage GETs the server made since `from` (its reads of blob bytes). */
const storageReads = (from: number) => proxy.log.slice(from).filter((e) => e.method === 'GET' && e.url.includes('/content/'));

describe('owner download route', () => {
  it('one range → 206 with Content-Range and exactly those bytes; several → the whole file; unsatisfiable → 416; If-Range, If-None-Match', async () => {
    const bytes = randomBytes(300_000);
    const { link } = await ownLink(bytes);
    const ranged = async (range: string, extra: Record<string, string> = {}) => {
      const res = await fetch(link.url, { headers: { range, ...extra } });
      expect(headerNames(res)).toEqual([]);
      return { res, body: Buffer.from(await res.arrayBuffer()) };
    };
    const mid = await ranged('bytes=100-199');
    expect(mid.res.status).toBe(206);
    expect(mid.res.headers.get('content-range')).toBe('bytes 100-199/300000');
    expect(mid.res.headers.get('content-length')).toBe('100');
    expect(mid.body.equals(bytes.subarray(100, 200))).toBe(true);
    expect((await ranged('bytes=-10')).body.equals(bytes.subarray(-10))).toBe(true);
    const tail = await ranged('bytes=299990-');
    expect([tail.res.status, tail.res.headers.get('content-range')]).toEqual([206, 'bytes 299990-299999/300000']);
    expect(tail.body.equals(bytes.subarray(299_990))).toBe(true);

    const past = await ranged('bytes=300000-');
    expect(past.res.status).toBe(416);
    expect(past.res.headers.get('content-range')).toBe('bytes */300000');
    expect(JSON.parse(past.body.toString())).toMatchObject({ errors: [{ extensions: { code: 'BAD_USER_INPUT' } }] });

    const several = await ranged('bytes=0-9,20-29');
    expect(several.res.status).toBe(200);
    expect(several.body.equals(bytes)).toBe(true);

    const whole = await fetch(link.url);
    const etag = whole.headers.get('etag') as string;
    const lastModified = whole.headers.get('last-modified') as string;
    await whole.arrayBuffer();
    expect(etag).toMatch(/^"/);
    expect((await ranged('bytes=0-9', { 'if-range': etag })).res.status).toBe(206);
    expect((await ranged('bytes=0-9', { 'if-range': lastModified })).res.status).toBe(206);
    const stale = await ranged('bytes=0-9', { 'if-range': '"0x8D0000000000000"' });
    expect([stale.res.status, stale.body.length]).toEqual([200, bytes.length]);
    expect((await ranged('bytes=0-9', { 'if-range': 'Mon, 01 Jan 2001 00:00:00 GMT' })).res.status).toBe(200);

    const notModified = await fetch(link.url, { headers: { 'if-none-match': etag } });
    expect(notModified.status).toBe(304);
    expect(notModified.headers.get('etag')).toBe(etag);
    expect(headerNames(notModified)).toEqual([]);
    expect((await fetch(link.url, { headers: { 'if-none-match': '"other"' } })).status).toBe(200);
  });

  it("HEAD answers the GET's headers without a body and reads no bytes from storage", async () => {
    const bytes = randomBytes(50_000);
    const { link } = await ownLink(bytes);
    const from = proxy.log.length;
    const head = await fetch(link.url, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(headerNames(head)).toEqual([]);
    expect(head.headers.get('content-length')).toBe(String(bytes.length));
    expect(head.headers.get('accept-ranges')).toBe('bytes');
    expect(head.headers.get('cache-control')).toBe('private, no-store');
    expect((await head.arrayBuffer()).byteLength).toBe(0);
    expect(storageReads(from)).toEqual([]);
    const got = await fetch(link.url);
    for (const h of ['content-length', 'content-type', 'content-disposition', 'etag', 'last-modified'])
      expect([h, got.headers.get(h)]).toEqual([h, head.headers.get(h)]);
    expect(sha256(Buffer.from(await got.arrayBuffer()))).toBe(sha256(bytes));
    expect((await fetch(link.url, { method: 'HEAD', headers: { range: 'bytes=0-0' } })).headers.get('content-range')).toBe(
      `bytes 0-0/${bytes.length}`,
    );
  });

  it('a tampered, forged or foreign token, another method, and a LoRA deleted since the link was made: one 404 LORA_NOT_FOUND', async () => {
    const { owner, lora, link } = await ownLink(randomBytes(20_000));
    const other = await ownLink(randomBytes(20_000));
    const url = new URL(link.url);
    const token = url.pathname.split('/').pop() as string;
    const [header, payload, signature] = token.split('.') as [string, string, string];
    const at = (t: string) => new URL(`/downloads/loras/${t}`, url).toString();
    const claims = decodeJwt(token);
    expect(Object.keys(claims).sort()).toEqual(['aud', 'exp', 'fn', 'iat', 'iss', 'lora', 'obj', 'sub']);
    expect(JSON.stringify(claims)).not.toContain('content/'); // no storage name in the link

    // the same claims naming the other LoRA, the original signature kept
    const swapped = Buffer.from(JSON.stringify({ ...claims, lora: other.lora.id })).toString('base64url');
    const flipped = signature.slice(0, -2) + (signature.at(-2) === 'A' ? 'B' : 'A') + signature.slice(-1);
    const stranger = generateKeyPairSync('ed25519').privateKey;
    const forged = await new SignJWT({ ...claims }).setProtectedHeader({ alg: 'EdDSA', typ: 'JWT' }).sign(stranger);
    const grant = await mintGrant(server, owner.id); // a job grant is signed by the same keys, for another audience
    const candidates = [
      at(`${header}.${swapped}.${signature}`),
      at(`${header}.${payload}.${flipped}`),
      at(forged),
      at(grant),
      at('not-a-token'),
      at(`${token}x`.repeat(20)),
      at(''),
    ];
    const answers = await Promise.all(
      candidates.map(async (u) => fetch(u).then(async (r) => ({ status: r.status, body: await r.text() }))),
    );
    const first = answers[0];
    expect(first?.status).toBe(404);
    expect(JSON.parse(first?.body ?? '')).toMatchObject({ errors: [{ extensions: { code: 'LORA_NOT_FOUND' } }] });
    for (const answer of answers) expect(answer).toEqual(first);

    for (const method of ['PUT', 'DELETE', 'POST']) expect((await fetch(link.url, { method })).status).toBe(405);
    expect((await fetch(link.url)).status).toBe(200); // untouched by all that

    member(await deleteLora(server, owner.token, lora.id), 'DeleteLoraSuccess');
    const gone = await fetch(link.url);
    expect({ status: gone.status, body: await gone.text() }).toEqual(first);
    expect((await fetch(link.url, { method: 'HEAD' })).status).toBe(404);
    expect((await fetch(other.link.url)).status).toBe(200);
  });

  it('a link names its exact stored object: another snapshot since is a 404; a LoRA without a snapshot (before issue 17) reads its blob', async () => {
    const bytes = randomBytes(30_000);
    const { owner, lora, link } = await ownLink(bytes);
    const row = await server.app.db.lora.update({ where: { file_id: BigInt(lora.id) }, data: { blob_snapshot: null } });
    expect((await fetch(link.url)).status).toBe(404); // made for the snapshot, which the LoRA no longer names
    const legacy = await linkFor(server, owner.token, lora.id);
    const res = await fetch(legacy.url, { headers: { range: 'bytes=10-19' } });
    expect([res.status, res.headers.get('content-range')]).toEqual([206, `bytes 10-19/${bytes.length}`]);
    expect(Buffer.from(await res.arrayBuffer()).equals(bytes.subarray(10, 20))).toBe(true);
    expect(headerNames(res)).toEqual([]);
    expect(row.blob_path.startsWith('content/')).toBe(true);
  });

  it('a client that stops reading holds the storage read (backpressure); one that goes away ends it; the server stays healthy', async () => {
    const bytes = randomBytes(64 * 1024 * 1024);
    const { link } = await ownLink(bytes);
    const from = proxy.log.length;
    const res = await open(link.url);
    expect(res.statusCode).toBe(200);
    await new Promise((resolve) => res.once('data', resolve));
    res.pause();
    const [read] = await eventually(async () => {
      const reads = storageReads(from);
      return reads.length === 1 && reads;
    });
    // the bytes pulled from storage stop growing while nobody reads, far below the file's size
    let last = -1;
    await eventually(async () => {
      const now = read?.bytes ?? 0;
      const settled = now === last;
      last = now;
      await sleep(300);
      return settled;
    }, 20_000);
    expect(read?.bytes).toBeLessThan(bytes.length / 2);
    expect(read?.closed).toBe(false);
    expect(server.app.services.ownerDownloads.slots.active).toBe(1);

    res.destroy(); // the client goes away: the storage read ends (no connection left reading)
    await eventually(async () => read?.closed === true, 10_000, 'storage read closed');
    await eventually(async () => server.app.services.ownerDownloads.slots.active === 0, 10_000, 'slot released');
    expect(read?.bytes).toBeLessThan(bytes.length / 2);

    const again = await open(link.url);
    expect(sha256(await readAll(again))).toBe(sha256(bytes));
    expect(server.app.services.ownerDownloads.slots.active).toBe(0);
  }, 120_000);
});

describe('owner download limits and base URL', () => {
  let limited: TestServer;
  beforeAll(async () => {
    limited = await startTestServer({
      OWNER_DOWNLOADS_PER_USER: '2',
      PUBLIC_URL: 'https://lora-vault.example/vault/',
      SAS_TTL_SECONDS: '5',
    });
  });
  afterAll(async () => {
    await limited?.stop();
  });
  /** The link as served by this test server (PUBLIC_URL names a host that does not exist). */
  const local = (url: string) => url.replace('https://lora-vault.example/vault', limited.url);

  it('PUBLIC_URL is the base of the links (a reverse proxy with a path prefix); no Authorization needed', async () => {
    const owner = await newUser(limited);
    const bytes = randomBytes(10_000);
    const lora = await seedLora(limited.app, owner.id, { bytes });
    const link = await linkFor(limited, owner.token, lora.id);
    expect(link.url).toMatch(/^https:\/\/lora-vault\.example\/vault\/downloads\/loras\/[\w-]+\.[\w-]+\.[\w-]+$/);
    const res = await fetch(local(link.url));
    expect(sha256(Buffer.from(await res.arrayBuffer()))).toBe(sha256(bytes));
  });

  it('streams at once are bounded per holder of links (429 RATE_LIMITED); HEAD and other holders are not held up; a closed one frees its slot', async () => {
    const owner = await newUser(limited);
    const bytes = randomBytes(48 * 1024 * 1024);
    const lora = await seedLora(limited.app, owner.id, { bytes });
    const url = local((await linkFor(limited, owner.token, lora.id)).url);
    const held = [await open(url), await open(url)];
    for (const r of held) {
      expect(r.statusCode).toBe(200);
      r.pause();
    }
    const third = await fetch(url);
    expect(third.status).toBe(429);
    expect(third.headers.get('retry-after')).toBe('5');
    expect(await third.json()).toMatchObject({ errors: [{ extensions: { code: 'RATE_LIMITED', scope: 'USER', limit: 2 } }] });
    expect((await fetch(url, { method: 'HEAD' })).status).toBe(200);
    const admin = await fetch(local((await linkFor(limited, await limited.tokens.admin(), lora.id)).url), {
      headers: { range: 'bytes=0-99' },
    });
    expect(admin.status).toBe(206);
    await admin.arrayBuffer();

    held[0]?.destroy();
    await eventually(async () => limited.app.services.ownerDownloads.slots.active === 1, 10_000, 'slot freed');
    const fresh = local((await linkFor(limited, owner.token, lora.id)).url); // links here live 5 s (SAS_TTL_SECONDS)
    const fourth = await open(fresh, { range: 'bytes=0-1023' });
    expect(fourth.statusCode).toBe(206);
    expect((await readAll(fourth)).equals(bytes.subarray(0, 1024))).toBe(true);
    held[1]?.destroy();
  }, 60_000);

  it('the link stops working once it expires (SAS_TTL_SECONDS): the same 404 as a forged one', async () => {
    const owner = await newUser(limited);
    const lora = await seedLora(limited.app, owner.id);
    const link = await linkFor(limited, owner.token, lora.id);
    const expiresAt = new Date(link.expiresAt).getTime();
    expect(expiresAt - Date.now()).toBeLessThanOrEqual(5000);
    expect((await fetch(local(link.url))).status).toBe(200);
    await sleep(Math.max(0, expiresAt - Date.now()) + 1500);
    const res = await fetch(local(link.url));
    expect(res.status).toBe(404);
    expect(await res.json()).toMatchObject({ errors: [{ extensions: { code: 'LORA_NOT_FOUND' } }] });
  });
});
