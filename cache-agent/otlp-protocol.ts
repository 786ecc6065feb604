import { z } from 'zod';

/**
 * How spans are encoded for OTLP/HTTP: OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, else
 * OTEL_EXPORTER_OTLP_PROTOCOL, else the specification's default `http/protobuf`. Encoding spans as
 * JSON cost about three times the CPU per span on the API's request path (bench:api:profile,
 * docs/decisions.md "Observability"). Metrics are exported as http/json whatever is set: once a
 * minute, off the request path (an OTLP/HTTP receiver accepts both encodings). Read by
 * server/config.ts and cache-agent/config.ts; applied by otel-process.ts.
 */
export const OtlpProtocol = z.enum(['http/protobuf', 'http/json']);
export type OtlpProtocol = z.infer<typeof OtlpProtocol>;

/** The env schema's entries (validated with the rest of the configuration: `grpc` is refused, not ignored). */
export const otlpProtocolEnv = {
  OTEL_EXPORTER_OTLP_PROTOCOL: OtlpProtocol.optional(),
  OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: OtlpProtocol.optional(),
};

/** The spans' protocol. */
export function tracesProtocol(env: {
  OTEL_EXPORTER_OTLP_PROTOCOL?: OtlpProtocol | undefined;
  OTEL_EXPORTER_OTLP_TRACES_PROTOCOL?: OtlpProtocol | undefined;
}): OtlpProtocol {
  return env.OTEL_EXPORTER_OTLP_TRACES_PROTOCOL ?? env.OTEL_EXPORTER_OTLP_PROTOCOL ?? 'http/protobuf';
}
