/** Previous / next over pages of `pageSize`, with where we are. */
export function Pagination(props: { page: number; pageSize: number; total: number; onPage: (page: number) => void }) {
  const pages = Math.max(1, Math.ceil(props.total / props.pageSize));
  const first = props.total === 0 ? 0 : props.page * props.pageSize + 1;
  const last = Math.min(props.total, (props.page + 1) * props.pageSize);
  return (
    <nav className="pagination" aria-label="Pages">
      <button type="button" className="button" disabled={props.page === 0} onClick={() => props.onPage(props.page - 1)}>
        Previous page
      </button>
      <p aria-live="polite" data-testid="page-status">
        Page {props.page + 1} of {pages} · {first}–{last} of {props.total} LoRAs
      </p>
      <button type="button" className="button" disabled={props.page >= pages - 1} onClick={() => props.onPage(props.page + 1)}>
        Next page
      </button>
    </nav>
  );
}
