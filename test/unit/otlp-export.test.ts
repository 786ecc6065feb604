import { once } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { metrics, trace } from '@opentelemetry/api';
import { afterAll, describe, expect, it } from 'vitest';
import { loadAgentConfig } from '../../cache-agent/config.ts';
import { startProcessTelemetry } from '../../cache-agent/otel-process.ts';
import { ConfigError, loadConfig } from '../../server/config.ts';

/**
 * How spans leave the process over OTLP/HTTP: protobuf unless OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL
 * says http/json (the specification's default, and a third of JSON's CPU per span on the API's
 * request path: docs/decisions.md "Observability"). This file's process starts its own SDK.
 */

const received: { path: string; contentType: string; bytes: Buffer }[] = [];
const collector = http.createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    received.push({ path: req.url ?? '', contentType: String(req.headers['content-type']), bytes: Buffer.concat(chunks) });
    res.writeHead(200, { 'content-type': 'application/x-protobuf' }).end();
  });
});
afterAll(() => collector.close());

describe('OTLP span export', () => {
  it('sends spans to the collector as protobuf when no protocol is set, and the metrics /metrics shows', async () => {
    collector.listen(0, '127.0.0.1');
    await once(collector, 'listening');
    const endpoint = `http://127.0.0.1:${(collector.address() as AddressInfo).port}`;
    process.env.OTEL_EXPORTER_OTLP_ENDPOINT = endpoint; // the exporters read it themselves
    const config = loadConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: endpoint });
    expect(config.telemetry.otlp).toEqual({ traces: true, metrics: true });
    const telemetry = startProcessTelemetry({ ...config.telemetry, instrument: () => {} });
    trace.getTracer('otlp-export-test').startSpan('exported-span').end();
    metrics.getMeter('otlp-export-test').createCounter('otlp_export_test_counter').add(3);
    // the same measurement on /metrics (Prometheus) …
    const scraped = await telemetry.prometheus?.collect();
    const names = scraped?.resourceMetrics.scopeMetrics.flatMap((s) => s.metrics.map((m) => m.descriptor.name));
    expect(names).toContain('otlp_export_test_counter');
    await telemetry.shutdown(); // flushes the batch
    const spans = received.filter((r) => r.path === '/v1/traces');
    expect(spans.length).toBeGreaterThan(0);
    expect(spans.map((r) => r.contentType)).toEqual(spans.map(() => 'application/x-protobuf'));
    // a protobuf ExportTraceServiceRequest: field 1 (resource_spans), length-delimited; the span's name inside
    expect(spans[0]?.bytes[0]).toBe(0x0a);
    expect(spans[0]?.bytes.includes(Buffer.from('exported-span'))).toBe(true);
    // … and over OTLP (read from the Prometheus reader's storage at shutdown: one storage for both)
    const metricPosts = received.filter((r) => r.path === '/v1/metrics');
    expect(metricPosts.length).toBeGreaterThan(0);
    expect(metricPosts.some((r) => r.bytes.toString('utf8').includes('"otlp_export_test_counter"'))).toBe(true);
  });

  it('OTEL_EXPORTER_OTLP_PROTOCOL / _TRACES_PROTOCOL choose the encoding; one that cannot be sent is refused', () => {
    expect(loadConfig({}).telemetry.tracesProtocol).toBe('http/protobuf');
    expect(loadConfig({ OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json' }).telemetry.tracesProtocol).toBe('http/json');
    expect(
      loadConfig({ OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json', OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: 'http/protobuf' }).telemetry
        .tracesProtocol,
    ).toBe('http/protobuf');
    expect(() => loadConfig({ OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' })).toThrow(ConfigError);
    expect(() => loadConfig({ OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' })).toThrow(/OTEL_EXPORTER_OTLP_PROTOCOL/);
    const agent = (env: Record<string, string>) => loadAgentConfig({ COMFYUI_DIR: '/tmp', ...env }, undefined).telemetry.tracesProtocol;
    expect(agent({})).toBe('http/protobuf');
    expect(agent({ OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: 'http/json' })).toBe('http/json');
    expect(() => agent({ OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' })).toThrow(/OTEL_EXPORTER_OTLP_PROTOCOL/);
  });
});
