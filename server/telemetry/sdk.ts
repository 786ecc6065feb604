import http from 'node:http';
import * as azureCoreTracing from '@azure/core-tracing';
import { createAzureSdkInstrumentation } from '@azure/opentelemetry-instrumentation-azure-sdk';
import { type MeterProvider, metrics } from '@opentelemetry/api';
import { OTLPMetricExporter } from '@opentelemetry/exporter-metrics-otlp-http';
import { PrometheusExporter } from '@opentelemetry/exporter-prometheus';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import type { InstrumentationModuleDefinition } from '@opentelemetry/instrumentation';
import { HttpInstrumentation } from '@opentelemetry/instrumentation-http';
import { IORedisInstrumentation } from '@opentelemetry/instrumentation-ioredis';
import { PgInstrumentation } from '@opentelemetry/instrumentation-pg';
import { envDetector, hostDetector } from '@opentelemetry/resources';
import { type IMetricReader, PeriodicExportingMetricReader } from '@opentelemetry/sdk-metrics';
import { NodeSDK } from '@opentelemetry/sdk-node';
import { AlwaysOffSampler, BatchSpanProcessor, type SpanProcessor } from '@opentelemetry/sdk-trace-base';
import { PrismaInstrumentation } from '@prisma/instrumentation';
import Redis from 'ioredis';
import pg from 'pg';

/**
 * The OpenTelemetry SDK of this process (server and agent share it when they run in one process,
 * as in tests): one NodeSDK, one Prometheus registry (served on `/metrics` by whoever asks), OTLP
 * only when an `OTEL_EXPORTER_OTLP_*ENDPOINT` is set. With none set nothing leaves the machine:
 * spans are not sampled at all (no exporter) and metrics stay in the Prometheus registry.
 *
 * Instrumentations are applied to the modules this process already imported (ESM imports do not go
 * through require hooks): `node:http`'s Server (one SERVER span per request), pg's Client and Pool
 * (SQL spans, `db.client.connection.*` pool metrics), ioredis, Prisma (its global tracing helper)
 * and the Azure SDK (`@azure/core-tracing`'s instrumenter). See docs/decisions.md.
 */

export interface TelemetryOptions {
  /** `service.name` unless OTEL_SERVICE_NAME says otherwise. */
  serviceName: string;
  /** Export spans and metrics over OTLP/HTTP (the exporters read OTEL_EXPORTER_OTLP_* themselves). */
  otlp: { traces: boolean; metrics: boolean };
  /** Extra span processors (tests: an in-memory exporter). */
  spanProcessors?: SpanProcessor[];
  /** OTEL_SDK_DISABLED: no SDK at all (metrics and spans are no-ops; `/metrics` is empty). */
  disabled?: boolean;
}

export interface Telemetry {
  /** The Prometheus registry of this process (null when the SDK is disabled). */
  prometheus: PrometheusExporter | null;
  /** Whether spans are recorded (an exporter is configured). */
  tracing: boolean;
  /** Flushes and stops exporting (at process exit). */
  shutdown(): Promise<void>;
}

const STATE = Symbol.for('lora-vault.telemetry');
type Global = typeof globalThis & { [STATE]?: Telemetry };

/** The process's telemetry, if started. */
export function currentTelemetry(): Telemetry | null {
  return (globalThis as Global)[STATE] ?? null;
}

/** Starts the SDK once per process; later calls return the running one (first caller's options win). */
export function startTelemetry(options: TelemetryOptions): Telemetry {
  const global = globalThis as Global;
  const running = global[STATE];
  if (running) return running;
  // not remembered: another part of the process (a benchmark's telemetry-on run) may start it later
  if (options.disabled) return { prometheus: null, tracing: false, shutdown: async () => {} };
  const prometheus = new PrometheusExporter({ preventServerStart: true });
  const metricReaders: IMetricReader[] = [prometheus];
  if (options.otlp.metrics) metricReaders.push(new PeriodicExportingMetricReader({ exporter: new OTLPMetricExporter() }));
  const spanProcessors: SpanProcessor[] = [...(options.spanProcessors ?? [])];
  if (options.otlp.traces) spanProcessors.push(new BatchSpanProcessor(new OTLPTraceExporter()));
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
  applyInstrumentations();
  const telemetry: Telemetry = { prometheus, tracing, shutdown: () => sdk.shutdown() };
  global[STATE] = telemetry;
  return telemetry;
}

/** An instrumentation, structurally (each package may bring its own copy of @opentelemetry/instrumentation). */
interface Patchable {
  setMeterProvider(provider: MeterProvider): void;
  getModuleDefinitions(): InstrumentationModuleDefinition[];
}

/** Applies each instrumentation's patch to the module object this process imported. */
function applyInstrumentations(): void {
  const patch = (instrumentation: Patchable, exportsByModule: Record<string, unknown>) => {
    instrumentation.setMeterProvider(metrics.getMeterProvider());
    for (const definition of instrumentation.getModuleDefinitions()) {
      const moduleExports = exportsByModule[definition.name];
      if (moduleExports && definition.patch) definition.patch(moduleExports, definition.moduleVersion);
    }
  };
  patch(
    new HttpInstrumentation({
      enabled: false,
      // only the server side: the agent's downloads are traced by the agent itself, without their URLs
      disableOutgoingRequestInstrumentation: true,
      ignoreIncomingRequestHook: (req) => req.url === '/metrics' || req.url === '/healthz',
    }),
    { http },
  );
  patch(new PgInstrumentation({ enabled: false, requireParentSpan: true, enhancedDatabaseReporting: false }), {
    pg,
    'pg-pool': Object.getPrototypeOf(pg.Pool),
  });
  patch(new IORedisInstrumentation({ enabled: false, requireParentSpan: true }), { ioredis: Redis });
  patch(createAzureSdkInstrumentation({ enabled: false }) as unknown as Patchable, { '@azure/core-tracing': azureCoreTracing });
  new PrismaInstrumentation().enable();
}
