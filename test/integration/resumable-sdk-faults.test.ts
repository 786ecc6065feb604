import { createHash, randomUUID } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createLoraClient } from '../../sdk/index.ts';
import { azuriteConnectionString } from '../../server/embedded/azurite.ts';
import { type BlackHoleProxy, startBlackHoleProxy } from '../testkit/black-hole-proxy.ts';
import { type CorruptingProxy, proxyToTestAzurite } from '../testkit/corrupting-proxy.ts';
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

/** A valid safetensors LoRA of about `mib` MiB, unique content, written to a new file. */
async function loraFile(mib: number): Promise<{ path: string; bytes: Buffer; sha256: string }> {
  const bytes = makeSafetensors([{ name: 'w', shape: [(mib * 1024 * 1024) / 2], dtype: 'F16' }], { id: randomUUID() });
  const path = join(dir, `${randomUUID()}.safetensors`);
  await writeFile(path, bytes);
  return { path, bytes, sha256: createHash('sha256').update(bytes).digest('hex') };
}

describe('a Put Block connection that goes silent', () => {
  it('is given up after blockTimeoutMs and the block sent again: the upload finishes', async () => {
    const { token } = await newUser(server);
    const file = await loraFile(2); // 8 blocks
    blackHole.arm(1);
    const client = createLoraClient({ url: server.graphqlUrl, token }); // blocks over node:http (the SDK's own transport)
    const upload = client.uploadLoraResumable({ file: { path: file.path }, concurrency: 2, blockTimeoutMs: 2_000 }).then(
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
