import type { LoraSort, SortOrder } from '@lora-vault/sdk/documents';

/** The library's view and query state: what the filters bar edits and the `loras` query reads. */
export interface LibraryFilters {
  view: 'grid' | 'list';
  search: string;
  tags: string[];
  baseModel: string;
  sort: LoraSort;
  order: SortOrder;
  page: number;
}

export const INITIAL_FILTERS: LibraryFilters = {
  view: 'grid',
  search: '',
  tags: [],
  baseModel: '',
  sort: 'CREATED_AT',
  order: 'DESC',
  page: 0,
};

export const SORT_LABELS: Record<LoraSort, string> = {
  NAME: 'Name',
  SIZE: 'Size',
  CREATED_AT: 'Date added',
  LAST_USED: 'Last used',
};

/** Any change but the page itself starts again on page 1. */
export function withChange(filters: LibraryFilters, change: Partial<LibraryFilters>): LibraryFilters {
  const pageOnly = Object.keys(change).every((k) => k === 'page' || k === 'view');
  return { ...filters, ...change, page: pageOnly ? (change.page ?? filters.page) : 0 };
}

export function toggleTag(filters: LibraryFilters, tag: string): LibraryFilters {
  const tags = filters.tags.includes(tag) ? filters.tags.filter((t) => t !== tag) : [...filters.tags, tag];
  return withChange(filters, { tags });
}
