import { OTLPMetricExporter } from '@opentelemetry/exporter-metrics-otlp-http';
import { PrometheusExporter } from '@opentelemetry/exporter-prometheus';
import { OTLPTraceExporter as JsonTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { OTLPTraceExporter as ProtobufTraceExporter } from '@opentelemetry/exporter-trace-otlp-proto';
import { envDetector, hostDetector } from '@opentelemetry/resources';
import type { IMetricReader } from '@opentelemetry/sdk-metrics';
import { NodeSDK } from '@opentelemetry/sdk-node';
import { AlwaysOffSampler, BatchSpanProcessor, type SpanProcessor } from '@opentelemetry/sdk-trace-base';
import { OtlpMetricForwarder } from './otlp-metric-forwarder.ts';
import type { OtlpProtocol } from './otlp-protocol.ts';

/**
 * The OpenTelemetry SDK of a process, started once whoever starts it: the agent
 * (telemetry-sdk.ts) or the API server (server/telemetry/sdk.ts, which imports this file; when both
 * run in one process, as in tests, the first start's options win). One NodeSDK, one Prometheus
 * registry (served on `/metrics` by whoever asks), OTLP only when asked; with no exporter no span is
 * recorded at all. `instrument` patches the modules the caller imported, once the SDK runs.
 */

export interface ProcessTelemetry {
  /** The Prometheus registry of this process (null when the SDK is disabled). */
  prometheus: PrometheusExporter | null;
  /** Whether spans are recorded (an exporter is configured). */
  tracing: boolean;
  /** Flushes and stops exporting (at process exit). */
  shutdown(): Promise<void>;
}

export interface ProcessTelemetryOptions {
  serviceName: string;
  /**
   * Export spans and metrics over OTLP/HTTP (the exporters read OTEL_EXPORTER_OTLP_* endpoints and
   * headers themselves); metrics as http/json.
   */
  otlp: { traces: boolean; metrics: boolean };
  /** How spans are encoded (otlp-protocol.ts; default http/protobuf). */
  tracesProtocol?: OtlpProtocol;
  /** OTEL_SDK_DISABLED: no SDK at all (metrics and spans are no-ops). */
  disabled?: boolean;
  /** Extra span processors (tests: an in-memory exporter). */
  spanProcessors?: SpanProcessor[];
  /** Applies the caller's instrumentations (ESM imports do not go through require hooks). */
  instrument(): void;
}

const STATE = Symbol.for('lora-vault.telemetry');
type Global = typeof globalThis & { [STATE]?: ProcessTelemetry };

/** The process's telemetry, if started. */
export function currentProcessTelemetry(): ProcessTelemetry | null {
  return (globalThis as Global)[STATE] ?? null;
}

/** Starts the SDK once per process; later calls return the running one. */
export function startProcessTelemetry(options: ProcessTelemetryOptions): ProcessTelemetry {
  const global = globalThis as Global;
  const running = global[STATE];
  if (running) return running;
  // not remembered: another part of the process (a benchmark's telemetry-on run) may start it later
  if (options.disabled) return { prometheus: null, tracing: false, shutdown: async () => {} };
  const prometheus = new PrometheusExporter({ preventServerStart: true });
  const metricReaders: IMetricReader[] = [prometheus];
  const spanProcessors: SpanProcessor[] = [...(options.spanProcessors ?? [])];
  if (options.otlp.traces) {
    const exporter = options.tracesProtocol === 'http/json' ? new JsonTraceExporter() : new ProtobufTraceExporter();
    spanProcessors.push(new BatchSpanProcessor(exporter));
  }
  const tracing = spanProcessors.length > 0;
  const sdk = new NodeSDK({
    serviceName: options.serviceName,
    // no process detector: it exports the command line, which may carry a grant (lora-cache ensure --grant …)
    resourceDetectors: [envDetector, hostDetector],
    spanProcessors,
    metricReaders,
    logRecordProcessors: [],
    instrumentations: [],
    // no exporter: no span is recorded at all (the API hands out non-recording spans)
    ...(tracing ? {} : { sampler: new AlwaysOffSampler() }),
  });
  sdk.start();
  options.instrument();
  // OTLP metrics from the Prometheus reader's storage: one storage, so each measurement is recorded once
  const forwarder = options.otlp.metrics ? new OtlpMetricForwarder(prometheus, new OTLPMetricExporter()) : null;
  const shutdown = async () => {
    await forwarder?.shutdown();
    await sdk.shutdown();
  };
  const telemetry: ProcessTelemetry = { prometheus, tracing, shutdown };
  global[STATE] = telemetry;
  return telemetry;
}
