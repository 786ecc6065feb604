import { SpanKind } from '@opentelemetry/api';
import type { ReconcilePlan } from '../jobs/reconciler.ts';
import { serverInstruments } from './instruments.ts';
import { inSpan } from './tracing.ts';

/**
 * pg-boss jobs: one CONSUMER span per job (`process lora.delete-blob`, with the job's id), blob
 * deletions counted by outcome, and the reconciler's findings counted by kind.
 */

export function traceJob<T>(queue: string, jobId: string | undefined, fn: () => Promise<T>): Promise<T> {
  return inSpan(
    `process ${queue}`,
    {
      kind: SpanKind.CONSUMER,
      attributes: {
        'messaging.system': 'pg-boss',
        'messaging.destination.name': queue,
        'messaging.operation.type': 'process',
        ...(jobId ? { 'messaging.message.id': jobId } : {}),
      },
    },
    fn,
  );
}

export function countBlobDeletion(outcome: 'done' | 'failed'): void {
  serverInstruments().blobDeletions.add(1, { outcome });
}

/** Each kind of leftover or broken invariant the reconciler found (and repaired). */
export function countReconcileFindings(plan: ReconcilePlan): void {
  const found: Record<string, number> = {
    stale_upload: plan.staleUploads.length,
    orphan_blob: plan.orphanBlobs.length,
    staged_leftover: plan.stagedLeftovers.length,
    deleted_but_ready: plan.invariants.deletedButReady.length,
    ready_without_blob: plan.invariants.readyWithoutBlob.length,
    quota_drift: plan.invariants.quotaDrift.length,
  };
  const counter = serverInstruments().reconcilerFindings;
  // every kind is exported (0 included), so rules see the series before the first finding
  for (const [kind, n] of Object.entries(found)) counter.add(n, { kind });
}
