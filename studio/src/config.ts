/**
 * Where the API is: the same origin's `/graphql` (Studio served by the API at /studio/), or
 * `VITE_LORA_VAULT_URL` given at build time when the static files are hosted elsewhere.
 */
export const GRAPHQL_URL = new URL(import.meta.env.VITE_LORA_VAULT_URL ?? '/graphql', window.location.href).toString();
export const WS_URL = GRAPHQL_URL.replace(/^http/, 'ws');
/** The API server's development token picker (answers 404 unless it runs on its generated dev secret). */
export const DEV_TOKENS_URL = new URL('dev-tokens', new URL(import.meta.env.BASE_URL, GRAPHQL_URL)).toString();
/** LoRAs per page of the library. */
export const PAGE_SIZE = 24;
/** How long the search waits after the last keystroke. */
export const SEARCH_DEBOUNCE_MS = 300;
/** Uploads sent at once (the API allows 4 per user). */
export const UPLOAD_CONCURRENCY = 2;
/** Base models the API detects (LoraMetadata.baseModel). */
export const BASE_MODELS = ['SD1', 'SD2', 'SDXL', 'SD3', 'FLUX1', 'UNKNOWN'] as const;
