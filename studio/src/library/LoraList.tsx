import type { LoraFieldsFragment } from '@lora-vault/sdk/documents';
import { formatBytes, formatDate } from '../shared/format.ts';

/** The page of LoRAs as cards (grid) or rows (list); each opens its details. */
export function LoraList(props: {
  loras: LoraFieldsFragment[];
  view: 'grid' | 'list';
  selectedId: string | null;
  onOpen: (id: string) => void;
}) {
  if (props.view === 'list') {
    return (
      <table className="lora-table" data-testid="library-items">
        <caption className="visually-hidden">Your LoRAs</caption>
        <thead>
          <tr>
            <th scope="col">Name</th>
            <th scope="col">Base model</th>
            <th scope="col">Size</th>
            <th scope="col" className="hide-narrow">
              Added
            </th>
            <th scope="col" className="hide-narrow">
              Last used
            </th>
          </tr>
        </thead>
        <tbody>
          {props.loras.map((lora) => (
            <tr key={lora.id} data-testid="lora-item" data-id={lora.id} aria-current={props.selectedId === lora.id || undefined}>
              <th scope="row">
                <button type="button" className="link" onClick={() => props.onOpen(lora.id)}>
                  {lora.name}
                </button>
              </th>
              <td>{lora.metadata.baseModel ?? 'unknown'}</td>
              <td>{formatBytes(lora.sizeBytes)}</td>
              <td className="hide-narrow">{formatDate(lora.createdAt)}</td>
              <td className="hide-narrow">{formatDate(lora.lastUsedAt)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    );
  }
  return (
    <ul className="lora-grid" data-testid="library-items" aria-label="Your LoRAs">
      {props.loras.map((lora) => (
        <li key={lora.id} data-testid="lora-item" data-id={lora.id}>
          <button
            type="button"
            className="card"
            aria-current={props.selectedId === lora.id || undefined}
            onClick={() => props.onOpen(lora.id)}
          >
            <span className="card__name">{lora.name}</span>
            <span className="card__meta">
              <span className="badge">{lora.metadata.baseModel ?? 'unknown'}</span> {formatBytes(lora.sizeBytes)}
              {lora.metadata.rank ? ` · rank ${lora.metadata.rank}` : ''}
            </span>
            {lora.tags.length > 0 && <span className="card__tags">{lora.tags.join(', ')}</span>}
          </button>
        </li>
      ))}
    </ul>
  );
}
