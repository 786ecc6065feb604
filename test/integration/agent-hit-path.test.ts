import { renameSync } from 'node:fs';
import { basename } from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import type { Agent } from '../../cache-agent/app.ts';
import { callAgent, serverWithAgents, userWithLoras } from '../testkit/agent.ts';
import type { TestServer } from '../testkit/server.ts';

/**
 * What a cache hit costs the index (issue 16's review of the agent): a hit reads no `models` row
 * synchronously, a default-leased /ensure hit writes its lease with the next flush (or never, when
 * released first), and a job's re-lease after its file moved counts one load once.
 */

let server: TestServer;
const agents = serverWithAgents((started) => {
  server = started;
});

/** Counts statements better-sqlite3 runs (all statements share one prototype) whose SQL matches. */
function countStatements(db: Database.Database, matching: RegExp): { count: number; paused: boolean; stop(): void } {
  const proto = Object.getPrototypeOf(db.prepare('SELECT 1')) as Record<'get' | 'all' | 'run', (...a: unknown[]) => unknown>;
  const originals = { get: proto.get, all: proto.all, run: proto.run };
  const counter = {
    count: 0,
    paused: false,
    stop() {
      Object.assign(proto, originals);
    },
  };
  for (const name of ['get', 'all', 'run'] as const) {
    const original = originals[name];
    proto[name] = function (this: { source: string }, ...args: unknown[]) {
      if (!counter.paused && matching.test(this.source)) counter.count++;
      return original.apply(this, args);
    };
  }
  return counter;
}

const leaseRows = (agent: Agent) => (agent.store.db.prepare('SELECT COUNT(*) AS n FROM lora_cache_leases').get() as { n: number }).n;
const hitsCounted = (agent: Agent) => agent.store.counters24h(new Date()).hits;

let counter: { stop(): void } | undefined;
afterEach(() => counter?.stop());

describe('the hit path', () => {
  it('reads no models row: 50 hits run no statement on models until the flush, which adds back a row the Python side removed', async () => {
    const agent = await agents.start();
    const { grant, loras } = await userWithLoras(server, [20_000]);
    const first = await agent.ensure({ source: 'user', id: loras[0]!.id, grant });
    agent.store.flushTouches();
    // the Python side drops the row (its own cleanup), from its own connection
    const python = new Database(agent.config.dbPath);
    python.prepare('DELETE FROM models WHERE path = ?').run(first.path);
    python.close();

    const statements = countStatements(agent.store.db, /\bmodels\b/);
    counter = statements;
    // the agent's once-a-second flush may come during the hits (a slow machine): its statements are the flush's, not the hits'
    const flush = agent.store.flushTouches.bind(agent.store);
    agent.store.flushTouches = () => {
      statements.paused = true;
      try {
        return flush();
      } finally {
        statements.paused = false;
      }
    };
    for (let i = 0; i < 50; i++) expect((await agent.ensure({ source: 'user', id: loras[0]!.id, grant })).hit).toBe(true);
    expect(statements.count).toBe(0);
    statements.stop();

    agent.store.flushTouches();
    const row = agent.store.db.prepare('SELECT use_count, is_ignore, model_type FROM models WHERE path = ?').get(first.path);
    expect(row).toEqual({ use_count: 50, is_ignore: 1, model_type: 'user_lora' });
  });

  it('a default-leased /ensure hit writes no lease row at once: released before the flush it never does; otherwise the flush writes it, and it protects the file meanwhile', async () => {
    const agent = await agents.start({ listen: true });
    const { grant, loras } = await userWithLoras(server, [20_000]);
    const id = loras[0]!.id;
    const miss = await callAgent(agent, 'POST', '/ensure', { source: 'user', id, grant });
    expect(miss.body).toMatchObject({ hit: false, lease: { leaseId: expect.any(String) } });
    const rows = leaseRows(agent); // a download's lease is written at once

    const hit = await callAgent(agent, 'POST', '/ensure', { source: 'user', id, grant });
    expect(hit.body).toMatchObject({ hit: true, lease: { leaseId: expect.any(String) } });
    expect(leaseRows(agent)).toBe(rows);
    expect(agent.store.isLeased(hit.body.path, new Date())).toBe(true);
    expect(await agent.store.removeUnlessLeased(hit.body.path, new Date(), { eviction: true })).toBe(false);
    expect((await callAgent(agent, 'POST', '/release', { leaseId: hit.body.lease.leaseId })).body).toEqual({ released: 1 });
    agent.store.flushTouches();
    expect(leaseRows(agent)).toBe(rows);

    const kept = await callAgent(agent, 'POST', '/ensure', { source: 'user', id, grant });
    agent.store.flushTouches();
    expect(leaseRows(agent)).toBe(rows + 1);
    expect((await callAgent(agent, 'POST', '/release', { leaseId: kept.body.lease.leaseId })).body).toEqual({ released: 1 });
    expect(leaseRows(agent)).toBe(rows);
  });

  it("a job's re-lease after its file moved counts the node's load as one hit and leases the new path", async () => {
    const agent = await agents.start({ listen: true });
    const { grant, loras } = await userWithLoras(server, [20_000]);
    const id = loras[0]!.id;
    const registered = await callAgent(agent, 'POST', '/jobs', { jobId: 'relase-1', grant, promptId: 'prompt-relase-1' });
    expect(registered.status).toBe(200);
    const node = { source: 'user', id, promptId: 'prompt-relase-1', instance: 'comfy-0' };
    const first = await callAgent(agent, 'POST', '/node/ensure', node);
    expect(first.body).toMatchObject({ hit: false });

    // the file moved under the job (as the agent's own start-up rename moves a file with its rows)
    const moved = first.body.path.replace(/\.safetensors$/, '-moved.safetensors');
    renameSync(first.body.path, moved);
    await agent.store.movePath(first.body.path, moved, basename(moved));
    agent.store.flushTouches();
    const hitsBefore = hitsCounted(agent);
    const second = await callAgent(agent, 'POST', '/node/ensure', node);
    expect(second.body).toMatchObject({ hit: true, path: moved });
    expect(hitsCounted(agent) - hitsBefore).toBe(1); // one load, one hit (a second ensure counted two)
    expect(agent.store.isLeased(moved, new Date())).toBe(true);
    const ended = await callAgent(agent, 'POST', '/jobs/relase-1/end', { grant });
    expect(ended.body.released).toBeGreaterThanOrEqual(1);
    expect(agent.store.isLeased(moved, new Date())).toBe(false);
  });
});
