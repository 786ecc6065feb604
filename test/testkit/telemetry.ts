import { InMemorySpanExporter, type ReadableSpan, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { startTelemetry } from '../../server/telemetry/sdk.ts';

/** The process's telemetry with every span kept in memory (call before the first server starts). */
export function startTestTelemetry(): InMemorySpanExporter {
  const exporter = new InMemorySpanExporter();
  startTelemetry({
    serviceName: 'lora-vault-test',
    otlp: { traces: false, metrics: false },
    spanProcessors: [new SimpleSpanProcessor(exporter)],
  });
  return exporter;
}

/** Prometheus text → `name{labels}` → value (labels as written, sorted by the exporter). */
export async function scrape(url: string, headers: Record<string, string> = {}): Promise<Map<string, number>> {
  const res = await fetch(url, { headers });
  if (res.status !== 200) throw new Error(`scrape ${url}: ${res.status}`);
  const samples = new Map<string, number>();
  for (const line of (await res.text()).split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    samples.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return samples;
}

/** The sum of every sample of `name` whose labels include each of `labels` (0 when none). */
export function sample(samples: Map<string, number>, name: string, labels: Record<string, string> = {}): number {
  let total = 0;
  for (const [key, value] of samples) {
    const brace = key.indexOf('{');
    const metric = brace < 0 ? key : key.slice(0, brace);
    if (metric !== name) continue;
    if (Object.entries(labels).every(([k, v]) => key.includes(`${k}="${v}"`))) total += value;
  }
  return total;
}

/** Every span of one trace, as `parent name > child name` lines, for tree assertions. */
export function spanTree(spans: readonly ReadableSpan[], traceId: string): { names: string[]; parentOf(name: string): string | null } {
  const inTrace = spans.filter((s) => s.spanContext().traceId === traceId);
  const byId = new Map(inTrace.map((s) => [s.spanContext().spanId, s]));
  return {
    names: inTrace.map((s) => s.name),
    parentOf(name) {
      const span = inTrace.find((s) => s.name === name);
      const parentId = span?.parentSpanContext?.spanId;
      return parentId ? (byId.get(parentId)?.name ?? null) : null;
    },
  };
}
