import { execFile } from 'node:child_process';
import { createPrivateKey, createPublicKey, generateKeyPairSync, randomUUID } from 'node:crypto';
import { promisify } from 'node:util';
import { createLoraClient, type LoraClient } from '@lora-vault/sdk';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { agentPool, cliEnv, LORA_CACHE_BIN, type TestAgentOptions, userWithLoras } from '../testkit/agent.ts';
import { mintGrant } from '../testkit/grants.ts';
import { decodeHeader, type GrantSigningKey, grantSigningKey, signGrant, unsignedGrant, withPayload } from '../testkit/jwt.ts';
import { eventually } from '../testkit/seed.ts';
import { startTestServer, TEST_GRANT_KEY_PEM, type TestServer } from '../testkit/server.ts';
import { startTcpProxy } from '../testkit/tcp-proxy.ts';

/**
 * The agent verifies every job grant itself (THREATS 26, 43): against the API's published Ed25519
 * keys, fetched through the SDK, on cache hits as on misses and on the job channel. Real server,
 * real agents (in-process and the `lora-cache` bin), real HTTP.
 */

let server: TestServer;
const agents = agentPool(() => server);
const clients: LoraClient[] = [];
beforeAll(async () => {
  server = await startTestServer();
});
afterAll(async () => {
  await agents.stopAll();
  for (const c of clients) await c.close();
  await server?.stop();
});

const newPem = () => generateKeyPairSync('ed25519').privateKey.export({ format: 'pem', type: 'pkcs8' }) as string;
const JWKS_PATH = '/.well-known/jwks.json';

/** An agent whose SDK client counts its requests for the key set (real fetches, counted on the way out). */
async function countingAgent(target: TestServer, graphqlUrl: string, options: TestAgentOptions = {}) {
  const counter = { jwks: 0 };
  const client = createLoraClient({
    url: graphqlUrl,
    token: await target.tokens.machine(`grants-${randomUUID().slice(0, 8)}`),
    webSocketImpl: WebSocket,
    fetch: (input, init) => {
      if (new URL(input).pathname === JWKS_PATH) counter.jwks++;
      return fetch(input, init);
    },
  });
  clients.push(client);
  const agent = await agents.start({ ...options, server: target, client });
  return { agent, counter };
}

/** Every way of showing the agent a grant the API did not sign (or no longer honours), for `userId`. */
async function forgeries(userId: string, realGrant: string): Promise<[string, string][]> {
  const real = await grantSigningKey();
  const attacker = await grantSigningKey(newPem());
  const publicPem = createPublicKey(TEST_GRANT_KEY_PEM).export({ format: 'pem', type: 'spki' }) as string;
  const publicRaw = Buffer.from(createPublicKey(TEST_GRANT_KEY_PEM).export({ format: 'jwk' }).x as string, 'base64url');
  return [
    ['another Ed25519 key naming the real kid', await signGrant({ userId, signer: attacker, kid: real.kid })],
    ['another Ed25519 key with its own (unknown) kid', await signGrant({ userId, signer: attacker })],
    ['alg swapped to HS256, the public key PEM as HMAC secret', await signGrant({ userId, hmacSecret: publicPem, kid: real.kid })],
    ['alg swapped to HS256, the raw public key as HMAC secret', await signGrant({ userId, hmacSecret: publicRaw, kid: real.kid })],
    ['alg none naming the real kid', unsignedGrant(userId, real.kid)],
    ['expired, signed with the real key', await signGrant({ userId, expiresIn: -60 })],
    ['the real key without a kid header', await signGrant({ userId, kid: null })],
    ['a real grant with its exp pushed to 2286', withPayload(realGrant, { exp: 9_999_999_999 })],
    ['not a JWT', 'not-a-jwt'],
  ];
}

describe('the agent verifies every grant (THREATS 26)', () => {
  it('grants the API did not sign are refused with INVALID_GRANT on a cache hit and on a miss; nothing is downloaded', async () => {
    const { agent } = await countingAgent(server, server.graphqlUrl, { listen: true });
    const { userId, grant, loras } = await userWithLoras(server, [20_000, 10_000]);
    const [cached, uncached] = loras as [(typeof loras)[0], (typeof loras)[0]];
    expect(decodeHeader(grant)).toMatchObject({ alg: 'EdDSA', kid: (await grantSigningKey()).kid });
    expect((await agent.ensure({ source: 'user', id: cached.id, grant })).hit).toBe(false);

    for (const [what, forged] of await forgeries(userId, grant)) {
      await expect(agent.ensure({ source: 'user', id: cached.id, grant: forged }), `hit: ${what}`).rejects.toMatchObject({
        code: 'INVALID_GRANT',
      });
      await expect(agent.ensure({ source: 'user', id: uncached.id, grant: forged }), `miss: ${what}`).rejects.toMatchObject({
        code: 'INVALID_GRANT',
      });
      // over the local interface as a job runner sends it
      const res = await fetch(`${agent.address}/ensure`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ source: 'user', id: cached.id, grant: forged }),
      });
      expect({ what, status: res.status, code: ((await res.json()) as { error: { code: string } }).error.code }).toEqual({
        what,
        status: 403,
        code: 'INVALID_GRANT',
      });
    }
    expect(agent.core.downloads.started).toBe(1);
    // control: the real grant still serves the hit
    expect((await agent.ensure({ source: 'user', id: cached.id, grant })).hit).toBe(true);
  });

  it('the job channel refuses a job registered with a forged grant, so it cannot win a prompt id (THREATS 43)', async () => {
    const { agent } = await countingAgent(server, server.graphqlUrl, { listen: true });
    const { userId, grant, loras } = await userWithLoras(server, [10_000]);
    const post = async (path: string, body: unknown) => {
      const res = await fetch(`${agent.address}${path}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
      return { status: res.status, body: (await res.json()) as Record<string, any> };
    };
    const promptId = randomUUID();
    for (const [what, forged] of await forgeries(userId, grant)) {
      const res = await post('/jobs', { jobId: `evil-${randomUUID()}`, grant: forged, promptId, instance: '8188' });
      expect({ what, status: res.status, code: res.body.error?.code }).toEqual({ what, status: 403, code: 'INVALID_GRANT' });
    }
    expect(agent.stats().inflightDownloads).toBe(0);
    // The prompt id is still free for the real runner, whose job then serves the node.
    expect((await post('/jobs', { jobId: 'real-job', grant, promptId, instance: '8188' })).status).toBe(200);
    const node = await post('/node/ensure', { source: 'user', id: loras[0]!.id, promptId, instance: '8188' });
    expect(node).toMatchObject({ status: 200, body: { loraId: loras[0]!.id } });
  });

  it('a 1,000-hit burst with a valid grant fetches the keys once; a flood of unknown kids adds no fetch within the refresh interval', async () => {
    const { agent, counter } = await countingAgent(server, server.graphqlUrl);
    const { userId, grant, loras } = await userWithLoras(server, [10_000]);
    const id = loras[0]!.id;
    await agent.ensure({ source: 'user', id, grant }, { lease: null });
    expect(counter.jwks).toBe(1);
    for (let round = 0; round < 10; round++) {
      const results = await Promise.all(
        Array.from({ length: 100 }, () => agent.ensure({ source: 'user', id, grant }, { lease: null, recordUsage: false })),
      );
      expect(results.every((r) => r.hit)).toBe(true);
    }
    expect(counter.jwks).toBe(1);
    // 50 grants naming kids nobody publishes (GRANT_KEYS_MIN_REFRESH_SECONDS defaults to 30): refused, no fetch
    const unknown = await Promise.all(
      Array.from({ length: 50 }, async () => signGrant({ userId, signer: await grantSigningKey(newPem()) })),
    );
    const outcomes = await Promise.all(
      unknown.map((g) => agent.ensure({ source: 'user', id, grant: g }).catch((e: { code: string }) => e.code)),
    );
    expect(new Set(outcomes)).toEqual(new Set(['INVALID_GRANT']));
    expect(counter.jwks).toBe(1);
    expect(agent.grants.keyFetches).toEqual({ started: 1, failed: 0 });
  });

  it('the lora-cache bin (its own process) refuses a forged grant for a LoRA it holds, and serves the real one', async () => {
    const comfy = (await agents.start()).config.comfyDir;
    const env = await cliEnv(server, comfy);
    const { userId, grant, loras } = await userWithLoras(server, [10_000]);
    const run = (g: string) =>
      promisify(execFile)(process.execPath, [LORA_CACHE_BIN, 'ensure', loras[0]!.id, '--grant', g], { env, timeout: 60_000 }).then(
        ({ stdout }) => ({ code: 0, out: stdout }),
        (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, out: `${e.stdout}${e.stderr}` }),
      );
    expect((await run(grant)).code).toBe(0);
    const forged = await signGrant({ userId, signer: await grantSigningKey(newPem()), kid: (await grantSigningKey()).kid });
    const refused = await run(forged);
    expect(refused.code).not.toBe(0);
    expect(refused.out).toContain('INVALID_GRANT');
    expect(JSON.parse((await run(grant)).out).hit).toBe(true);
  }, 60_000);
});

describe('the key set and an unreachable API', () => {
  it('keys cached: hits keep verifying while the API is down and the background refresh fails; never fetched: API_UNAVAILABLE, then fine', async () => {
    const proxy = await startTcpProxy(Number(new URL(server.url).port));
    try {
      const via = `http://127.0.0.1:${proxy.port}/graphql`;
      const env = { GRANT_KEYS_MAX_AGE_SECONDS: '1', GRANT_KEYS_MIN_REFRESH_SECONDS: '0' };
      const { agent, counter } = await countingAgent(server, via, { env });
      const { grant, loras } = await userWithLoras(server, [10_000]);
      const id = loras[0]!.id;
      await agent.ensure({ source: 'user', id, grant });
      proxy.down();
      await new Promise((r) => setTimeout(r, 1_500)); // the cached keys are now stale
      for (let i = 0; i < 20; i++) expect((await agent.ensure({ source: 'user', id, grant }, { recordUsage: false })).hit).toBe(true);
      await eventually(async () => agent.grants.keyFetches.failed > 0, 20_000, 'a background refresh failed');
      expect((await agent.ensure({ source: 'user', id, grant }, { recordUsage: false })).hit).toBe(true);

      // A fresh agent that never reached the API cannot verify any grant yet: retryable API_UNAVAILABLE.
      const fresh = await countingAgent(server, via, { comfyDir: agent.config.comfyDir, env });
      await expect(fresh.agent.ensure({ source: 'user', id, grant })).rejects.toMatchObject({ code: 'API_UNAVAILABLE', retryable: true });
      proxy.up();
      expect((await fresh.agent.ensure({ source: 'user', id, grant })).hit).toBe(true);
      expect(fresh.counter.jwks).toBeGreaterThanOrEqual(1);
      expect(counter.jwks).toBeGreaterThanOrEqual(2);
    } finally {
      await proxy.close();
    }
  }, 90_000);
});

describe('key rotation across a running agent', () => {
  const servers: TestServer[] = [];
  afterAll(async () => {
    for (const s of servers) await s.stop();
  });

  it('new key published beside the old: new grants verify after one refresh, old ones until the old key is withdrawn', async () => {
    const oldPem = newPem();
    const newKeyPem = newPem();
    const oldKey: GrantSigningKey = await grantSigningKey(oldPem);
    const newKey: GrantSigningKey = await grantSigningKey(newKeyPem);
    const jwk = (pem: string, kid: string) => ({ ...createPublicKey(pem).export({ format: 'jwk' }), kid });
    const privateJwk = (pem: string, kid: string) => ({ ...createPrivateKey(pem).export({ format: 'jwk' }), kid });
    const before = await startTestServer({ GRANT_SIGNING_KEY: oldPem });
    const during = await startTestServer({
      GRANT_SIGNING_KEY: JSON.stringify({ keys: [privateJwk(newKeyPem, newKey.kid), jwk(oldPem, oldKey.kid)] }),
    });
    const after = await startTestServer({ GRANT_SIGNING_KEY: newKeyPem });
    servers.push(before, during, after);
    const proxy = await startTcpProxy(Number(new URL(before.url).port));
    try {
      const { agent, counter } = await countingAgent(before, `http://127.0.0.1:${proxy.port}/graphql`, {
        env: { GRANT_KEYS_MIN_REFRESH_SECONDS: '0', GRANT_KEYS_MAX_AGE_SECONDS: '1' },
      });
      const { userId, loras } = await userWithLoras(before, [10_000]);
      const id = loras[0]!.id;
      const oldGrant = await mintGrant(before, userId);
      expect(decodeHeader(oldGrant).kid).toBe(oldKey.kid);
      expect((await agent.ensure({ source: 'user', id, grant: oldGrant })).hit).toBe(false);
      expect(counter.jwks).toBe(1);

      // The deploy: every replica now signs with the new key and publishes both.
      proxy.retarget(Number(new URL(during.url).port));
      const newGrant = await mintGrant(during, userId);
      expect(decodeHeader(newGrant).kid).toBe(newKey.kid);
      expect((await agent.ensure({ source: 'user', id, grant: newGrant })).hit).toBe(true); // unknown kid → one refresh
      expect(counter.jwks).toBe(2);
      expect((await agent.ensure({ source: 'user', id, grant: oldGrant })).hit).toBe(true); // the old key is still published

      // Later the old key is withdrawn: once the agent's keys are older than GRANT_KEYS_MAX_AGE_SECONDS
      // they are refreshed in the background, and the old grant stops verifying; the new one keeps working.
      proxy.retarget(Number(new URL(after.url).port));
      await eventually(
        async () =>
          (await agent.ensure({ source: 'user', id, grant: oldGrant }).catch((e: { code: string }) => e.code)) === 'INVALID_GRANT',
        15_000,
        'the withdrawn key dropped',
      );
      expect((await agent.ensure({ source: 'user', id, grant: newGrant })).hit).toBe(true);
    } finally {
      await proxy.close();
    }
  }, 60_000);
});
