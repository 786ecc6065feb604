import { LoraDocument, type LoraFieldsFragment, type QuotaFieldsFragment } from '@lora-vault/sdk/documents';
import { useEffect, useRef, useState } from 'react';
import { useQuery } from 'urql';
import { formatBytes, formatDate } from '../shared/format.ts';
import { DeleteButton } from './DeleteButton.tsx';
import { DownloadButton } from './DownloadButton.tsx';
import { EditForm } from './EditForm.tsx';

/**
 * One LoRA: its facts (file, hashes incl. AutoV2, base model, rank, trigger words, training
 * metadata, usage, workflows using it), rename and tags, download (the owner's link), delete.
 */
export function LoraDetails(props: {
  id: string;
  refreshKey: number;
  onClose: () => void;
  onChanged: () => void;
  onDeleted: (quota: QuotaFieldsFragment | null) => void;
}) {
  const [result, refetch] = useQuery({ query: LoraDocument, variables: { id: props.id }, requestPolicy: 'cache-and-network' });
  const heading = useRef<HTMLHeadingElement>(null);
  // biome-ignore lint/correctness/useExhaustiveDependencies: refetch when the library says this LoRA changed
  useEffect(() => {
    if (props.refreshKey) refetch({ requestPolicy: 'network-only' });
  }, [props.refreshKey]);
  // biome-ignore lint/correctness/useExhaustiveDependencies: focus the heading when another LoRA is opened
  useEffect(() => heading.current?.focus(), [props.id]);

  const lora = result.data?.lora;
  return (
    <aside className="details" aria-labelledby="details-heading" data-testid="details">
      <div className="details__head">
        <h2 id="details-heading" ref={heading} tabIndex={-1}>
          {lora?.__typename === 'Lora' ? lora.name : 'LoRA'}
        </h2>
        <button type="button" className="button button--quiet" onClick={props.onClose}>
          Close details
        </button>
      </div>
      {result.error && <p role="alert">Could not load this LoRA: {result.error.message}</p>}
      {lora?.__typename === 'NotFoundError' && <p role="status">This LoRA no longer exists.</p>}
      {lora?.__typename === 'Lora' && (
        <>
          <Facts lora={lora} />
          <EditForm lora={lora} onSaved={props.onChanged} />
          <DownloadButton lora={lora} />
          <DeleteButton lora={lora} onDeleted={props.onDeleted} />
        </>
      )}
    </aside>
  );
}

function Facts({ lora }: { lora: LoraFieldsFragment }) {
  const m = lora.metadata;
  return (
    <>
      <dl className="facts">
        <Fact label="File">
          {lora.fileName} ({lora.format === 'SAFETENSORS' ? 'safetensors' : 'PyTorch'}, {formatBytes(lora.sizeBytes)})
        </Fact>
        <Fact label="Base model">
          {m.baseModel ?? 'unknown'}
          {m.baseModelSource
            ? ` (from ${m.baseModelSource === 'TENSOR_SHAPES' ? 'the tensor shapes' : m.baseModelSource.toLowerCase()})`
            : ''}
        </Fact>
        {m.rank != null && <Fact label="Rank">{`${m.rank}${m.alpha != null ? ` (alpha ${m.alpha})` : ''}`}</Fact>}
        {m.networkModule && <Fact label="Network">{m.networkModule}</Fact>}
        <Fact label="AutoV2">
          <code data-testid="autov2">{lora.autoV2}</code>
        </Fact>
        <Fact label="SHA-256">
          <code className="hash">{lora.sha256}</code>
        </Fact>
        {lora.autoV3 && (
          <Fact label="AutoV3">
            <code className="hash">{lora.autoV3}</code>
          </Fact>
        )}
        <Fact label="Tags">{lora.tags.length ? lora.tags.join(', ') : 'none'}</Fact>
        {m.title && <Fact label="Title">{m.title}</Fact>}
        {m.description && <Fact label="Description">{m.description}</Fact>}
        {m.trainingEpochs != null && <Fact label="Training epochs">{m.trainingEpochs}</Fact>}
        {m.trainingImages != null && <Fact label="Training images">{m.trainingImages}</Fact>}
        {m.tensorCount != null && <Fact label="Tensors">{m.tensorCount}</Fact>}
        <Fact label="Used">{`${lora.usageCount} ${lora.usageCount === 1 ? 'time' : 'times'}, last ${formatDate(lora.lastUsedAt)}`}</Fact>
        <Fact label="Added">{formatDate(lora.createdAt)}</Fact>
      </dl>
      <TriggerWords words={m.triggerWords} />
      <section aria-labelledby="workflows-heading">
        <h3 id="workflows-heading">Workflows using it</h3>
        {lora.workflowsUsing.length === 0 ? (
          <p>No workflow has used it yet.</p>
        ) : (
          <ul>
            {lora.workflowsUsing.map((w) => (
              <li key={w.id}>
                {w.name ?? w.id}: {w.useCount} {w.useCount === 1 ? 'run' : 'runs'}, last {formatDate(w.lastUsedAt)}
              </li>
            ))}
          </ul>
        )}
      </section>
      {m.raw != null && (
        <details className="raw">
          <summary>All metadata in the file</summary>
          <pre>{JSON.stringify(m.raw, null, 2)}</pre>
        </details>
      )}
    </>
  );
}

function Fact({ label, children }: { label: string; children: React.ReactNode }) {
  return (
    <div className="fact">
      <dt>{label}</dt>
      <dd>{children}</dd>
    </div>
  );
}

function TriggerWords({ words }: { words: string[] }) {
  const [copied, setCopied] = useState<string | null>(null);
  if (words.length === 0) return <p>No trigger words are recorded in this file.</p>;
  const copy = async () => {
    const text = words.join(', ');
    try {
      await navigator.clipboard.writeText(text);
      setCopied('Trigger words copied.');
    } catch {
      setCopied(`Copy them by hand: ${text}`);
    }
  };
  return (
    <section aria-labelledby="trigger-heading" className="trigger">
      <h3 id="trigger-heading">Trigger words</h3>
      <p data-testid="trigger-words">
        {words.map((w) => (
          <code key={w} className="chip chip--static">
            {w}
          </code>
        ))}
      </p>
      <button type="button" className="button" onClick={() => void copy()}>
        Copy trigger words
      </button>
      <span role="status">{copied}</span>
    </section>
  );
}
