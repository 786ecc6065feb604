import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import { performance } from 'node:perf_hooks';
import { log, onCleanup, type ServerChild } from './harness.ts';

/**
 * The telemetry-on runs of bench:api and bench:agent (issue 15). bench:agent's main runs keep the
 * SDK off (OTEL_SDK_DISABLED); afterwards, in the same process, `switchTelemetryOn` starts it as
 * production would with an OTLP collector configured — every span sampled and exported, metrics
 * exported and kept for /metrics — and the same measurement runs again. bench:api compares two
 * server processes, off and on, request by request (`compareServersOffOn`). The collector is a
 * sink in a child process (it answers 200 to every OTLP/HTTP post and counts them), so exporting
 * costs the server what it would against a real collector: serialization and HTTP.
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

/** A process's CPU time (user + system) so far, in ms, from /proc (Linux). */
export async function processCpuMs(pid: number): Promise<number> {
  const fields = (await readFile(`/proc/${pid}/stat`, 'utf8')).replace(/^.*\) /s, '').split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLOCK_TICKS_PER_SECOND;
}
const CLOCK_TICKS_PER_SECOND = 100; // USER_HZ on Linux

/**
 * The same request against copies of the real server (bench/upload-server.ts in child processes,
 * over the same database): the first with the SDK off (OTEL_SDK_DISABLED), the others configured as
 * production would be with a collector (OTEL_EXPORTER_OTLP_ENDPOINT = a sink: every span sampled
 * and exported, metrics too), each with its own extra variables. Requests go to each server in turn
 * (which goes first rotates), warm-up included, so all get the same JIT warm-up and whatever load
 * the shared machine has at each moment — timing one after the other measured the drift of the
 * machine as much as telemetry. Each server's CPU per timed request is read from /proc. The spans
 * are flushed to the sink before its counts are read.
 */
export async function compareServersOffOn(options: {
  /** Starts a server child with these extra environment variables. */
  startServer: (env: Record<string, string>) => Promise<ServerChild>;
  /** One request to the server at `url`. */
  run: (url: string) => Promise<unknown>;
  /** The telemetry-on servers: a label and extra variables each (e.g. OTEL_EXPORTER_OTLP_PROTOCOL). */
  on: { label: string; env: Record<string, string> }[];
  iterations: number;
  warmup: number;
  serviceName: string;
}): Promise<{ label: string; samples: number[]; cpuMsPerRequest: number }[] & { exported?: { requests: number; bytes: number } }> {
  const sink = await startOtlpSink();
  const variants = [
    { label: 'off', env: { OTEL_SDK_DISABLED: 'true' } },
    ...options.on.map((v) => ({
      label: v.label,
      env: { OTEL_EXPORTER_OTLP_ENDPOINT: sink.endpoint, OTEL_SERVICE_NAME: options.serviceName, ...v.env },
    })),
  ];
  const servers: ServerChild[] = [];
  for (const v of variants) servers.push(await options.startServer(v.env));
  log(`telemetry: servers ${variants.map((v, k) => `${v.label} (pid ${servers[k]?.pid})`).join(', ')}; OTLP sink ${sink.endpoint}`);
  const samples = variants.map((): number[] => []);
  const cpu = variants.map(() => 0);
  const n = variants.length;
  for (let i = 0; i < options.warmup + options.iterations; i++) {
    if (i === options.warmup) for (let k = 0; k < n; k++) cpu[k] = -(await processCpuMs((servers[k] as ServerChild).pid));
    for (let j = 0; j < n; j++) {
      const k = (i + j) % n;
      const t0 = performance.now();
      await options.run((servers[k] as ServerChild).url);
      if (i >= options.warmup) samples[k]?.push(performance.now() - t0);
    }
  }
  for (let k = 0; k < n; k++) cpu[k] = (cpu[k] ?? 0) + (await processCpuMs((servers[k] as ServerChild).pid));
  await new Promise((r) => setTimeout(r, 6000)); // the batch span processor's delay (5 s)
  const exported = await sink.stats();
  await Promise.all(servers.map((s) => s.stop()));
  const result = variants.map((v, k) => ({
    label: v.label,
    samples: samples[k] ?? [],
    cpuMsPerRequest: (cpu[k] ?? 0) / options.iterations,
  }));
  return Object.assign(result, { exported });
}
