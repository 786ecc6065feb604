import type { InMemorySpanExporter } from '@opentelemetry/sdk-trace-base';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Agent } from '../../cache-agent/app.ts';
import { agentPool, userWithLoras } from '../testkit/agent.ts';
import { startTestServer, type TestServer } from '../testkit/server.ts';
import { sample, scrape, spanTree, startTestTelemetry } from '../testkit/telemetry.ts';

/** Issue 15 on the agent: a miss, a hit and an eviction move its /metrics; one trace from /ensure to the API. */

const GiB = 1024 ** 3;
const SIZE = 256 * 1024;
let spans: InMemorySpanExporter;
let server: TestServer;
const agents = agentPool(() => server);
beforeAll(async () => {
  spans = startTestTelemetry();
  server = await startTestServer();
});
afterAll(async () => {
  await agents.stopAll();
  await server?.stop();
});

async function ensure(agent: Agent, body: Record<string, unknown>, headers: Record<string, string> = {}) {
  const res = await fetch(`${agent.address}/ensure`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as { hit: boolean; path: string } };
}

describe('the agent /metrics', () => {
  it('counts a miss (with its download), a hit and a space eviction; shows the cache gauges', async () => {
    // room for two files: the third evicts the least recently used
    const agent = await agents.start({ listen: true, env: { LORA_CACHE_MAX_GB: String((2.5 * SIZE) / GiB) } });
    const { userId, grant, loras } = await userWithLoras(server, [SIZE, SIZE, SIZE]);
    const metricsUrl = `${agent.address}/metrics`;
    const before = await scrape(metricsUrl);
    expect((await ensure(agent, { source: 'user', id: loras[0]!.id, grant, lease: false })).body.hit).toBe(false);
    expect((await ensure(agent, { source: 'user', id: loras[0]!.id, grant, lease: false })).body.hit).toBe(true);
    await ensure(agent, { source: 'user', id: loras[1]!.id, grant, lease: false });
    await ensure(agent, { source: 'user', id: loras[2]!.id, grant, lease: false });
    const after = await scrape(metricsUrl);
    const moved = (name: string, labels: Record<string, string> = {}) => sample(after, name, labels) - sample(before, name, labels);
    expect(moved('lora_cache_lookups_total', { result: 'miss' })).toBe(3);
    expect(moved('lora_cache_lookups_total', { result: 'hit' })).toBe(1);
    expect(moved('lora_cache_download_bytes_total')).toBe(3 * SIZE);
    expect(moved('lora_cache_download_duration_count', { lora_size_bucket: 'lt_64MiB' })).toBe(3);
    expect(moved('lora_cache_evictions_total', { reason: 'space' })).toBe(1);
    expect(sample(after, 'lora_cache_usage')).toBeGreaterThanOrEqual(2 * SIZE);
    expect(sample(after, 'lora_cache_limit')).toBe(Math.floor(2.5 * SIZE));
    expect(sample(after, 'lora_cache_disk_free')).toBeGreaterThan(0);
    // labels are bounded sets: no LoRA id, user id or path among their values
    const values = [...after.keys()].flatMap((key) =>
      [...key.matchAll(/([a-z_]+)="([^"]*)"/g)].filter((m) => m[1] !== 'le').map((m) => m[2]),
    );
    for (const lora of loras) expect(values).not.toContain(lora.id);
    expect(values.filter((v) => v?.includes(agent.layout.usersDir) || v?.includes(userId))).toEqual([]);
  });

  it('METRICS_ENABLED=false: no /metrics on the local interface', async () => {
    const agent = await agents.start({ listen: true, env: { METRICS_ENABLED: 'false' } });
    expect((await fetch(`${agent.address}/metrics`)).status).toBe(404);
  });
});

describe('one trace from the agent to the API', () => {
  it("a miss: /ensure → lora_cache.ensure → download → the API's loraDownload resolver, with no grant or URL in any attribute", async () => {
    const agent = await agents.start({ listen: true });
    const { grant, loras } = await userWithLoras(server, [SIZE]);
    spans.reset();
    const res = await ensure(agent, { source: 'user', id: loras[0]!.id, grant, lease: false });
    expect(res.body.hit).toBe(false);
    const finished = spans.getFinishedSpans();
    const ensureSpan = finished.find((s) => s.name === 'lora_cache.ensure');
    expect(ensureSpan, finished.map((s) => s.name).join(', ')).toBeDefined();
    const tree = spanTree(finished, ensureSpan!.spanContext().traceId);
    expect(tree.parentOf('lora_cache.download')).toBe('lora_cache.ensure');
    expect(tree.names).toContain('lora_cache.download.part');
    expect(tree.parentOf('lora_cache.download.verify')).toBe('lora_cache.download');
    // the API's side of the same trace: its HTTP span's parent came in through traceparent
    expect(tree.names).toContain('graphql.resolve Query.loraDownload');
    const apiRoot = finished.find(
      (s) => s.spanContext().traceId === ensureSpan!.spanContext().traceId && s.parentSpanContext?.isRemote === true,
    );
    expect(apiRoot?.name).toMatch(/^POST/);
    const exported = JSON.stringify(finished.map((s) => ({ name: s.name, attributes: s.attributes, events: s.events })));
    expect(exported).not.toContain(grant);
    // nor in the resource: the process detector would export the command line (`lora-cache ensure --grant …`)
    expect(Object.keys(ensureSpan!.resource.attributes)).not.toContain('process.command_args');
    expect(exported).not.toContain('sig=');
    expect(exported).not.toContain(await server.tokens.machine(agent.config.machineId));
  });
});
