import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { log, onCleanup } from './harness.ts';

/**
 * The telemetry-on runs of bench:api and bench:agent (issue 15): the benchmarks' main runs keep
 * the SDK off (OTEL_SDK_DISABLED); afterwards, in the same process, `switchTelemetryOn` starts it
 * as production would with an OTLP collector configured — every span sampled and exported, metrics
 * exported and kept for /metrics — and the same measurement runs again. The collector is a sink in
 * a child process (it answers 200 to every OTLP/HTTP post and counts them), so exporting costs this
 * process what it would against a real collector: serialization and HTTP.
 */

export interface OtlpSink {
  endpoint: string;
  /** Requests and bytes the sink received. */
  stats(): Promise<{ requests: number; bytes: number }>;
}

const SINK = `
const http = require('node:http');
let requests = 0, bytes = 0;
http.createServer((req, res) => {
  if (req.method === 'GET') return res.end(JSON.stringify({ requests, bytes }));
  req.on('data', (c) => { bytes += c.length; });
  // an empty ExportTraceServiceResponse in the request's encoding (protobuf: zero bytes)
  const json = String(req.headers['content-type']).includes('json');
  req.on('end', () => { requests++; res.writeHead(200, { 'content-type': json ? 'application/json' : 'application/x-protobuf' }).end(json ? '{}' : ''); });
}).listen(0, '127.0.0.1', function () { process.stdout.write(String(this.address().port) + '\\n'); });
`;

export async function startOtlpSink(): Promise<OtlpSink> {
  const child: ChildProcess = spawn(process.execPath, ['-e', SINK], { stdio: ['ignore', 'pipe', 'inherit'] });
  onCleanup('OTLP sink', async () => {
    child.kill();
  });
  const [chunk] = (await once(child.stdout as NodeJS.ReadableStream, 'data')) as [Buffer];
  const endpoint = `http://127.0.0.1:${Number(chunk.toString().trim())}`;
  return {
    endpoint,
    stats: async () => (await (await fetch(endpoint)).json()) as { requests: number; bytes: number },
  };
}

/**
 * Points the OTLP exporters at a fresh sink (they read OTEL_EXPORTER_OTLP_ENDPOINT) and calls
 * `start` — the process's startTelemetry (server) or startAgentTelemetry (agent) with OTLP on.
 */
export async function switchTelemetryOn(start: () => void): Promise<OtlpSink> {
  const sink = await startOtlpSink();
  process.env.OTEL_EXPORTER_OTLP_ENDPOINT = sink.endpoint;
  start();
  log(`telemetry on: every span sampled and exported over OTLP/HTTP to a sink at ${sink.endpoint}, metrics exported too`);
  return sink;
}

/** Nearest-rank percentile (p in 0..100). */
export function percentileOf(samples: number[], p: number): number {
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.max(0, Math.ceil((p / 100) * sorted.length) - 1)] ?? Number.NaN;
}

async function timeEach(n: number, run: () => Promise<unknown>): Promise<number[]> {
  const samples: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await run();
    samples.push(performance.now() - t0);
  }
  return samples;
}

/**
 * `run` timed with the SDK off, then on (after `start`), each after its own warm-up; the spans
 * are flushed to the sink before its counts are read.
 */
export async function timeOffThenOn(options: {
  run: () => Promise<unknown>;
  iterations: number;
  warmup: number;
  start: () => void;
}): Promise<{ off: number[]; on: number[]; exported: { requests: number; bytes: number } }> {
  await timeEach(options.warmup, options.run);
  const off = await timeEach(options.iterations, options.run);
  const sink = await switchTelemetryOn(options.start);
  await timeEach(options.warmup, options.run);
  const on = await timeEach(options.iterations, options.run);
  await new Promise((r) => setTimeout(r, 6000)); // the batch span processor's delay (5 s)
  return { off, on, exported: await sink.stats() };
}
