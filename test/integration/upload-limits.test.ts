import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { azuriteConnectionString } from '../../server/embedded/azurite.ts';
import { startCorruptingProxy } from '../testkit/corrupting-proxy.ts';
import { makeLora } from '../testkit/lora-files.ts';
import { postMultipart } from '../testkit/multipart.ts';
import { makeSafetensors } from '../testkit/safetensors.ts';
import { eventually, newUser, newUserId } from '../testkit/seed.ts';
import { startTestServer, type TestServer } from '../testkit/server.ts';
import { rawConnection, startSlowUpload } from '../testkit/slow-clients.ts';
import { expectNothingStored as expectNothingStoredIn } from '../testkit/stored.ts';

/**
 * Clients that stall or crowd the server (THREATS.md rows 29–30): an upload body that stops is
 * ended UPLOAD_INTERRUPTED after UPLOAD_IDLE_SECONDS and leaves nothing; one that is slow but
 * moving completes; uploads at once are capped per user and per process (TOO_MANY_UPLOADS) and
 * every outcome frees its slot; slow headers and idle keep-alive sockets are closed. Real sockets
 * throughout; the timeouts are configured small, and the assertions leave wide margins.
 */

const IDLE_SECONDS = 3;
const PER_USER = 3;
const PER_PROCESS = 8;
let server: TestServer;
beforeAll(async () => {
  server = await startTestServer({
    UPLOAD_IDLE_SECONDS: String(IDLE_SECONDS),
    UPLOAD_CONCURRENCY_PER_USER: String(PER_USER),
    UPLOAD_CONCURRENCY_PER_PROCESS: String(PER_PROCESS),
    HTTP_HEADERS_TIMEOUT_SECONDS: '1',
    HTTP_KEEPALIVE_TIMEOUT_SECONDS: '1',
  });
});
afterAll(() => server?.stop());

const user = () => newUser(server);

/** A real LoRA of ~400 KB: a stall after 50 KB is in the middle of its bytes. */
const FILE = makeSafetensors([{ name: 'lora_unet_down.lora_down.weight', shape: [100_000], dtype: 'F32' }], { ss_network_dim: '4' });

const expectNothingStored = (userId: string) => expectNothingStoredIn(server.app, userId);

const activeUploads = () => server.app.services.uploads.slots.active;

describe('stalled upload bodies', () => {
  it('an upload that stops after 50 KB ends UPLOAD_INTERRUPTED after the idle timeout; the socket closes; nothing is kept', async () => {
    const { id, token } = await user();
    const started = Date.now();
    const upload = startSlowUpload({ url: server.graphqlUrl, token, file: FILE, stallAt: { fileBytes: 50_000 } });
    const res = await upload.response;
    expect(res.status, res.text).toBe(200);
    expect(res.body?.data?.uploadLora, res.text).toMatchObject({ __typename: 'UploadInterruptedError', code: 'UPLOAD_INTERRUPTED' });
    expect(res.body.data.uploadLora.message).toMatch(/no data received for 3 s/);
    expect(Date.now() - started).toBeGreaterThanOrEqual((IDLE_SECONDS - 1) * 1000);
    await upload.closed;
    await expectNothingStored(id);
    expect(activeUploads()).toBe(0);
  });

  it('a slow but steady upload (a chunk every second, idle timeout 3 s) completes', async () => {
    const { id, token } = await user();
    const upload = startSlowUpload({ url: server.graphqlUrl, token, file: FILE, pace: { chunkBytes: 80_000, everyMs: 1000 } });
    const res = await upload.response;
    expect(res.body?.data?.uploadLora?.__typename, res.text).toBe('UploadLoraSuccess');
    expect(res.body.data.uploadLora.lora.sizeBytes).toBe(FILE.length);
    expect(await server.app.db.lora.count({ where: { user_id: id, status: 'READY' } })).toBe(1);
  });

  it('many stalled uploads — inside operations, mid-file, before the closing boundary — all end, are cleaned and free their slots', async () => {
    const users = await Promise.all([user(), user(), user(), user()]);
    const stalls = users.flatMap(({ token }, i) =>
      [0, 1].map((j) =>
        startSlowUpload({
          url: server.graphqlUrl,
          token,
          file: FILE,
          stallAt: (i + j) % 3 === 0 ? 'operations' : (i + j) % 3 === 1 ? { fileBytes: 50_000 } : 'beforeEnd',
        }),
      ),
    );
    const results = await Promise.all(stalls.map((s) => s.response));
    for (const [i, res] of results.entries()) {
      const stalledInOperations = (Math.floor(i / 2) + (i % 2)) % 3 === 0;
      if (stalledInOperations) {
        // no operation to answer yet: a request error
        expect(res.status, res.text).toBe(408);
        expect(res.body?.errors?.[0]?.extensions?.code, res.text).toBe('BAD_USER_INPUT');
      } else {
        expect(res.body?.data?.uploadLora?.code, res.text).toBe('UPLOAD_INTERRUPTED');
      }
    }
    await Promise.all(stalls.map((s) => s.closed));
    for (const { id } of users) await expectNothingStored(id);
    expect(activeUploads()).toBe(0);
    await eventually(async () => (await connections()) === 0, 10_000, 'every connection closed');
  }, 60_000);
});

describe('time the server itself is slow does not count as idle', () => {
  it('an upload held back by slow storage (each block takes twice the idle timeout) completes', async () => {
    const azuritePort = Number(/BlobEndpoint=http:\/\/127\.0\.0\.1:(\d+)/.exec(inject('storageConnectionString'))?.[1]);
    const proxy = await startCorruptingProxy(azuritePort);
    const slowStorage = await startTestServer({
      AZURE_STORAGE_CONNECTION_STRING: azuriteConnectionString(proxy.port),
      UPLOAD_IDLE_SECONDS: '1',
    });
    try {
      const id = newUserId();
      const token = await slowStorage.tokens.user(id);
      proxy.add({
        fault: { kind: 'delay', ms: 2_000 },
        times: Number.POSITIVE_INFINITY,
        match: (r) => r.method === 'PUT' && r.url.includes('comp=block'),
      });
      // 6 blocks of 8 MiB: the 5th waits for the first 4 to be staged, so the server stops reading the body for ~2 s
      const file = makeSafetensors([{ name: 'w', shape: [11 * 1024 * 1024], dtype: 'F32' }]);
      const res = await postMultipart({ url: slowStorage.graphqlUrl, token, file });
      expect(res.body?.data?.uploadLora?.__typename, res.text).toBe('UploadLoraSuccess');
      expect(proxy.count('delay')).toBeGreaterThanOrEqual(6);
    } finally {
      await slowStorage.stop();
      await proxy.close();
    }
  }, 60_000);
});

describe('uploads at once are capped per user and per process', () => {
  it(`a user's upload beyond ${PER_USER} at once, and any beyond ${PER_PROCESS} in the process, is refused at once; every outcome frees its slot`, async () => {
    const [a, b, c, d] = await Promise.all([user(), user(), user(), user()]);
    // hold 3 + 3 + 2 = PER_PROCESS uploads open mid-file
    const held = [a, a, a, b, b, b, c, c].map(({ token }) =>
      startSlowUpload({ url: server.graphqlUrl, token, file: FILE, stallAt: { fileBytes: 50_000 } }),
    );
    await eventually(async () => activeUploads() === PER_PROCESS, 10_000, 'all held uploads running');

    const fourth = await postMultipart({ url: server.graphqlUrl, token: a.token, file: FILE });
    expect(fourth.body?.data?.uploadLora, fourth.text).toMatchObject({
      __typename: 'TooManyUploadsError',
      code: 'TOO_MANY_UPLOADS',
      scope: 'USER',
      limit: PER_USER,
    });
    const ninth = await postMultipart({ url: server.graphqlUrl, token: d.token, file: FILE });
    expect(ninth.body?.data?.uploadLora, ninth.text).toMatchObject({
      __typename: 'TooManyUploadsError',
      scope: 'PROCESS',
      limit: PER_PROCESS,
    });
    await expectNothingStored(d.id);

    // outcomes: a client that disconnects, then idle timeouts for the rest
    held[0]?.destroy();
    await eventually(async () => activeUploads() === PER_PROCESS - 1, 10_000, 'the disconnected upload freed its slot');
    await Promise.all(held.map((h) => h.response));
    expect(activeUploads()).toBe(0);

    // success and refusals by content free their slots too: then PER_USER at once still fit
    for (const file of [
      makeLora('SD1', 'kohya'),
      Buffer.from('not a LoRA'),
      makeLora('SD1', 'kohya', { extra: { ss_output_name: 'x' } }),
    ]) {
      await postMultipart({ url: server.graphqlUrl, token: a.token, file });
    }
    const together = await Promise.all(
      [1, 2, 3].map((n) =>
        postMultipart({ url: server.graphqlUrl, token: a.token, file: makeLora('SD1', 'kohya', { extra: { ss_output_name: `t${n}` } }) }),
      ),
    );
    expect(together.map((r) => r.body?.data?.uploadLora?.__typename)).toEqual([
      'UploadLoraSuccess',
      'UploadLoraSuccess',
      'UploadLoraSuccess',
    ]);
    expect(activeUploads()).toBe(0);
  }, 60_000);
});

describe('slow headers and idle connections', () => {
  it('a client that never finishes its headers is disconnected (HTTP_HEADERS_TIMEOUT_SECONDS)', async () => {
    const conn = await rawConnection(server.url);
    conn.socket.write('POST /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n');
    const outcome = await Promise.race([conn.closed.then(() => 'closed'), new Promise((t) => setTimeout(() => t('still open'), 15_000))]);
    expect(outcome).toBe('closed');
    expect(conn.received()).toMatch(/^HTTP\/1.1 408/);
  });

  it('an idle keep-alive connection is closed (HTTP_KEEPALIVE_TIMEOUT_SECONDS)', async () => {
    const conn = await rawConnection(server.url);
    conn.socket.write('GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n');
    await eventually(async () => conn.received().includes('"status":"ok"'), 5_000, 'health answer');
    const outcome = await Promise.race([conn.closed.then(() => 'closed'), new Promise((t) => setTimeout(() => t('still open'), 4_500))]);
    expect(outcome).toBe('closed');
  });

  it('a JSON request body that stops is cut after the idle timeout too', async () => {
    const conn = await rawConnection(server.url);
    conn.socket.write(
      'POST /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"query":',
    );
    const outcome = await Promise.race([conn.closed.then(() => 'closed'), new Promise((t) => setTimeout(() => t('still open'), 15_000))]);
    expect(outcome).toBe('closed');
  });
});

function connections(): Promise<number> {
  return new Promise((resolve, reject) => server.app.server.getConnections((error, count) => (error ? reject(error) : resolve(count))));
}
