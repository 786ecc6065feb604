import { Writable } from 'node:stream';
import { type Logger, pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { serverWithAgents, userClient, userWithLoras } from '../testkit/agent.ts';
import { mintGrant } from '../testkit/grants.ts';
import { eventually } from '../testkit/seed.ts';
import type { TestServer } from '../testkit/server.ts';

/**
 * The rate limits at their defaults never meet the GPU machines in normal use (API.md "Rate
 * limits"): a real cache agent against a real server with no limit configured. Hits of `ensure`
 * do not call the API at all; a burst of 1,000 jobs (1,000 grants minted by the dispatcher, 1,000
 * batched usage reports) and 1,000 cache events all go through.
 */

let server: TestServer;
const agents = serverWithAgents((started) => {
  server = started;
});

/** A pino logger whose warnings (the reporter's "could not report …") the test can read. */
function capturingLogger(): { logger: Logger; warnings: string[] } {
  const warnings: string[] = [];
  const stream = new Writable({
    write(chunk, _encoding, done) {
      warnings.push(String(chunk));
      done();
    },
  });
  return { logger: pino({ level: 'warn' }, stream) as Logger, warnings };
}

/** Runs `work` for 0..n-1, `width` at a time. */
async function inBatches<T>(n: number, width: number, work: (i: number) => Promise<T>): Promise<T[]> {
  const out: T[] = [];
  for (let start = 0; start < n; start += width) {
    out.push(...(await Promise.all(Array.from({ length: Math.min(width, n - start) }, (_, k) => work(start + k)))));
  }
  return out;
}

describe('the agent at default limits', () => {
  it('1,000 cache hits of one job send nothing to the API', async () => {
    const { logger, warnings } = capturingLogger();
    const agent = await agents.start({ logger });
    const { userId, grant, loras } = await userWithLoras(server, [50_000]);
    const lora = loras[0]!;
    expect((await agent.ensure({ source: 'user', id: lora.id, grant })).hit).toBe(false);
    // the miss's usage report goes out within the batching second: wait for it before counting
    const user = await userClient(server, userId);
    await eventually(async () => (await user.getLora({ id: lora.id })).usageCount === 1, 10_000, 'the miss recorded');
    await user.close();
    let requests = 0;
    const count = () => {
      requests += 1;
    };
    server.app.server.on('request', count);
    try {
      const hits = await Promise.all(Array.from({ length: 1_000 }, () => agent.ensure({ source: 'user', id: lora.id, grant })));
      expect(hits.every((h) => h.hit)).toBe(true);
      expect(requests).toBe(0);
    } finally {
      server.app.server.off('request', count);
    }
    expect(warnings).toEqual([]);
  });

  it('a burst of 1,000 jobs: 1,000 grants minted, 1,000 usage reports and 1,000 cache events, none refused', async () => {
    const { logger, warnings } = capturingLogger();
    const agent = await agents.start({ logger });
    const { userId, grant, loras } = await userWithLoras(server, [50_000]);
    const lora = loras[0]!;
    await agent.ensure({ source: 'user', id: lora.id, grant });
    // the dispatcher mints a grant per job (the default grant budget is per service)
    const grants = await inBatches(1_000, 25, () => mintGrant(server, userId));
    expect(new Set(grants).size).toBe(1_000);
    // every job hits the cache; each job's use is one usage report (batched by the agent)
    const hits = await inBatches(1_000, 100, (i) => agent.ensure({ source: 'user', id: lora.id, grant: grants[i] as string }));
    expect(hits.every((h) => h.hit)).toBe(true);
    const user = await userClient(server, userId);
    try {
      await eventually(async () => (await user.getLora({ id: lora.id })).usageCount === 1_001, 120_000, '1,001 uses recorded');
    } finally {
      await user.close();
    }
    // and cache events, as a machine evicting or downloading a lot would send them
    const machine = await server.tokens.machine(agent.config.machineId);
    const events = await inBatches(1_000, 50, (i) =>
      server.gql(
        'mutation($i: CacheEventInput!) { reportCacheEvent(input: $i) { __typename } }',
        { i: { type: 'DOWNLOADED', sharedName: `burst-${i}.safetensors` } },
        { token: machine },
      ),
    );
    expect(events.filter((r) => r.body.data?.reportCacheEvent?.__typename !== 'CacheEvent')).toEqual([]);
    expect(warnings.filter((w) => w.includes('RATE_LIMITED'))).toEqual([]);
    expect(warnings).toEqual([]);
  }, 240_000);
});
