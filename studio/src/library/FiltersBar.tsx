import type { LoraSort, SortOrder } from '@lora-vault/sdk/documents';
import { BASE_MODELS } from '../config.ts';
import { type LibraryFilters, SORT_LABELS, toggleTag, withChange } from './filters.ts';

/** Search (debounced by the caller), base model, sort and order, grid/list, and tag chips. */
export function FiltersBar(props: { filters: LibraryFilters; knownTags: string[]; onChange: (filters: LibraryFilters) => void }) {
  const { filters, onChange } = props;
  const chips = [...new Set([...filters.tags, ...props.knownTags])].sort((a, b) => a.localeCompare(b));
  return (
    <div className="filters">
      <div className="filters__row">
        <div className="field field--grow">
          <label htmlFor="library-search">Search by name</label>
          <input
            id="library-search"
            type="search"
            autoComplete="off"
            placeholder="e.g. ink wash"
            value={filters.search}
            onChange={(e) => onChange(withChange(filters, { search: e.target.value }))}
          />
        </div>
        <SelectField
          id="library-base-model"
          label="Base model"
          value={filters.baseModel}
          options={[['', 'All'], ...BASE_MODELS.map((m): [string, string] => [m, m])]}
          onChange={(baseModel) => onChange(withChange(filters, { baseModel }))}
        />
        <SelectField
          id="library-sort"
          label="Sort by"
          value={filters.sort}
          options={Object.entries(SORT_LABELS)}
          onChange={(sort) => onChange(withChange(filters, { sort: sort as LoraSort }))}
        />
        <SelectField
          id="library-order"
          label="Order"
          value={filters.order}
          options={[
            ['ASC', 'Ascending'],
            ['DESC', 'Descending'],
          ]}
          onChange={(order) => onChange(withChange(filters, { order: order as SortOrder }))}
        />
        <fieldset className="field segmented">
          <legend>View</legend>
          {(['grid', 'list'] as const).map((view) => (
            <button
              key={view}
              type="button"
              className="button"
              aria-pressed={filters.view === view}
              onClick={() => onChange(withChange(filters, { view }))}
            >
              {view === 'grid' ? 'Grid' : 'List'}
            </button>
          ))}
        </fieldset>
      </div>
      {chips.length > 0 && (
        <fieldset className="chips" aria-label="Filter by tag">
          <legend className="visually-hidden">Filter by tag</legend>
          {chips.map((tag) => (
            <button
              key={tag}
              type="button"
              className="chip"
              aria-pressed={filters.tags.includes(tag)}
              onClick={() => onChange(toggleTag(filters, tag))}
            >
              {tag}
            </button>
          ))}
        </fieldset>
      )}
    </div>
  );
}

/** A labelled select over [value, label] pairs. */
function SelectField(props: { id: string; label: string; value: string; options: [string, string][]; onChange: (value: string) => void }) {
  return (
    <div className="field">
      <label htmlFor={props.id}>{props.label}</label>
      <select id={props.id} value={props.value} onChange={(e) => props.onChange(e.target.value)}>
        {props.options.map(([value, label]) => (
          <option key={value} value={value}>
            {label}
          </option>
        ))}
      </select>
    </div>
  );
}
