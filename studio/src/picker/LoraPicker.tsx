import { type LoraFieldsFragment, LorasDocument } from '@lora-vault/sdk/documents';
import { useId, useState } from 'react';
import { useQuery } from 'urql';
import { SEARCH_DEBOUNCE_MS } from '../config.ts';
import { useDebounced } from '../shared/useDebounced.ts';

/**
 * The workflow editor's LoRA picker: search the user's library, pick one, and `onPick` receives
 * the loader node's inputs `{"lora_source":"user","lora_identifier":"<id>"}`. Each LoRA shows
 * its base model; one that differs from the workflow's `baseModel` gets a warning (it may still be
 * picked: detection can be wrong, and the user can override the base model in its details).
 */

export interface LoraSelection {
  lora_source: 'user';
  lora_identifier: string;
}

export function LoraPicker(props: { baseModel?: string | null; onPick: (selection: LoraSelection, lora: LoraFieldsFragment) => void }) {
  const [search, setSearch] = useState('');
  const [picked, setPicked] = useState<LoraFieldsFragment | null>(null);
  const debounced = useDebounced(search.trim(), SEARCH_DEBOUNCE_MS);
  const [result] = useQuery({ query: LorasDocument, variables: { search: debounced || null, limit: 20, sort: 'NAME', order: 'ASC' } });
  const listId = useId();
  const searchId = useId();
  const mismatch = (lora: LoraFieldsFragment) =>
    !!props.baseModel && !!lora.metadata.baseModel && lora.metadata.baseModel !== 'UNKNOWN' && lora.metadata.baseModel !== props.baseModel;
  const loras = result.data?.loras.loras ?? [];
  return (
    <div className="picker" data-testid="lora-picker">
      <label htmlFor={searchId}>Find a LoRA</label>
      <input
        id={searchId}
        type="search"
        autoComplete="off"
        value={search}
        aria-controls={listId}
        onChange={(e) => setSearch(e.target.value)}
      />
      <fieldset id={listId} className="picker__list">
        <legend className="visually-hidden">Your LoRAs</legend>
        {loras.length === 0 && !result.fetching && <p>No LoRA matches.</p>}
        {loras.map((lora) => (
          <label key={lora.id} className="picker__option">
            <input
              type="radio"
              name={`${listId}-lora`}
              value={lora.id}
              checked={picked?.id === lora.id}
              onChange={() => {
                setPicked(lora);
                props.onPick({ lora_source: 'user', lora_identifier: lora.id }, lora);
              }}
            />
            <span className="picker__name">{lora.name}</span> <span className="badge">{lora.metadata.baseModel ?? 'unknown'}</span>
            {mismatch(lora) && <span className="picker__warn"> · made for {lora.metadata.baseModel}</span>}
          </label>
        ))}
      </fieldset>
      {picked && mismatch(picked) && (
        <p role="alert" className="warning" data-testid="picker-warning">
          “{picked.name}” was made for {picked.metadata.baseModel}, but this workflow uses {props.baseModel}. It will probably load with
          errors or have no effect.
        </p>
      )}
    </div>
  );
}
