import http from 'node:http';
import { HttpInstrumentation } from '@opentelemetry/instrumentation-http';
import type { SpanProcessor } from '@opentelemetry/sdk-trace-base';
import type { AgentConfig } from './config.ts';
import { type ProcessTelemetry, startProcessTelemetry } from './otel-process.ts';

/**
 * The agent's OpenTelemetry SDK, once per process (otel-process.ts): Prometheus registry (GET
 * /metrics on the local interface), OTLP only when an endpoint is configured, no span recorded
 * without an exporter. `service.instance.id` is the machine id. The local interface's requests get
 * SERVER spans from the HTTP instrumentation (a job runner's `traceparent` is honoured). When the
 * API server runs in the same process (tests), its SDK is the one (the state is shared under one
 * global symbol).
 */

export type AgentTelemetry = ProcessTelemetry;

export function startAgentTelemetry(
  config: Pick<AgentConfig, 'telemetry' | 'machineId'>,
  options: { spanProcessors?: SpanProcessor[] } = {},
): AgentTelemetry {
  return startProcessTelemetry({
    serviceName: config.telemetry.serviceName,
    otlp: config.telemetry.otlp,
    ...(config.telemetry.tracesProtocol ? { tracesProtocol: config.telemetry.tracesProtocol } : {}),
    disabled: config.telemetry.disabled,
    ...(options.spanProcessors ? { spanProcessors: options.spanProcessors } : {}),
    instrument() {
      // applied to node:http as imported (ESM imports bypass require hooks); incoming requests only
      const instrumentation = new HttpInstrumentation({
        enabled: false,
        disableOutgoingRequestInstrumentation: true,
        ignoreIncomingRequestHook: (req) => req.url === '/metrics' || req.url === '/health',
      });
      for (const definition of instrumentation.getModuleDefinitions()) if (definition.name === 'http') definition.patch?.(http);
    },
  });
}
