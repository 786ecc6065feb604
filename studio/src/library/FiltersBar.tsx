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
        <div className="field">
          <label htmlFor="library-base-model">Base model</label>
          <select
            id="library-base-model"
            value={filters.baseModel}
            onChange={(e) => onChange(withChange(filters, { baseModel: e.target.value }))}
          >
            <option value="">All</option>
            {BASE_MODELS.map((m) => (
              <option key={m} value={m}>
                {m}
              </option>
            ))}
          </select>
        </div>
        <div className="field">
          <label htmlFor="library-sort">Sort by</label>
          <select
            id="library-sort"
            value={filters.sort}
            onChange={(e) => onChange(withChange(filters, { sort: e.target.value as LoraSort }))}
          >
            {(Object.keys(SORT_LABELS) as LoraSort[]).map((s) => (
              <option key={s} value={s}>
                {SORT_LABELS[s]}
              </option>
            ))}
          </select>
        </div>
        <div className="field">
          <label htmlFor="library-order">Order</label>
          <select
            id="library-order"
            value={filters.order}
            onChange={(e) => onChange(withChange(filters, { order: e.target.value as SortOrder }))}
          >
            <option value="ASC">Ascending</option>
            <option value="DESC">Descending</option>
          </select>
        </div>
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
