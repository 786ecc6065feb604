import { LoraEventsDocument, type LoraEventsSubscription, LoraQuotaDocument, LorasDocument } from '@lora-vault/sdk/documents';
import { useCallback, useEffect, useMemo, useRef, useState } from 'react';
import { useQuery, useSubscription } from 'urql';
import { isUnauthenticated } from '../client.ts';
import { PAGE_SIZE, SEARCH_DEBOUNCE_MS } from '../config.ts';
import { LoraDetails } from '../details/LoraDetails.tsx';
import { QuotaBar } from '../quota/QuotaBar.tsx';
import { useDebounced } from '../shared/useDebounced.ts';
import { UploadPanel } from '../upload/UploadPanel.tsx';
import { useUploads } from '../upload/useUploads.ts';
import { EmptyState } from './EmptyState.tsx';
import { FiltersBar } from './FiltersBar.tsx';
import { INITIAL_FILTERS, type LibraryFilters } from './filters.ts';
import { LoraList } from './LoraList.tsx';
import { Pagination } from './Pagination.tsx';

/**
 * The library page: quota, uploads, filters, the page of LoRAs and the open LoRA's details.
 * A LoRA deleted elsewhere (another tab, an admin) leaves the list at once (`loraEvents`), and
 * the list and quota are fetched again after every upload, edit and delete.
 */
export function LibraryPage({ token, onUnauthenticated }: { token: string; onUnauthenticated: () => void }) {
  const [filters, setFilters] = useState<LibraryFilters>(INITIAL_FILTERS);
  const [selectedId, setSelectedId] = useState<string | null>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const [removed, setRemoved] = useState<ReadonlySet<string>>(new Set());
  const [detailsVersion, setDetailsVersion] = useState(0);
  const search = useDebounced(filters.search.trim(), SEARCH_DEBOUNCE_MS);

  const variables = useMemo(
    () => ({
      search: search || null,
      tags: filters.tags.length ? filters.tags : null,
      baseModel: filters.baseModel || null,
      sort: filters.sort,
      order: filters.order,
      limit: PAGE_SIZE,
      offset: filters.page * PAGE_SIZE,
    }),
    [search, filters.tags, filters.baseModel, filters.sort, filters.order, filters.page],
  );
  const [list, refetchList] = useQuery({ query: LorasDocument, variables, requestPolicy: 'cache-and-network' });
  const [quotaResult, refetchQuota] = useQuery({ query: LoraQuotaDocument, variables: {}, requestPolicy: 'cache-and-network' });
  const quota = quotaResult.data?.loraQuota;
  const refused = isUnauthenticated(list.error) || isUnauthenticated(quotaResult.error);
  useEffect(() => {
    if (refused) onUnauthenticated(); // the token expired or was refused: back to sign-in
  }, [refused, onUnauthenticated]);

  const refresh = useCallback(() => {
    refetchList({ requestPolicy: 'network-only' });
    refetchQuota({ requestPolicy: 'network-only' });
  }, [refetchList, refetchQuota]);

  const uploads = useUploads({ token, quota, onUploaded: refresh });

  const selectedRef = useRef(selectedId);
  selectedRef.current = selectedId;
  useSubscription({ query: LoraEventsDocument }, (_previous: unknown, event: LoraEventsSubscription) => {
    const { type, loraId } = event.loraEvents;
    if (!loraId) return event;
    if (type === 'LORA_DELETED') {
      setRemoved((ids) => new Set(ids).add(loraId));
      if (selectedRef.current === loraId) {
        setSelectedId(null);
        setNotice('The LoRA you had open was deleted elsewhere.');
      }
    } else if (selectedRef.current === loraId) {
      setDetailsVersion((v) => v + 1);
    }
    refresh();
    return event;
  });

  // seen tags stay offered as chips while the filters narrow the list
  const seenTags = useRef(new Set<string>());
  const loras = (list.data?.loras.loras ?? []).filter((l) => !removed.has(l.id));
  for (const l of loras) for (const t of l.tags) seenTags.current.add(t);
  const total = Math.max(0, (list.data?.loras.total ?? 0) - ((list.data?.loras.loras.length ?? 0) - loras.length));
  const filtered = !!(search || filters.tags.length || filters.baseModel);

  useEffect(() => {
    if (!notice) return;
    const timer = setTimeout(() => setNotice(null), 8000);
    return () => clearTimeout(timer);
  }, [notice]);

  return (
    <div className={selectedId ? 'library library--with-details' : 'library'}>
      <div className="library__main" aria-busy={list.fetching}>
        <QuotaBar quota={quota} />
        <UploadPanel items={uploads.items} onFiles={uploads.add} onCancel={uploads.cancel} onDismiss={uploads.dismiss} />
        <section aria-labelledby="library-heading" className="library__list">
          <h2 id="library-heading" tabIndex={-1}>
            Your LoRAs
          </h2>
          <FiltersBar filters={filters} knownTags={[...seenTags.current]} onChange={setFilters} />
          <p role="status" className="notice" data-testid="notice">
            {notice}
          </p>
          {list.error && <p role="alert">Could not load your LoRAs: {list.error.message}</p>}
          {list.data && loras.length === 0 && !list.fetching ? (
            <EmptyState filtered={filtered} onClear={() => setFilters({ ...INITIAL_FILTERS, view: filters.view })} />
          ) : (
            <LoraList loras={loras} view={filters.view} selectedId={selectedId} onOpen={setSelectedId} />
          )}
          {total > 0 && (
            <Pagination
              page={Math.floor((list.data?.loras.offset ?? 0) / PAGE_SIZE)}
              pageSize={PAGE_SIZE}
              total={total}
              onPage={(page) => setFilters({ ...filters, page })}
            />
          )}
        </section>
      </div>
      {selectedId && (
        <LoraDetails
          id={selectedId}
          refreshKey={detailsVersion}
          onClose={() => {
            setSelectedId(null);
            focusLibrary();
          }}
          onChanged={refresh}
          onDeleted={() => {
            setRemoved((ids) => new Set(ids).add(selectedId));
            setSelectedId(null);
            setNotice('The LoRA was deleted.');
            refresh();
            focusLibrary();
          }}
        />
      )}
    </div>
  );
}

/** Where keyboard focus goes when the details close (their controls are gone). */
function focusLibrary(): void {
  setTimeout(() => document.getElementById('library-heading')?.focus(), 0);
}
