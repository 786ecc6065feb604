import type { QuotaFieldsFragment } from '@lora-vault/sdk/documents';
import { formatBytes, formatPercent } from '../shared/format.ts';

/** Storage and LoRA count against the user's quota; a warning from 80 % of either (the API's `warning`). */
export function QuotaBar({ quota }: { quota: QuotaFieldsFragment | undefined }) {
  if (!quota) return <section className="quota" aria-label="Storage" aria-busy="true" />;
  const bytes = quota.maxStorageBytes ? quota.usedStorageBytes / quota.maxStorageBytes : 0;
  const count = quota.maxLoraCount ? quota.loraCount / quota.maxLoraCount : 0;
  return (
    <section className={quota.warning ? 'quota quota--warning' : 'quota'} aria-labelledby="quota-heading" data-testid="quota">
      <h2 id="quota-heading" className="visually-hidden">
        Storage
      </h2>
      <div className="quota__row">
        <label htmlFor="quota-bytes">Storage</label>
        <meter
          id="quota-bytes"
          min={0}
          max={quota.maxStorageBytes}
          low={quota.maxStorageBytes * 0.8}
          high={quota.maxStorageBytes * 0.8}
          optimum={0}
          value={quota.usedStorageBytes}
        />
        <span>
          {formatBytes(quota.usedStorageBytes)} of {formatBytes(quota.maxStorageBytes)} ({formatPercent(bytes)})
        </span>
      </div>
      <div className="quota__row">
        <label htmlFor="quota-count">LoRAs</label>
        <meter
          id="quota-count"
          min={0}
          max={quota.maxLoraCount}
          low={quota.maxLoraCount * 0.8}
          high={quota.maxLoraCount * 0.8}
          optimum={0}
          value={quota.loraCount}
        />
        <span>
          {quota.loraCount} of {quota.maxLoraCount} ({formatPercent(count)})
        </span>
      </div>
      {quota.warning && (
        <p className="quota__warning" role="status" data-testid="quota-warning">
          Your library is almost full ({formatPercent(Math.max(bytes, count))} used). Delete LoRAs you no longer need before uploading more.
        </p>
      )}
    </section>
  );
}
