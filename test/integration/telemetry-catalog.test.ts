import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { dashboards } from '../../observability/grafana/dashboards.ts';
import { agentPool, userWithLoras } from '../testkit/agent.ts';
import { deleteLora } from '../testkit/library-helpers.ts';
import { sdxlLora } from '../testkit/lora-files.ts';
import { postMultipart } from '../testkit/multipart.ts';
import { newUserId } from '../testkit/seed.ts';
import { startTestServer, type TestServer } from '../testkit/server.ts';
import { scrape, startTestTelemetry } from '../testkit/telemetry.ts';

/**
 * Every metric an alert rule or a dashboard query names is one the processes really export: the
 * server and an agent do a little of everything (upload, refusal, delete and its blob job, a
 * reconciler run, a miss, a hit), then both /metrics are scraped.
 */

let server: TestServer;
const agents = agentPool(() => server);
beforeAll(async () => {
  startTestTelemetry();
  server = await startTestServer({ BUSINESS_METRICS_INTERVAL_SECONDS: '1' });
});
afterAll(async () => {
  await agents.stopAll();
  await server?.stop();
});

const METRIC = /\b(?:lora_vault|lora_cache|http_server|db_client)_[a-z0-9_]+/g;

/** Metric names in PromQL text: label matchers (`{…}`) and groupings (`by (…)`) hold label names, not metrics. */
function namesIn(text: string): Set<string> {
  return new Set(
    text
      .replace(/\bby\s*\([^)]*\)/g, '')
      .replace(/\{[^}]*\}/g, '')
      .match(METRIC) ?? [],
  );
}

/** Every `expr` of a dashboard. */
function exprsOf(value: unknown): string[] {
  if (Array.isArray(value)) return value.flatMap(exprsOf);
  if (typeof value !== 'object' || value === null) return [];
  return Object.entries(value).flatMap(([key, v]) => (key === 'expr' && typeof v === 'string' ? [v] : exprsOf(v)));
}

it('the rules and both dashboards name only exported metrics', async () => {
  const userId = newUserId();
  const token = await server.tokens.user(userId);
  const ok = await postMultipart({ url: server.graphqlUrl, token, file: sdxlLora('kohya'), filename: 'a.safetensors' });
  await postMultipart({ url: server.graphqlUrl, token, file: Buffer.from('not a lora at all, not at all'), filename: 'b.safetensors' });
  await deleteLora(server, token, ok.body.data.uploadLora.lora.id);
  await server.app.jobs.reconcileNow();
  const agent = await agents.start({ listen: true });
  const { grant, loras } = await userWithLoras(server, [64 * 1024]);
  await agent.ensure({ source: 'user', id: loras[0]!.id, grant });
  await fetch(`${agent.address}/ensure`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ source: 'user', id: loras[0]!.id, grant }),
  });

  const referenced = new Set([
    ...namesIn(readFileSync(join(import.meta.dirname, '../../observability/prometheus/lora-vault.rules.yml'), 'utf8')),
    ...exprsOf(dashboards()).flatMap((expr) => [...namesIn(expr)]),
  ]);
  expect(referenced.size).toBeGreaterThan(30);
  await expect
    .poll(
      async () => {
        const exported = new Set<string>();
        for (const url of [`${server.url}/metrics`, `${agent.address}/metrics`]) {
          for (const key of (await scrape(url)).keys()) exported.add(key.replace(/\{.*$/, ''));
        }
        return [...referenced].filter((name) => !exported.has(name));
      },
      { timeout: 15_000, interval: 500 },
    )
    .toEqual([]);
});
