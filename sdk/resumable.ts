/**
 * `@lora-vault/sdk/resumable`: resumable uploads for browser apps that bring their own GraphQL
 * transport (Studio's urql client). Only browser-safe modules: the run, the API adapter, blocks
 * sliced from a `File`, the session id in IndexedDB. (`uploadLoraResumable` on the SDK client
 * does the same with the client's transport, on Node too.)
 */
export { blobBlockSource, indexedDbStore } from './browser-resumable.ts';
export { abortResumable, type RequestFn, resumableApi } from './resumable-api.ts';
export {
  type BlockSource,
  type ResumableApi,
  type ResumableOptions,
  type ResumableRunStats,
  type ResumableState,
  type ResumableStore,
  resumeKey,
  runResumableUpload,
} from './resumable-upload.ts';
