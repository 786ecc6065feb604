import { DeleteLoraDocument, type LoraFieldsFragment, type QuotaFieldsFragment } from '@lora-vault/sdk/documents';
import { useRef, useState } from 'react';
import { useMutation } from 'urql';
import { formatBytes } from '../shared/format.ts';

/** Delete with a confirmation (a modal <dialog>: focus moves into it, Escape cancels). */
export function DeleteButton({ lora, onDeleted }: { lora: LoraFieldsFragment; onDeleted: (quota: QuotaFieldsFragment | null) => void }) {
  const dialog = useRef<HTMLDialogElement>(null);
  const [error, setError] = useState<string | null>(null);
  const [state, remove] = useMutation(DeleteLoraDocument);
  const confirm = async () => {
    const result = await remove({ id: lora.id });
    const outcome = result.data?.deleteLora;
    if (outcome?.__typename === 'DeleteLoraSuccess') {
      dialog.current?.close();
      onDeleted(outcome.quota);
    } else if (outcome?.__typename === 'NotFoundError') {
      dialog.current?.close();
      onDeleted(null); // already gone (deleted elsewhere)
    } else {
      setError(`Not deleted: ${result.error?.graphQLErrors[0]?.message ?? result.error?.message ?? 'unknown error'}`);
    }
  };
  return (
    <>
      <button type="button" className="button button--danger" onClick={() => dialog.current?.showModal()}>
        Delete…
      </button>
      <dialog ref={dialog} className="dialog" aria-labelledby="delete-title" aria-describedby="delete-text" onClose={() => setError(null)}>
        <h3 id="delete-title">Delete “{lora.name}”?</h3>
        <p id="delete-text">
          This removes the file for good and frees {formatBytes(lora.sizeBytes)}. Workflows that use it will no longer find it.
        </p>
        {error && <p role="alert">{error}</p>}
        <div className="dialog__actions">
          <button type="button" className="button" onClick={() => dialog.current?.close()}>
            Keep it
          </button>
          <button type="button" className="button button--danger" disabled={state.fetching} onClick={() => void confirm()}>
            Delete LoRA
          </button>
        </div>
      </dialog>
    </>
  );
}
