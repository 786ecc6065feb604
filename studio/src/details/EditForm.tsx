import { type LoraFieldsFragment, UpdateLoraDocument } from '@lora-vault/sdk/documents';
import { type FormEvent, useEffect, useState } from 'react';
import { useMutation } from 'urql';

/** Rename and retag one LoRA (tags replace the old ones; comma-separated). */
export function EditForm({ lora, onSaved }: { lora: LoraFieldsFragment; onSaved: () => void }) {
  const [name, setName] = useState(lora.name);
  const [tags, setTags] = useState(lora.tags.join(', '));
  const [message, setMessage] = useState<{ text: string; error: boolean } | null>(null);
  const [state, update] = useMutation(UpdateLoraDocument);
  useEffect(() => {
    setName(lora.name);
    setTags(lora.tags.join(', '));
    setMessage(null);
  }, [lora.name, lora.tags]);

  const submit = async (event: FormEvent) => {
    event.preventDefault();
    const tagList = [
      ...new Set(
        tags
          .split(',')
          .map((t) => t.trim())
          .filter(Boolean),
      ),
    ];
    const result = await update({ id: lora.id, name: name.trim(), tags: tagList });
    const outcome = result.data?.updateLora;
    if (result.error) setMessage({ text: `Not saved: ${result.error.graphQLErrors[0]?.message ?? result.error.message}`, error: true });
    else if (outcome?.__typename === 'ValidationError')
      setMessage({ text: `Not saved: ${outcome.issues.map((i) => `${i.path} ${i.message}`).join('; ')}.`, error: true });
    else if (outcome?.__typename === 'NotFoundError') setMessage({ text: 'This LoRA no longer exists.', error: true });
    else {
      setMessage({ text: 'Saved.', error: false });
      onSaved();
    }
  };

  return (
    <form className="edit-form" onSubmit={submit} aria-label="Edit name and tags">
      <div className="field">
        <label htmlFor="edit-name">Name</label>
        <input id="edit-name" value={name} maxLength={255} required onChange={(e) => setName(e.target.value)} />
      </div>
      <div className="field">
        <label htmlFor="edit-tags">Tags</label>
        <input id="edit-tags" value={tags} aria-describedby="edit-tags-hint" onChange={(e) => setTags(e.target.value)} />
        <small id="edit-tags-hint">Separate tags with commas (up to 20, each up to 50 characters).</small>
      </div>
      <button type="submit" className="button button--primary" disabled={state.fetching}>
        Save changes
      </button>
      {message && (
        <p role={message.error ? 'alert' : 'status'} className={message.error ? 'error' : 'ok'}>
          {message.text}
        </p>
      )}
    </form>
  );
}
