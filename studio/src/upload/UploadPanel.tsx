import { type DragEvent, useId, useRef, useState } from 'react';
import { formatBytes } from '../shared/format.ts';
import { cancellable, isActive, type UploadItem, type UploadPhase } from './useUploads.ts';

/**
 * Drop zone and file picker for one or several LoRA files, and one row per upload: its phase,
 * a progress bar, Cancel while it runs, and the outcome as a sentence.
 */

const PHASE_LABEL: Record<UploadPhase, string> = {
  QUEUED: 'Waiting',
  RECEIVING: 'Sending',
  VALIDATING: 'Checking the file',
  STORING: 'Storing',
  DONE: 'Uploaded',
  FAILED: 'Not uploaded',
  CANCELLED: 'Cancelled',
};

export function UploadPanel(props: {
  items: UploadItem[];
  onFiles: (files: File[]) => void;
  onCancel: (key: string) => void;
  onDismiss: (key: string) => void;
}) {
  const input = useRef<HTMLInputElement>(null);
  const [over, setOver] = useState(false);
  const hintId = useId();
  const onDrop = (event: DragEvent) => {
    event.preventDefault();
    setOver(false);
    const files = Array.from(event.dataTransfer.files);
    if (files.length) props.onFiles(files);
  };
  return (
    <section className="upload" aria-labelledby="upload-heading">
      <h2 id="upload-heading">Upload</h2>
      <section
        className={over ? 'dropzone dropzone--over' : 'dropzone'}
        data-testid="dropzone"
        aria-label="Drop LoRA files here"
        onDragEnter={(e) => {
          e.preventDefault();
          setOver(true);
        }}
        onDragOver={(e) => e.preventDefault()}
        onDragLeave={() => setOver(false)}
        onDrop={onDrop}
      >
        <p id={hintId}>Drop .safetensors or .pt files here, or</p>
        <button type="button" className="button button--primary" aria-describedby={hintId} onClick={() => input.current?.click()}>
          Choose files…
        </button>
        <input
          ref={input}
          type="file"
          multiple
          accept=".safetensors,.pt,.pth,.ckpt"
          className="visually-hidden"
          tabIndex={-1}
          aria-hidden="true"
          onChange={(e) => {
            if (e.target.files?.length) props.onFiles(Array.from(e.target.files));
            e.target.value = '';
          }}
        />
      </section>
      {props.items.length > 0 && (
        <ul className="uploads" aria-label="Uploads">
          {props.items.map((item) => (
            <UploadRow key={item.key} item={item} onCancel={props.onCancel} onDismiss={props.onDismiss} />
          ))}
        </ul>
      )}
    </section>
  );
}

function UploadRow({ item, onCancel, onDismiss }: { item: UploadItem; onCancel: (key: string) => void; onDismiss: (key: string) => void }) {
  const active = isActive(item);
  const labelId = useId();
  const percent = item.sizeBytes ? Math.min(100, Math.round((item.bytesDone / item.sizeBytes) * 100)) : 0;
  return (
    <li className={`upload-row upload-row--${item.phase.toLowerCase()}`} data-testid="upload-row" data-phase={item.phase}>
      <div className="upload-row__head">
        <span id={labelId} className="upload-row__name">
          {item.fileName}
        </span>
        <span className="upload-row__size">{formatBytes(item.sizeBytes)}</span>
      </div>
      {active && (
        <progress
          aria-labelledby={labelId}
          max={item.sizeBytes || 1}
          value={item.phase === 'QUEUED' ? 0 : item.bytesDone}
          data-percent={percent}
        />
      )}
      <p className="upload-row__status" role="status">
        {PHASE_LABEL[item.phase]}
        {item.phase === 'RECEIVING' ? ` · ${percent} %` : ''}
      </p>
      {item.message && (
        <p className="upload-row__message" role={item.phase === 'FAILED' ? 'alert' : undefined}>
          {item.message}
        </p>
      )}
      {active && !cancellable(item.phase) ? (
        // every block is in storage and the server is checking the file: that cannot be stopped any more
        <button type="button" className="button" disabled title="The file is being checked; it can no longer be cancelled">
          Validating…
        </button>
      ) : active ? (
        <button type="button" className="button" aria-label={`Cancel upload of ${item.fileName}`} onClick={() => onCancel(item.key)}>
          Cancel
        </button>
      ) : (
        <button type="button" className="button button--quiet" aria-label={`Dismiss ${item.fileName}`} onClick={() => onDismiss(item.key)}>
          Dismiss
        </button>
      )}
    </li>
  );
}
