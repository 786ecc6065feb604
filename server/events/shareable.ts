/**
 * A subscription stream that may be shared: subscribers whose streams carry the same `key` (and
 * who sent the same document and variables) see the same values from one `source()`, so the
 * subscription layer (server/http/shared-fanout.ts) executes and serialises each value once for
 * all of them. Authorisation stays per subscriber: `wants` is that subscriber's own filter, asked
 * for every value before anything is sent to it.
 *
 * The service decides all three: the key names the *visibility* (what `source()` shows, e.g.
 * "machine": no owner ids), so two subscribers share only when they may be shown the same bytes.
 */
export interface Sharing<T> {
  /** Subscribers with the same key are shown the same values from `source()`. */
  readonly key: string;
  /** One stream of the values as subscribers of this key are shown them (before each one's `wants`). */
  source(): AsyncIterable<T>;
  /** Whether this subscriber may receive the value (its own authorisation and filter). */
  wants(value: T): boolean;
}

const SHARING = Symbol('lora-vault.sharing');

export type ShareableStream<T> = AsyncIterable<T> & { readonly [SHARING]: Sharing<T> };

/** `own` (the subscriber's private stream, used when sharing is off) marked as shareable. */
export function shareable<T>(own: AsyncIterable<T>, sharing: Sharing<T>): ShareableStream<T> {
  return Object.assign(own, { [SHARING]: sharing });
}

/** The sharing a stream was marked with, if any. */
export function sharingOf(stream: unknown): Sharing<unknown> | undefined {
  return typeof stream === 'object' && stream !== null ? (stream as Partial<ShareableStream<unknown>>)[SHARING] : undefined;
}
