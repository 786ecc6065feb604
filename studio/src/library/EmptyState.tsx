/** What a LoRA is and how to get one into the library; or, with filters set, that nothing matched. */
export function EmptyState({ filtered, onClear }: { filtered: boolean; onClear: () => void }) {
  if (filtered) {
    return (
      <div className="empty" data-testid="empty-state">
        <h3>No LoRA matches these filters</h3>
        <p>Try another name, fewer tags or another base model.</p>
        <button type="button" className="button" onClick={onClear}>
          Clear filters
        </button>
      </div>
    );
  }
  return (
    <div className="empty" data-testid="empty-state">
      <h3>Your library is empty</h3>
      <p>
        A <strong>LoRA</strong> (low-rank adaptation) is a small file that teaches an image model a style, a character or a concept without
        retraining the whole model. You train one with tools such as kohya_ss, or download one you may use, and then add it to your
        workflows here.
      </p>
      <p>
        To add one, drag its <code>.safetensors</code> file (or a <code>.pt</code> file) onto the upload area, or use <em>Choose files…</em>
        . Studio checks the file, reads its base model, rank and trigger words, and lists it here.
      </p>
    </div>
  );
}
