import type { MetricReader, PushMetricExporter } from '@opentelemetry/sdk-metrics';

/**
 * OTLP metrics read from the Prometheus reader's own storage: every `intervalMs` (and at shutdown)
 * the reader's cumulative figures are collected and handed to the OTLP exporter. A second metric
 * reader (PeriodicExportingMetricReader) would keep a second storage, so every measurement on the
 * request path — three histograms and the database pool's counters per list request — would be
 * hashed and aggregated twice (bench:api, docs/decisions.md "Observability").
 */
const EXPORT_SUCCESS = 0; // ExportResultCode.SUCCESS (@opentelemetry/core, not a dependency of ours)

export class OtlpMetricForwarder {
  private readonly timer: NodeJS.Timeout;
  private exporting: Promise<void> = Promise.resolve();

  constructor(
    private readonly reader: MetricReader,
    private readonly exporter: PushMetricExporter,
    intervalMs = 60_000, // PeriodicExportingMetricReader's default
  ) {
    this.timer = setInterval(() => void this.exportOnce(), intervalMs);
    this.timer.unref();
  }

  /** Collects and exports once (one at a time); a failure is reported like the SDK's own readers do. */
  exportOnce(): Promise<void> {
    this.exporting = this.exporting.then(async () => {
      const { resourceMetrics } = await this.reader.collect();
      if (resourceMetrics.scopeMetrics.length === 0) return;
      await new Promise<void>((resolve) =>
        this.exporter.export(resourceMetrics, (result) => {
          if (result.code !== EXPORT_SUCCESS) console.error('OTLP metric export failed:', result.error?.message ?? 'unknown error');
          resolve();
        }),
      );
    });
    return this.exporting.catch(() => {});
  }

  /** Exports what was measured since the last export, then stops (before the meter provider shuts down). */
  async shutdown(): Promise<void> {
    clearInterval(this.timer);
    await this.exportOnce();
    await this.exporter.shutdown();
  }
}
