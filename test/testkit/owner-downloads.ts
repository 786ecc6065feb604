/**
 * What an owner's download through the API may answer with (server/http/owner-download-route.ts):
 * the allow-list of response headers, Node's own (date, connection, keep-alive) included. Anything
 * else — storage's `x-ms-*`, `server`, … — would be a leak (THREATS row 72).
 */
export const OWNER_DOWNLOAD_HEADERS = new Set([
  'content-type',
  'content-length',
  'content-disposition',
  'etag',
  'last-modified',
  'accept-ranges',
  'content-range',
  'cache-control',
  'x-content-type-options',
  'date',
  'connection',
  'keep-alive',
]);
