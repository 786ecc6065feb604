import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { type CacheEvent, createLoraClient } from '@lora-vault/sdk';
import { describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import type { Agent } from '../../cache-agent/app.ts';
import { AgentError } from '../../cache-agent/errors.ts';
import { parseCacheTime, toPythonIso } from '../../cache-agent/timefmt.ts';
import { serverWithAgents, type TestAgentOptions, userClient, userWithLoras } from '../testkit/agent.ts';
import { mintGrant } from '../testkit/grants.ts';
import { sha256 } from '../testkit/hashes.ts';
import { signGrant } from '../testkit/jwt.ts';
import { eventually } from '../testkit/seed.ts';
import type { TestServer } from '../testkit/server.ts';
import { startTcpProxy } from '../testkit/tcp-proxy.ts';

/** The cache agent against the real server and Azurite: hits and misses, eviction, leases, invalidation. */

let server: TestServer;
const agents = serverWithAgents((started) => {
  server = started;
});
const GiB = 1024 ** 3;

const agentWith = (options?: TestAgentOptions) => agents.start(options);

function modelRow(agent: Agent, path: string) {
  return agent.store.db.prepare('SELECT * FROM models WHERE path = ?').get(path) as
    | { model_type: string; filename: string; size_bytes: number; last_used: string; use_count: number; download_date: string }
    | undefined;
}

describe('ensure: cold download, then hits', () => {
  it('downloads once into lora-vault-users/{user}/, verifies, registers in the seed tables, then serves hits from disk', async () => {
    const agent = await agentWith();
    const { userId, grant, loras } = await userWithLoras(server, [300_000]);
    const lora = loras[0]!;

    const first = await agent.ensure({ source: 'user', id: lora.id, grant });
    expect(first.hit).toBe(false);
    expect(first.path.startsWith(`${agent.layout.usersDir}/${userId}/${lora.id}_`)).toBe(true);
    expect(sha256(readFileSync(first.path))).toBe(sha256(lora.bytes));
    expect(first.sha256).toBe(sha256(lora.bytes));
    const row = modelRow(agent, first.path);
    expect(row).toMatchObject({ model_type: 'user_lora', size_bytes: 300_000, use_count: 1 });
    expect(row?.last_used).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}$/); // Python's naive isoformat

    const second = await agent.ensure({ source: 'user', id: lora.id, grant });
    expect(second).toMatchObject({ hit: true, path: first.path });
    agent.store.flushTouches(); // hits are buffered and written every second
    expect(modelRow(agent, first.path)?.use_count).toBe(2);
    expect(agent.core.downloads.started).toBe(1);
    expect(readdirSync(agent.layout.processTempDir)).toEqual([]);

    // Usage reaches the API batched: one use per job (grant) however often it ensures; a second job counts again.
    const user = await userClient(server, userId);
    await eventually(async () => (await user.getLora({ id: lora.id })).usageCount === 1, 5000, 'usage recorded');
    await agent.ensure({ source: 'user', id: lora.id, grant: await mintGrant(server, userId) });
    await eventually(async () => (await user.getLora({ id: lora.id })).usageCount === 2, 5000, 'second job recorded');
    const stats = agent.stats();
    expect(stats).toMatchObject({ userLoraCount: 1, totalLoraCacheBytes: 300_000, cacheHitRate24h: 2 / 3 });
    await user.close();
  });

  it('a grant for another user never gets a cached LoRA (LORA_NOT_FOUND, as the API would answer)', async () => {
    const agent = await agentWith();
    const owner = await userWithLoras(server, [10_000]);
    const other = await userWithLoras(server, []);
    await agent.ensure({ source: 'user', id: owner.loras[0]!.id, grant: owner.grant });
    await expect(agent.ensure({ source: 'user', id: owner.loras[0]!.id, grant: other.grant })).rejects.toMatchObject({
      code: 'LORA_NOT_FOUND',
    });
    await expect(agent.ensure({ source: 'user', id: owner.loras[0]!.id, grant: 'not-a-jwt' })).rejects.toMatchObject({
      code: 'INVALID_GRANT',
    });
    // The owner's own grant, past its exp, on a hit (forged ones: agent-grants.test.ts).
    const expired = await signGrant({ userId: owner.userId, expiresIn: -60 });
    await expect(agent.ensure({ source: 'user', id: owner.loras[0]!.id, grant: expired })).rejects.toMatchObject({
      code: 'INVALID_GRANT',
    });
    await expect(agent.ensure({ source: 'user', id: '999999999', grant: owner.grant })).rejects.toMatchObject({ code: 'LORA_NOT_FOUND' });
  });

  it('10 concurrent ensures of one LoRA → one download, every caller gets the same path', async () => {
    const agent = await agentWith();
    const { grant, loras } = await userWithLoras(server, [2_000_000]);
    const results = await Promise.all(Array.from({ length: 10 }, () => agent.ensure({ source: 'user', id: loras[0]!.id, grant })));
    expect(new Set(results.map((r) => r.path)).size).toBe(1);
    expect(agent.core.downloads.started).toBe(1);
    expect(sha256(readFileSync(results[0]!.path))).toBe(sha256(loras[0]!.bytes));
  });

  it('two agents (separate in-memory state) sharing one folder and index → one download (lock file)', async () => {
    const a = await agentWith();
    const b = await agentWith({ comfyDir: a.config.loraDir.replace(/\/models\/loras$/, '') });
    const { grant, loras } = await userWithLoras(server, [3_000_000]);
    const [ra, rb] = await Promise.all([
      a.ensure({ source: 'user', id: loras[0]!.id, grant }),
      b.ensure({ source: 'user', id: loras[0]!.id, grant }),
    ]);
    expect(ra.path).toBe(rb.path);
    expect(a.core.downloads.started + b.core.downloads.started).toBe(1);
  });
});

describe('shared library', () => {
  it("shared LoRAs go to models/loras/{name} as 'shared_lora', are never space-evicted for user LoRAs, and cannot escape the folder", async () => {
    const size = 60_000;
    const agent = await agentWith({ env: { LORA_CACHE_MAX_GB: String((2 * size) / GiB) } });
    const name = `styles/${Date.now()}-ink.safetensors`;
    const bytes = Buffer.alloc(size, 7);
    await server.app.blobs.putShared(name, bytes);

    const shared = await agent.ensure({ source: 'shared', name });
    expect(shared.path).toBe(`${agent.layout.loraRoot}/${name}`);
    expect(shared.sha256).toBe(sha256(bytes));
    expect(modelRow(agent, shared.path)?.model_type).toBe('shared_lora');
    expect((await agent.ensure({ source: 'shared', name })).hit).toBe(true);

    const { grant, loras } = await userWithLoras(server, [size, size, size]);
    for (const l of loras) await agent.ensure({ source: 'user', id: l.id, grant });
    expect(existsSync(shared.path)).toBe(true); // the user-LoRA cap evicted user LoRAs only
    expect(agent.stats()).toMatchObject({ sharedLoraCount: 1, userLoraCount: 2 });

    await expect(agent.ensure({ source: 'shared', name: 'missing/none.safetensors' })).rejects.toMatchObject({ code: 'LORA_NOT_FOUND' });
  });
});

describe('eviction', () => {
  it('LRU eviction frees exactly enough to fit the cap, oldest first; protected, shared-policy and leased files survive', async () => {
    const size = 100_000;
    // Cap = 4 files' worth; room is made for the 5th by evicting exactly one file.
    const agent = await agentWith({ env: { LORA_CACHE_MAX_GB: String((4 * size) / GiB) } });
    const { grant, loras } = await userWithLoras(server, [size, size, size, size, size, size]);
    const paths: string[] = [];
    let clock = Date.now() - 3_600_000;
    for (const lora of loras.slice(0, 4)) {
      paths.push((await agent.ensure({ source: 'user', id: lora.id, grant })).path);
      // Make last_used strictly ordered, as Python would after real use.
      clock += 60_000;
      agent.store.db.prepare('UPDATE models SET last_used = ? WHERE path = ?').run(toPythonIso(new Date(clock)), paths.at(-1));
    }
    // The oldest is protected by the Python side's flag; the second oldest is leased by a running job.
    agent.store.db.prepare('UPDATE models SET protected = 1 WHERE path = ?').run(paths[0]);
    const leased = await agent.store.acquireLease(paths[1]!, new Date(Date.now() + 60_000), 'job-1', null);

    const fifth = await agent.ensure({ source: 'user', id: loras[4]!.id, grant });
    expect(existsSync(paths[0]!)).toBe(true); // protected
    expect(existsSync(paths[1]!)).toBe(true); // leased
    expect(existsSync(paths[2]!)).toBe(false); // least recently used evictable → gone
    expect(existsSync(paths[3]!)).toBe(true); // exactly one eviction was enough
    expect(existsSync(fifth.path)).toBe(true);
    expect(modelRow(agent, paths[2]!)).toBeUndefined();
    expect(agent.stats()).toMatchObject({ userLoraCount: 4, totalLoraCacheBytes: 4 * size, evictions24h: 1 });

    // After the lease is released, the leased file is the next victim.
    await agent.release({ leaseId: leased.leaseId });
    await agent.ensure({ source: 'user', id: loras[5]!.id, grant });
    expect(existsSync(paths[1]!)).toBe(false);
    expect(existsSync(paths[0]!)).toBe(true);
  });

  it('a LoRA larger than the whole cap → CACHE_FULL, nothing evicted, nothing left behind', async () => {
    const agent = await agentWith({ env: { LORA_CACHE_MAX_GB: String(150_000 / GiB) } });
    const { grant, loras } = await userWithLoras(server, [100_000, 200_000]);
    const kept = await agent.ensure({ source: 'user', id: loras[0]!.id, grant });
    const error = await agent.ensure({ source: 'user', id: loras[1]!.id, grant }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(AgentError);
    expect((error as AgentError).code).toBe('CACHE_FULL');
    expect(existsSync(kept.path)).toBe(true);
    expect(readdirSync(agent.layout.processTempDir)).toEqual([]);
  });

  it('age eviction with a controllable clock: unused for lora_max_age_days → gone; recent, protected and leased stay', async () => {
    let now = new Date();
    const agent = await agentWith({ env: { LORA_MAX_AGE_DAYS: '7' }, now: () => now });
    const { grant, loras } = await userWithLoras(server, [5_000, 5_000, 5_000, 5_000]);
    const [old, recent, prot, leasedOne] = await Promise.all(loras.map((l) => agent.ensure({ source: 'user', id: l.id, grant })));
    now = new Date(now.getTime() + 8 * 86_400_000);
    agent.store.touch(recent!.path, now); // used "today"
    agent.store.db.prepare('UPDATE models SET protected = 1 WHERE path = ?').run(prot!.path);
    await agent.store.acquireLease(leasedOne!.path, new Date(now.getTime() + 3_600_000), null, null);

    const dry = await agent.evict(true);
    expect(dry.age.victims).toEqual([old!.path]);
    expect(existsSync(old!.path)).toBe(true); // dry run changes nothing

    expect(await agent.evictByAge()).toBe(1);
    expect(existsSync(old!.path)).toBe(false);
    for (const p of [recent!, prot!, leasedOne!]) expect(existsSync(p.path)).toBe(true);
  });
});

describe('invalidation', () => {
  it('a LoRA deleted in Studio disappears from the machine within a second (cacheEvents)', async () => {
    const agent = await agentWith({ subscribe: true });
    const { userId, grant, loras } = await userWithLoras(server, [50_000]);
    const { path } = await agent.ensure({ source: 'user', id: loras[0]!.id, grant });
    await eventually(async () => agent.invalidator.reconciliations > 0, 5000, 'subscription connected');

    const user = await userClient(server, userId);
    await user.deleteLora({ id: loras[0]!.id });
    const t0 = Date.now();
    await eventually(async () => !existsSync(path), 1000, 'file removed within 1 s');
    expect(Date.now() - t0).toBeLessThan(1000);
    expect(agent.store.findUser(loras[0]!.id)).toBeNull();
    await expect(agent.ensure({ source: 'user', id: loras[0]!.id, grant })).rejects.toMatchObject({ code: 'LORA_NOT_FOUND' });
    await user.close();
  });

  it('a deleted LoRA in use by a job stays until its lease is released', async () => {
    const agent = await agentWith({ subscribe: true });
    const { userId, grant, loras } = await userWithLoras(server, [20_000]);
    const { path, lease } = await agent.ensure({ source: 'user', id: loras[0]!.id, grant }, { lease: { holder: 'job-42' } });
    await eventually(async () => agent.invalidator.reconciliations > 0, 5000, 'subscription connected');
    const user = await userClient(server, userId);
    await user.deleteLora({ id: loras[0]!.id });
    await eventually(async () => agent.store.findUser(loras[0]!.id)?.pendingDelete === true, 2000, 'marked deleted');
    expect(existsSync(path)).toBe(true); // the job still reads it
    await expect(agent.ensure({ source: 'user', id: loras[0]!.id, grant })).rejects.toMatchObject({ code: 'LORA_NOT_FOUND' });
    expect(lease).not.toBeNull();
    await agent.release({ holder: 'job-42', grant });
    expect(existsSync(path)).toBe(false);
    await user.close();
  });

  it('a LoRA deleted while the network to the API was down is evicted once the subscription reconnects (reconcile on reconnect)', async () => {
    const network = await startTcpProxy(Number(new URL(server.url).port));
    const agent = await agentWith({ subscribe: true, server: { ...server, graphqlUrl: `http://127.0.0.1:${network.port}/graphql` } });
    const { userId, grant, loras } = await userWithLoras(server, [10_000]);
    const { path } = await agent.ensure({ source: 'user', id: loras[0]!.id, grant });
    await eventually(async () => agent.invalidator.reconciliations > 0, 5000, 'first connection');
    const before = agent.invalidator.reconciliations;
    try {
      network.down(); // the agent's connections are cut; the LORA_DELETED event goes out while it is away
      const user = await userClient(server, userId);
      await user.deleteLora({ id: loras[0]!.id });
      await user.close();
      await new Promise((r) => setTimeout(r, 300));
      expect(existsSync(path)).toBe(true); // the event never reached this agent

      network.up();
      // (the file goes inside the reconciliation, which is counted once it has finished)
      await eventually(
        async () => !existsSync(path) && agent.invalidator.reconciliations > before,
        30_000,
        'evicted by the reconciliation after the reconnect',
      );
    } finally {
      await network.close();
    }
  }, 45_000);

  it('a LoRA deleted while the agent was offline is evicted after it reconnects (reconcile, THREATS 25)', async () => {
    const first = await agentWith();
    const { userId, grant, loras } = await userWithLoras(server, [10_000, 10_000]);
    const gone = await first.ensure({ source: 'user', id: loras[0]!.id, grant });
    const kept = await first.ensure({ source: 'user', id: loras[1]!.id, grant });
    await first.stop();

    const user = await userClient(server, userId);
    await user.deleteLora({ id: loras[0]!.id });
    await user.close();

    const again = await agentWith({ comfyDir: first.config.loraDir.replace(/\/models\/loras$/, ''), subscribe: true });
    await eventually(async () => !existsSync(gone.path), 5000, 'reconciled after reconnect');
    expect(existsSync(kept.path)).toBe(true);
    expect(statSync(kept.path).size).toBe(10_000);
    expect(again.store.findUser(loras[1]!.id)?.verified).toBe(true);
  });
});

describe('reporting', () => {
  it('stats reach the API through the SDK (the seed figures), and DOWNLOADED / EVICTED events reach subscribers', async () => {
    const size = 40_000;
    const agent = await agentWith({ env: { LORA_CACHE_MAX_GB: String(size / GiB) } });
    const admin = createLoraClient({ url: server.graphqlUrl, token: await server.tokens.admin(), webSocketImpl: WebSocket });
    const seen: CacheEvent[] = [];
    const events = admin.cacheEvents({ machineId: agent.config.machineId });
    const collecting = (async () => {
      for await (const e of events) seen.push(e);
    })();
    await new Promise((r) => setTimeout(r, 300)); // subscribed

    const { grant, loras } = await userWithLoras(server, [size, size]);
    const first = await agent.ensure({ source: 'user', id: loras[0]!.id, grant });
    await agent.ensure({ source: 'user', id: loras[0]!.id, grant }); // a hit
    await agent.ensure({ source: 'user', id: loras[1]!.id, grant }); // evicts the first (cap = one file)
    expect(existsSync(first.path)).toBe(false);
    await eventually(
      async () => seen.filter((e) => e.type === 'DOWNLOADED').length === 2 && seen.some((e) => e.type === 'EVICTED'),
      5000,
      'events',
    );
    expect(seen.find((e) => e.type === 'EVICTED')).toMatchObject({
      loraId: loras[0]!.id,
      machineId: agent.config.machineId,
      reason: 'space',
    });

    expect(await agent.reportStats()).toBe(true);
    const [stats] = await admin.getCacheStats({ machineId: agent.config.machineId });
    expect(stats).toMatchObject({
      machineId: agent.config.machineId,
      totalLoraCacheBytes: size,
      maxLoraCacheBytes: size,
      userLoraCount: 1,
      sharedLoraCount: 0,
      evictions24h: 1,
    });
    expect(stats?.cacheHitRate24h).toBeCloseTo(1 / 3, 5);
    expect(stats?.utilizationPercent).toBeCloseTo(100, 5);
    await events.return(undefined);
    await collecting;
    await admin.close();
  });
});

describe('index and timestamps', () => {
  it('settings live in the seed table with env overrides written back; timestamps parse both ways', async () => {
    const agent = await agentWith({ env: { LORA_MAX_AGE_DAYS: '3', LORA_EVICTION_ENABLED: 'false' } });
    const rows = Object.fromEntries(
      (agent.store.db.prepare('SELECT key, value FROM settings').all() as { key: string; value: string }[]).map((r) => [r.key, r.value]),
    );
    expect(rows).toMatchObject({ lora_cache_max_gb: '50', lora_max_age_days: '3', lora_eviction_enabled: 'false', min_free_space_gb: '0' });
    expect(agent.store.settings()).toMatchObject({ maxAgeDays: 3, evictionEnabled: false, maxCacheBytes: 50 * GiB });
    expect(parseCacheTime('2025-11-13T12:00:00.123456')).toBe(new Date(2025, 10, 13, 12, 0, 0, 123).getTime());
  });
});
