import type { BatchObservableResult, Observable } from '@opentelemetry/api';
import type { Logger } from 'pino';
import type { BusinessMetrics, BusinessMetricsService } from '../services/business-metrics.ts';
import { serverInstruments } from './instruments.ts';

/**
 * The business figures as gauges: measured from the database every `intervalMs` (not on each
 * scrape: a scrape must stay cheap whatever the table sizes) and observed from the last snapshot.
 * Several replicas report the same database figures; dashboards take `max` across instances.
 */
export function startBusinessGauges(service: BusinessMetricsService, intervalMs: number, logger: Logger): { stop(): void } {
  const meter = serverInstruments().meter;
  const g = (name: string, description: string, unit?: string) =>
    meter.createObservableGauge(name, { description, ...(unit ? { unit } : {}) });
  const gauges = {
    users: g('lora_vault.users.with_loras', 'Users with at least one READY LoRA'),
    loras: g('lora_vault.loras', 'READY LoRAs'),
    perUser: g('lora_vault.loras.per_user', 'READY LoRAs per user with any'),
    storage: g('lora_vault.storage.used', 'Bytes of READY LoRAs', 'By'),
    storagePerUser: g('lora_vault.storage.per_user', 'Average bytes stored per user with any LoRA', 'By'),
    growth: g('lora_vault.storage.growth', 'Bytes of LoRAs that became READY in the last 24 hours (still READY)', 'By'),
    workflows: g('lora_vault.workflows.using_user_loras', 'Workflows that used a user LoRA in the last 30 days'),
    deletesPending: g('lora_vault.blob.deletions.pending', 'Blob deletions queued or retrying'),
    deletesFailed: g('lora_vault.blob.deletions.failed', 'Blob deletions that exhausted their retries'),
    queueDepth: g('lora_vault.jobs.queue.depth', 'pg-boss jobs waiting or running, by queue'),
  };
  let last: BusinessMetrics | null = null;
  const callback = (result: BatchObservableResult) => {
    if (!last) return;
    result.observe(gauges.users, last.usersWithLoras);
    result.observe(gauges.loras, last.loraCount);
    result.observe(gauges.perUser, last.lorasPerUser);
    result.observe(gauges.storage, last.storageBytes);
    result.observe(gauges.storagePerUser, last.storageBytesPerUser);
    result.observe(gauges.growth, last.storageGrowthBytes24h);
    result.observe(gauges.workflows, last.workflowsUsingUserLoras30d);
    result.observe(gauges.deletesPending, last.blobDeletionsPending);
    result.observe(gauges.deletesFailed, last.blobDeletionsFailed);
    for (const q of last.queueDepth) result.observe(gauges.queueDepth, q.jobs, { 'messaging.destination.name': q.queue });
  };
  const observables: Observable[] = Object.values(gauges);
  meter.addBatchObservableCallback(callback, observables);
  const refresh = () =>
    service.measure().then(
      (m) => {
        last = m;
      },
      (error: unknown) => logger.warn({ err: error }, 'could not measure the business metrics'),
    );
  void refresh();
  const timer = setInterval(() => void refresh(), intervalMs);
  timer.unref();
  return {
    stop() {
      clearInterval(timer);
      meter.removeBatchObservableCallback(callback, observables);
    },
  };
}
