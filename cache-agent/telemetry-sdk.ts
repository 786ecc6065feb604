import http from 'node:http';
import { OTLPMetricExporter } from '@opentelemetry/exporter-metrics-otlp-http';
import { PrometheusExporter } from '@opentelemetry/exporter-prometheus';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { HttpInstrumentation } from '@opentelemetry/instrumentation-http';
import { envDetector, hostDetector } from '@opentelemetry/resources';
import { type IMetricReader, PeriodicExportingMetricReader } from '@opentelemetry/sdk-metrics';
import { NodeSDK } from '@opentelemetry/sdk-node';
import { AlwaysOffSampler, BatchSpanProcessor, type SpanProcessor } from '@opentelemetry/sdk-trace-base';
import type { AgentConfig } from './config.ts';

/**
 * The agent's OpenTelemetry SDK, once per process: Prometheus registry (GET /metrics on the local
 * interface), OTLP only when an endpoint is configured, no span recorded without an exporter.
 * `service.instance.id` is the machine id. The local interface's requests get SERVER spans from
 * the HTTP instrumentation (a job runner's `traceparent` is honoured). When the API server runs
 * in the same process (tests), its SDK is the one (the state is shared under one global symbol).
 */

export interface AgentTelemetry {
  prometheus: PrometheusExporter | null;
  tracing: boolean;
  shutdown(): Promise<void>;
}

const STATE = Symbol.for('lora-vault.telemetry');
type Global = typeof globalThis & { [STATE]?: AgentTelemetry };

export function startAgentTelemetry(
  config: Pick<AgentConfig, 'telemetry' | 'machineId'>,
  options: { spanProcessors?: SpanProcessor[] } = {},
): AgentTelemetry {
  const global = globalThis as Global;
  const running = global[STATE];
  if (running) return running;
  if (config.telemetry.disabled) return { prometheus: null, tracing: false, shutdown: async () => {} };
  const prometheus = new PrometheusExporter({ preventServerStart: true });
  const metricReaders: IMetricReader[] = [prometheus];
  if (config.telemetry.otlp.metrics) metricReaders.push(new PeriodicExportingMetricReader({ exporter: new OTLPMetricExporter() }));
  const spanProcessors = [...(options.spanProcessors ?? [])];
  if (config.telemetry.otlp.traces) spanProcessors.push(new BatchSpanProcessor(new OTLPTraceExporter()));
  const tracing = spanProcessors.length > 0;
  const sdk = new NodeSDK({
    serviceName: config.telemetry.serviceName,
    // no process detector: it exports the command line, which may carry a grant (lora-cache ensure --grant …)
    resourceDetectors: [envDetector, hostDetector],
    spanProcessors,
    metricReaders,
    logRecordProcessors: [],
    instrumentations: [],
    ...(tracing ? {} : { sampler: new AlwaysOffSampler() }),
  });
  sdk.start();
  // applied to node:http as imported (ESM imports bypass require hooks); incoming requests only
  const instrumentation = new HttpInstrumentation({
    enabled: false,
    disableOutgoingRequestInstrumentation: true,
    ignoreIncomingRequestHook: (req) => req.url === '/metrics' || req.url === '/health',
  });
  for (const definition of instrumentation.getModuleDefinitions()) if (definition.name === 'http') definition.patch?.(http);
  global[STATE] = { prometheus, tracing, shutdown: () => sdk.shutdown() };
  return global[STATE];
}
