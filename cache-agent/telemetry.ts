import { type Attributes, context, metrics, propagation, type Span, SpanStatusCode, trace } from '@opentelemetry/api';
import type { EnsureOptions, EnsureResult } from './ensure.ts';
import type { LoraRef } from './lora-refs.ts';
import type { Reporter } from './reporter.ts';

/**
 * The agent's spans and figures (telemetry-sdk.ts starts the SDK). Spans: `lora_cache.ensure`
 * (hit or miss, with the job's id when known), `lora_cache.download` with its parts, retries,
 * bytes and `lora_cache.download.verify`, `lora_cache.evict`. The W3C `traceparent` of the active
 * span goes to the API with each SDK request (`traceHeaders`), so a miss is one trace from
 * `/ensure` to the SAS URL the API issued. Attributes carry ids, sizes and codes — never a grant,
 * a token or a URL. Metric labels are bounded: result, source, size bucket, kind, reason, code.
 */

const NAME = 'lora-cache';
export const tracer = () => trace.getTracer(NAME);

const MiB = 1024 * 1024;
const DURATION_BUCKETS = [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300];

function make() {
  const meter = metrics.getMeterProvider().getMeter(NAME);
  const instruments = {
    meter,
    lookups: meter.createCounter('lora_cache.lookups', { description: 'ensure calls by result (hit | miss) and lora.source' }),
    downloadDuration: meter.createHistogram('lora_cache.download.duration', {
      unit: 's',
      description: 'Downloads into the cache by size bucket (lora.size_bucket)',
      advice: { explicitBucketBoundaries: DURATION_BUCKETS },
    }),
    downloadBytes: meter.createCounter('lora_cache.download.bytes', { unit: 'By', description: 'Bytes downloaded into the cache' }),
    downloadFailures: meter.createCounter('lora_cache.download.failures', {
      description: 'Failed downloads by error.type (the agent error code)',
    }),
    downloadRetries: meter.createCounter('lora_cache.download.retries', {
      description: 'Retries by kind: part (a range request again), restart (the whole file again), url_refresh (a new URL)',
    }),
    links: meter.createCounter('lora_cache.links', {
      description: 'User LoRAs placed as a hard link to identical content already cached (no download)',
    }),
    linkedBytes: meter.createCounter('lora_cache.link.bytes', { unit: 'By', description: 'Bytes not downloaded thanks to hard links' }),
    evictions: meter.createCounter('lora_cache.evictions', { description: 'Files evicted by reason (space | age | deleted …)' }),
    indexBusyWaits: meter.createCounter('lora_cache.index.busy_waits', {
      description: 'Pauses while another process held model_cache.db locked (INDEX_BUSY once the budget is spent)',
    }),
  };
  // Series that alerts and dashboards divide by exist from the start (0), not from the first event.
  for (const result of ['hit', 'miss'])
    for (const source of ['user', 'shared']) instruments.lookups.add(0, { result, 'lora.source': source });
  instruments.downloadBytes.add(0);
  instruments.links.add(0);
  instruments.linkedBytes.add(0);
  instruments.downloadFailures.add(0, { 'error.type': 'DOWNLOAD_FAILED' });
  for (const kind of ['part', 'restart', 'url_refresh']) instruments.downloadRetries.add(0, { kind });
  for (const reason of ['space', 'age', 'deleted']) instruments.evictions.add(0, { reason });
  instruments.indexBusyWaits.add(0);
  return instruments;
}

let cached: { provider: unknown; instruments: ReturnType<typeof make> } | null = null;
export function agentInstruments(): ReturnType<typeof make> {
  const provider = metrics.getMeterProvider();
  if (cached?.provider !== provider) cached = { provider, instruments: make() };
  return cached.instruments;
}

/** Size buckets for the download-duration label: few and fixed. */
export function sizeBucket(bytes: number): string {
  if (bytes < 64 * MiB) return 'lt_64MiB';
  if (bytes < 256 * MiB) return '64MiB_256MiB';
  if (bytes < 1024 * MiB) return '256MiB_1GiB';
  return 'ge_1GiB';
}

/** Headers carrying the active span's context (W3C traceparent) to the API. */
export function traceHeaders(): Record<string, string> {
  const headers: Record<string, string> = {};
  propagation.inject(context.active(), headers);
  return headers;
}

/** Runs `fn` in a new span; a throw records the error's code (never its message, which may quote input). */
export async function inAgentSpan<T>(name: string, attributes: Attributes, fn: (span: Span) => Promise<T>): Promise<T> {
  return tracer().startActiveSpan(name, { attributes }, async (span) => {
    try {
      return await fn(span);
    } catch (error) {
      const code = (error as { code?: unknown }).code;
      span.setAttribute('error.type', typeof code === 'string' ? code : 'internal');
      span.setStatus({ code: SpanStatusCode.ERROR, message: typeof code === 'string' ? code : 'internal' });
      throw error;
    } finally {
      span.end();
    }
  });
}

/**
 * ensure, counted (hits and misses) and traced as `lora_cache.ensure` when it is part of a trace (the
 * local interface's request span, a job runner's traceparent). An in-process call outside any trace
 * gets no span of its own: a hit then costs no span (the hit path's budget is 1 ms), and a miss is
 * still traced from its `lora_cache.download` span. The job id comes from the lease holder.
 */
export function tracedEnsure(ensure: (ref: LoraRef, options?: EnsureOptions) => Promise<EnsureResult>) {
  const count = (ref: LoraRef, result: EnsureResult) =>
    agentInstruments().lookups.add(1, { result: result.hit ? 'hit' : 'miss', 'lora.source': ref.source });
  return (ref: LoraRef, options: EnsureOptions = {}): Promise<EnsureResult> => {
    if (!trace.getActiveSpan())
      return ensure(ref, options).then((result) => {
        count(ref, result);
        return result;
      });
    return inAgentSpan(
      'lora_cache.ensure',
      {
        'lora.source': ref.source,
        ...(ref.source === 'user' ? { 'lora.id': ref.id } : { 'lora.shared_name': ref.name }),
        ...(options.lease?.holder ? { 'lora_cache.holder': options.lease.holder } : {}),
      },
      async (span) => {
        const result = await ensure(ref, options);
        span.setAttributes({ 'lora_cache.result': result.hit ? 'hit' : 'miss', 'lora.size': result.sizeBytes });
        count(ref, result);
        return result;
      },
    );
  };
}

/** A finished download's figures. */
export function countDownload(
  result: { sizeBytes: number; retries: number; restarts: number; urlRefreshes: number },
  seconds: number,
): void {
  const m = agentInstruments();
  m.downloadDuration.record(seconds, { 'lora.size_bucket': sizeBucket(result.sizeBytes) });
  m.downloadBytes.add(result.sizeBytes);
  if (result.retries) m.downloadRetries.add(result.retries, { kind: 'part' });
  if (result.restarts) m.downloadRetries.add(result.restarts, { kind: 'restart' });
  if (result.urlRefreshes) m.downloadRetries.add(result.urlRefreshes, { kind: 'url_refresh' });
  trace.getActiveSpan()?.setAttributes({
    'lora_cache.download.bytes': result.sizeBytes,
    'lora_cache.download.retries': result.retries,
    'lora_cache.download.restarts': result.restarts,
  });
}

/** A user LoRA placed as a hard link to identical content (content-links.ts). */
export function countLink(sizeBytes: number): void {
  const m = agentInstruments();
  m.links.add(1);
  m.linkedBytes.add(sizeBytes);
  trace.getActiveSpan()?.setAttribute('lora_cache.linked', true);
}

export function countDownloadFailure(code: string): void {
  agentInstruments().downloadFailures.add(1, { 'error.type': code });
}

/** The reporter, with every eviction it is told of counted by reason (and an event on the active span). */
export function countingEvictions(reporter: Reporter): Reporter {
  return {
    ...reporter,
    evicted(entry, reason) {
      if (entry) {
        agentInstruments().evictions.add(1, { reason: evictionReason(reason) });
        trace.getActiveSpan()?.addEvent('lora_cache.evicted', { reason: evictionReason(reason), 'lora.size': entry.sizeBytes });
      }
      reporter.evicted(entry, reason);
    },
  };
}

/** Reasons as a bounded set (callers may pass free text). */
function evictionReason(reason: string): string {
  const word = /^[a-z_]+/.exec(reason)?.[0] ?? 'other';
  return ['space', 'age', 'deleted', 'invalidated'].includes(word) ? word : 'other';
}

export interface CacheFigures {
  usedBytes: number;
  capBytes: number;
  /** Free bytes on the cache's disk, and the floor the agent keeps (min_free_space_gb). */
  diskFreeBytes: number;
  diskFloorBytes: number;
  leases: number;
}

/** Gauges of the cache, read when scraped (or exported): bytes used and the cap, free disk and its floor, leases held. */
export function observeCache(read: () => Promise<CacheFigures | null>): { stop(): void } {
  const { meter } = agentInstruments();
  const gauges = {
    used: meter.createObservableGauge('lora_cache.usage', { unit: 'By', description: 'Bytes of LoRAs in the cache' }),
    cap: meter.createObservableGauge('lora_cache.limit', { unit: 'By', description: 'The cache cap (lora_cache_max_gb)' }),
    free: meter.createObservableGauge('lora_cache.disk.free', { unit: 'By', description: 'Free bytes on the cache disk' }),
    floor: meter.createObservableGauge('lora_cache.disk.floor', {
      unit: 'By',
      description: 'Free bytes the agent keeps (min_free_space_gb)',
    }),
    leases: meter.createObservableGauge('lora_cache.leases', { description: 'Files held by live leases' }),
  };
  const observables = Object.values(gauges);
  const callback = async (result: import('@opentelemetry/api').BatchObservableResult) => {
    const f = await read().catch(() => null);
    if (!f) return;
    result.observe(gauges.used, f.usedBytes);
    result.observe(gauges.cap, f.capBytes);
    result.observe(gauges.free, f.diskFreeBytes);
    result.observe(gauges.floor, f.diskFloorBytes);
    result.observe(gauges.leases, f.leases);
  };
  meter.addBatchObservableCallback(callback, observables);
  return { stop: () => meter.removeBatchObservableCallback(callback, observables) };
}
