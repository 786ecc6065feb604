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
      <QuotaMeter id="quota-bytes" label="Storage" used={quota.usedStorageBytes} max={quota.maxStorageBytes}>
        {formatBytes(quota.usedStorageBytes)} of {formatBytes(quota.maxStorageBytes)} ({formatPercent(bytes)})
      </QuotaMeter>
      <QuotaMeter id="quota-count" label="LoRAs" used={quota.loraCount} max={quota.maxLoraCount}>
        {quota.loraCount} of {quota.maxLoraCount} ({formatPercent(count)})
      </QuotaMeter>
      {quota.warning && (
        <p className="quota__warning" role="status" data-testid="quota-warning">
          Your library is almost full ({formatPercent(Math.max(bytes, count))} used). Delete LoRAs you no longer need before uploading more.
        </p>
      )}
    </section>
  );
}

/** One labelled meter that turns to its warning colour from 80 %. */
function QuotaMeter(props: { id: string; label: string; used: number; max: number; children: React.ReactNode }) {
  return (
    <div className="quota__row">
      <label htmlFor={props.id}>{props.label}</label>
      <meter id={props.id} min={0} max={props.max} low={props.max * 0.8} high={props.max * 0.8} optimum={0} value={props.used} />
      <span>{props.children}</span>
    </div>
  );
}
