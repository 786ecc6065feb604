import { createHash, randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { AbortLoraUploadDocument, createLoraClient, type ResumableState } from '../../sdk/index.ts';
import { stateFileBeside } from '../../sdk/node-resumable.ts';
import { azuriteConnectionString } from '../../server/embedded/azurite.ts';
import { type BlackHoleProxy, startBlackHoleProxy } from '../testkit/black-hole-proxy.ts';
import { type CorruptingProxy, proxyToTestAzurite } from '../testkit/corrupting-proxy.ts';
import { dataOf } from '../testkit/graphql-assertions.ts';
import { makeSafetensors } from '../testkit/safetensors.ts';
import { newUser } from '../testkit/seed.ts';
import { startTestServer, type TestServer } from '../testkit/server.ts';

/**
 * The SDK's resumable run (sdk/resumable-upload.ts, sdk/node-resumable.ts) against faults of a
 * real server and real Azurite: a completion refused for now (TOO_MANY_UPLOADS, RATE_LIMITED), a
 * run resumed while an earlier run's completion is still going, and a Put Block connection that
 * goes silent. Storage is reached through a black-hole proxy (swallows armed Put Block
 * connections) in front of a corrupting proxy (holds a completion at its snapshot).
 */

const BLOCK = 256 * 1024;
let storage: CorruptingProxy;
let blackHole: BlackHoleProxy;
/** One upload may run at once in this process (UPLOAD_CONCURRENCY_PER_PROCESS=1). */
let server: TestServer;
/** One mutation per user per 4 s (RATE_LIMIT_USER_MUTATIONS=1/4). */
let limited: TestServer;
let dir: string;

beforeAll(async () => {
  storage = await proxyToTestAzurite(inject('storageConnectionString'));
  blackHole = await startBlackHoleProxy(storage.port);
  server = await startTestServer({
    AZURE_STORAGE_CONNECTION_STRING: azuriteConnectionString(blackHole.port),
    UPLOAD_BLOCK_BYTES: String(BLOCK),
    UPLOAD_CONCURRENCY_PER_PROCESS: '1',
  });
  limited = await startTestServer({ UPLOAD_BLOCK_BYTES: String(BLOCK), RATE_LIMIT_USER_MUTATIONS: '1/4' });
  dir = await mkdtemp(join(tmpdir(), 'resumable-faults-'));
}, 120_000);
afterAll(async () => {
  await server?.stop();
  await limited?.stop();
  await blackHole?.close();
  await storage?.close();
  await rm(dir, { recursive: true, force: true });
});

/** expect.poll with room for a loaded machine. */
const eventually = <T>(read: () => Promise<T> | T) => expect.poll(read, { timeout: 30_000, interval: 50 });

/** A valid safetensors LoRA of about `mib` MiB, unique content, written to a new file. */
async function loraFile(mib: number): Promise<{ path: string; bytes: Buffer; sha256: string }> {
  const bytes = makeSafetensors([{ name: 'w', shape: [(mib * 1024 * 1024) / 2], dtype: 'F16' }], { id: randomUUID() });
  const path = join(dir, `${randomUUID()}.safetensors`);
  await writeFile(path, bytes);
  return { path, bytes, sha256: createHash('sha256').update(bytes).digest('hex') };
}

/** A fetch for the SDK client that keeps every GraphQL answer's text, and may act before a request goes out. */
function observingFetch(before?: (body: string) => Promise<void>) {
  const answers: string[] = [];
  const doFetch = async (input: string, init: RequestInit): Promise<Response> => {
    const body = typeof init.body === 'string' ? init.body : null; // Put Blocks carry bytes
    if (body !== null) await before?.(body);
    const res = await fetch(input, init);
    if (body !== null) answers.push(await res.clone().text());
    return res;
  };
  return { fetch: doFetch, answers };
}

function memoryStore() {
  const saved = new Map<string, ResumableState>();
  return {
    saved,
    get: async (key: string) => saved.get(key),
    set: async (key: string, state: ResumableState) => void saved.set(key, state),
    delete: async (key: string) => void saved.delete(key),
  };
}

const sessionsOf = (app: TestServer['app'], userId: string) =>
  app.db.upload_session.findMany({ where: { user_id: userId }, select: { id: true, state: true, lora_id: true } });

/** Holds the next completion at its snapshot (after its session turned COMPLETING) until `release()`. */
function holdNextCompletion(): { reached(): boolean; release(): void } {
  let release!: () => void;
  let reached = false;
  const until = new Promise<void>((resolve) => {
    release = resolve;
  });
  storage.add({
    fault: { kind: 'hold', until },
    match: (r) => {
      reached ||= r.method === 'PUT' && r.url.includes('comp=snapshot');
      return reached;
    },
  });
  return { reached: () => reached, release };
}

describe('a completion refused for now keeps the session and is tried again', () => {
  it('TOO_MANY_UPLOADS (the process is busy): the run waits, completes the same session, and forgets it only then', async () => {
    // another user's completion holds the process's one upload slot (their upload through the SDK,
    // which also stages again a block storage dropped at a commit of the validation ahead)
    const other = await newUser(server);
    const busy = await loraFile(0.5);
    const hold = holdNextCompletion();
    const otherClient = createLoraClient({ url: server.graphqlUrl, token: other.token });
    const busyUpload = otherClient.uploadLoraResumable({ file: { path: busy.path } }).then(
      (r) => r,
      (e: unknown) => e,
    );
    await eventually(() => hold.reached()).toBe(true);

    const { id, token } = await newUser(server);
    const file = await loraFile(1);
    const seen = observingFetch();
    const client = createLoraClient({ url: server.graphqlUrl, token, fetch: seen.fetch });
    const upload = client.uploadLoraResumable({ file: { path: file.path }, name: 'patient' }).then(
      (r) => r,
      (e: unknown) => e,
    );
    try {
      await eventually(() => seen.answers.some((a) => a.includes('"TooManyUploadsError"'))).toBe(true);
      expect(existsSync(stateFileBeside(file.path))).toBe(true); // the session is still OPEN: kept
    } finally {
      hold.release();
    }

    const result = await upload;
    expect(result).toMatchObject({ lora: { sha256: file.sha256 } });
    expect(await busyUpload).toMatchObject({ lora: { sha256: busy.sha256 } });
    const sessions = await sessionsOf(server.app, id);
    expect(sessions.map((s) => s.state)).toEqual(['COMPLETED']); // the same session, no second one
    expect(existsSync(stateFileBeside(file.path))).toBe(false);
    await Promise.all([client.close(), otherClient.close()]);
  }, 90_000);

  it('RATE_LIMITED: the run waits the retryAfterSeconds the error gives, then completes the same session', async () => {
    const { id, token } = await newUser(limited);
    const file = await loraFile(0.5);
    // right before the completion goes out, the user's mutation budget is spent (≥ 2 s of its window left)
    let spent = false;
    const spend = async (body: string) => {
      if (spent || !body.includes('"CompleteLoraUpload"')) return;
      spent = true;
      for (;;) {
        const answer = dataOf(await limited.request(AbortLoraUploadDocument, { id: randomUUID() }, { token })).abortLoraUpload;
        if (answer.__typename === 'RateLimitedError' && answer.retryAfterSeconds >= 2) return;
        await new Promise((r) => setTimeout(r, 200));
      }
    };
    const seen = observingFetch(spend);
    const client = createLoraClient({ url: limited.graphqlUrl, token, fetch: seen.fetch });
    const result = await client.uploadLoraResumable({ file: { path: file.path } }).then(
      (r) => r,
      (e: unknown) => e,
    );
    expect(seen.answers.some((a) => a.includes('"completeLoraUpload":{"__typename":"RateLimitedError"'))).toBe(true);
    expect(result).toMatchObject({ lora: { sha256: file.sha256 } });
    expect((await sessionsOf(limited.app, id)).map((s) => s.state)).toEqual(['COMPLETED']);
    expect(existsSync(stateFileBeside(file.path))).toBe(false);
    await client.close();
  }, 90_000);
});

describe('a run resumed while an earlier completion is still going', () => {
  it('waits for that completion and returns its LoRA: one session, one LoRA, no block sent again', async () => {
    const { id, token } = await newUser(server);
    const file = await loraFile(1);
    const store = memoryStore();
    const hold = holdNextCompletion();
    // the first run's completion is under way when its client gives up (a timeout, a crash)
    const first = new AbortController();
    const firstClient = createLoraClient({ url: server.graphqlUrl, token });
    const firstRun = firstClient.uploadLoraResumable({ file: { path: file.path }, store, signal: first.signal }).then(
      (r) => r,
      (e: unknown) => e,
    );
    await eventually(() => hold.reached()).toBe(true);
    first.abort();
    expect(await firstRun).toMatchObject({ code: 'ABORTED' });
    expect(store.saved.size).toBe(1);
    const putsBefore = storage.log.filter((e) => e.method === 'PUT' && e.url.includes('comp=block&')).length;

    const seen = observingFetch();
    const client = createLoraClient({ url: server.graphqlUrl, token, fetch: seen.fetch });
    const second = client.uploadLoraResumable({ file: { path: file.path }, store }).then(
      (r) => r,
      (e: unknown) => e,
    );
    try {
      await eventually(() => seen.answers.some((a) => a.includes('"state":"COMPLETING"'))).toBe(true);
    } finally {
      hold.release();
    }

    const result = await second;
    const sessions = await sessionsOf(server.app, id);
    expect(sessions.map((s) => s.state)).toEqual(['COMPLETED']);
    expect(result).toMatchObject({ lora: { id: String(sessions[0]?.lora_id), sha256: file.sha256 } });
    expect(await server.app.db.lora.count({ where: { user_id: id } })).toBe(1);
    expect(storage.log.filter((e) => e.method === 'PUT' && e.url.includes('comp=block&')).length).toBe(putsBefore);
    expect(store.saved.size).toBe(0);
    await Promise.all([firstClient.close(), client.close()]);
  }, 90_000);
});

describe('a Put Block connection that goes silent', () => {
  it('is given up after idleTimeoutMs and the block sent again: the upload finishes', async () => {
    const { token } = await newUser(server);
    const file = await loraFile(2); // 8 blocks
    blackHole.arm(1);
    const client = createLoraClient({ url: server.graphqlUrl, token }); // blocks over node:http (the SDK's own transport)
    const upload = client.uploadLoraResumable({ file: { path: file.path }, concurrency: 2, idleTimeoutMs: 2_000 }).then(
      (r) => r,
      (e: unknown) => e,
    );
    const outcome = await Promise.race([upload, new Promise((r) => setTimeout(() => r('still waiting after 60 s'), 60_000))]);
    expect(blackHole.swallowed.connections).toBe(1);
    expect(blackHole.swallowed.bytes).toBeGreaterThan(0); // a Put Block really went into it
    expect(outcome).toMatchObject({ lora: { sha256: file.sha256 } });
    await client.close();
  }, 90_000);
});
