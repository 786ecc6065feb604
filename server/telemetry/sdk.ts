import http from 'node:http';
import * as azureCoreTracing from '@azure/core-tracing';
import { createAzureSdkInstrumentation } from '@azure/opentelemetry-instrumentation-azure-sdk';
import { type MeterProvider, metrics } from '@opentelemetry/api';
import type { InstrumentationModuleDefinition } from '@opentelemetry/instrumentation';
import { HttpInstrumentation } from '@opentelemetry/instrumentation-http';
import { IORedisInstrumentation } from '@opentelemetry/instrumentation-ioredis';
import { PgInstrumentation } from '@opentelemetry/instrumentation-pg';
import { PrismaInstrumentation } from '@prisma/instrumentation';
import Redis from 'ioredis';
import pg from 'pg';
import {
  currentProcessTelemetry,
  type ProcessTelemetry,
  type ProcessTelemetryOptions,
  startProcessTelemetry,
} from '../../cache-agent/otel-process.ts';
import { OWNER_DOWNLOAD_PATH } from '../services/owner-downloads.ts';

/**
 * The OpenTelemetry SDK of this process (server and agent share it when they run in one process,
 * as in tests; the start-up itself is the agent package's cache-agent/otel-process.ts, which the
 * agent ships alone): one NodeSDK, one Prometheus registry (served on `/metrics` by whoever asks), OTLP
 * only when an `OTEL_EXPORTER_OTLP_*ENDPOINT` is set. With none set nothing leaves the machine:
 * spans are not sampled at all (no exporter) and metrics stay in the Prometheus registry.
 *
 * Instrumentations are applied to the modules this process already imported (ESM imports do not go
 * through require hooks): `node:http`'s Server (one SERVER span per request), pg's Client and Pool
 * (SQL spans, `db.client.connection.*` pool metrics), ioredis, Prisma (its global tracing helper)
 * and the Azure SDK (`@azure/core-tracing`'s instrumenter). See docs/decisions.md.
 */

const OWNER_DOWNLOAD_ROUTE = `${OWNER_DOWNLOAD_PATH}{token}`;
/** Replace what the HTTP instrumentation would record of a download link's path (old and stable semantic conventions). */
const OWNER_DOWNLOAD_SPAN_ATTRIBUTES = {
  'http.target': OWNER_DOWNLOAD_ROUTE,
  'http.url': OWNER_DOWNLOAD_ROUTE,
  'http.route': OWNER_DOWNLOAD_ROUTE,
  'url.path': OWNER_DOWNLOAD_ROUTE,
  'url.full': OWNER_DOWNLOAD_ROUTE,
};

/** `serviceName` is `service.name` unless OTEL_SERVICE_NAME says otherwise. */
export type TelemetryOptions = Omit<ProcessTelemetryOptions, 'instrument'>;

export type Telemetry = ProcessTelemetry;

/** The process's telemetry, if started. */
export function currentTelemetry(): Telemetry | null {
  return currentProcessTelemetry();
}

/** Starts the SDK once per process; later calls return the running one (first caller's options win). */
export function startTelemetry(options: TelemetryOptions): Telemetry {
  return startProcessTelemetry({ ...options, instrument: applyInstrumentations });
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
      // owner download links carry their capability in the path: record the route, never the token
      startIncomingSpanHook: (req) => (req.url?.startsWith(OWNER_DOWNLOAD_PATH) ? OWNER_DOWNLOAD_SPAN_ATTRIBUTES : {}),
    }),
    { http },
  );
  // no pg-pool.connect / pg.connect spans: a pool hands out a kept connection on nearly every request, and
  // that span cost as much as the SQL span it sat beside (the pool's metrics still count connections)
  patch(new PgInstrumentation({ enabled: false, requireParentSpan: true, enhancedDatabaseReporting: false, ignoreConnectSpans: true }), {
    pg,
    'pg-pool': Object.getPrototypeOf(pg.Pool),
  });
  patch(new IORedisInstrumentation({ enabled: false, requireParentSpan: true }), { ioredis: Redis });
  patch(createAzureSdkInstrumentation({ enabled: false }) as unknown as Patchable, { '@azure/core-tracing': azureCoreTracing });
  new PrismaInstrumentation().enable();
}
