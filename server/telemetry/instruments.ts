import { type Counter, type Histogram, type Meter, metrics, type UpDownCounter } from '@opentelemetry/api';
import { Topic } from '../events/bus.ts';

/**
 * The server's metric instruments, made from the process's meter provider the first time they are
 * used after it was set (the OpenTelemetry metrics API has no proxy: instruments made before the
 * SDK started would stay no-ops). Names follow the OpenTelemetry conventions where one exists
 * (`http.server.*`, `db.client.connection.*` come from the instrumentations); ours are under
 * `lora_vault.`. Labels are bounded sets: outcomes, error codes, formats, operation names of the
 * SDK, topics — never a user id, LoRA id or path.
 */

export const METER_NAME = 'lora-vault';

/** Upload and storage histograms: seconds and bytes, with boundaries that fit LoRA files (≤ 2 GiB). */
const DURATION_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600];
const REQUEST_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const MiB = 1024 * 1024;
const SIZE_BUCKETS = [1, 8, 32, 64, 128, 256, 512, 1024, 2048].map((m) => m * MiB);

function make(meter: Meter) {
  const instruments = {
    meter,
    uploads: meter.createCounter('lora_vault.uploads', {
      description: 'Finished uploadLora calls by outcome (success | failure) and error.code',
    }),
    uploadDuration: meter.createHistogram('lora_vault.upload.duration', {
      unit: 's',
      description: 'Time from the first byte to READY (or the failure)',
      advice: { explicitBucketBoundaries: DURATION_BUCKETS },
    }),
    uploadSize: meter.createHistogram('lora_vault.upload.size', {
      unit: 'By',
      description: 'Size of stored LoRA files, by lora.format',
      advice: { explicitBucketBoundaries: SIZE_BUCKETS },
    }),
    uploadedBytes: meter.createCounter('lora_vault.upload.bytes', { unit: 'By', description: 'Bytes of LoRAs stored by uploads' }),
    aheadBreaks: meter.createCounter('lora_vault.upload.validation_ahead.breaks', {
      description: 'Validations of resumable uploads ahead of completion that stopped, by reason (server/uploads/ahead-breaks.ts)',
    }),
    aheadCompletions: meter.createCounter('lora_vault.upload.validation_ahead.completions', {
      description: 'Validated completeLoraUpload calls by read: ahead (went on from the validation ahead) | full (read the whole file)',
    }),
    quotaRefusals: meter.createCounter('lora_vault.quota.refusals', { description: 'Uploads refused QUOTA_EXCEEDED' }),
    quotaWarnings: meter.createCounter('lora_vault.quota.warnings', {
      description: 'Uploads that left their user at or over the quota warning threshold',
    }),
    blobDeletions: meter.createCounter('lora_vault.blob.deletions', {
      description: 'Blob deletions attempted by outcome (done | failed); a failed one is retried',
    }),
    reconcilerFindings: meter.createCounter('lora_vault.reconciler.findings', {
      description: 'Leftovers and broken invariants the reconciler found, by kind',
    }),
    operationDuration: meter.createHistogram('lora_vault.graphql.operation.duration', {
      unit: 's',
      description: 'GraphQL operations by graphql.operation.name (the SDK operations; others are "other") and type',
      advice: { explicitBucketBoundaries: REQUEST_BUCKETS },
    }),
    graphqlErrors: meter.createCounter('lora_vault.graphql.errors', { description: 'GraphQL errors in responses, by error.code' }),
    websockets: meter.createUpDownCounter('lora_vault.websocket.connections', { description: 'Open WebSocket connections' }),
    subscriptions: meter.createUpDownCounter('lora_vault.subscriptions.active', {
      description: 'Running GraphQL subscriptions, by graphql.field',
    }),
    eventsPublished: meter.createCounter('lora_vault.events.published', { description: 'Events published on the bus, by topic' }),
    eventsDelivered: meter.createCounter('lora_vault.events.delivered', {
      description: 'Subscription results delivered to clients, by graphql.field',
    }),
  };
  // Series that alerts and dashboards divide by exist from the start (0), not from the first event.
  instruments.uploads.add(0, { outcome: 'success' });
  instruments.uploads.add(0, { outcome: 'failure', 'error.code': 'INTERNAL_SERVER_ERROR' });
  instruments.quotaRefusals.add(0);
  for (const read of ['ahead', 'full']) instruments.aheadCompletions.add(0, { read });
  instruments.quotaWarnings.add(0);
  for (const outcome of ['done', 'failed']) instruments.blobDeletions.add(0, { outcome });
  instruments.graphqlErrors.add(0, { 'error.code': 'INTERNAL_SERVER_ERROR' });
  instruments.websockets.add(0);
  for (const field of ['cacheEvents', 'uploadProgress']) {
    instruments.subscriptions.add(0, { 'graphql.field': field });
    instruments.eventsDelivered.add(0, { 'graphql.field': field });
  }
  for (const topic of Object.values(Topic)) instruments.eventsPublished.add(0, { 'messaging.destination.name': topic });
  return instruments;
}

export type ServerInstruments = ReturnType<typeof make> & {
  uploads: Counter;
  uploadDuration: Histogram;
  websockets: UpDownCounter;
};

let cached: { provider: unknown; instruments: ServerInstruments } | null = null;

/** The instruments of the current meter provider (no-ops until the SDK started). */
export function serverInstruments(): ServerInstruments {
  const provider = metrics.getMeterProvider();
  if (cached?.provider !== provider) cached = { provider, instruments: make(provider.getMeter(METER_NAME)) };
  return cached.instruments;
}
