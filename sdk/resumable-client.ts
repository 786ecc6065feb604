/**
 * `uploadLoraResumable` over the API's session operations (the client passes its `request`).
 * Node: `file` is `{ path }`, state beside it; browsers: a `File`, state in IndexedDB; either may
 * be given another `store`.
 */
import type { CompleteLoraUploadMutation } from './gql/graphql.ts';
import { type RequestFn, resumableApi } from './resumable-api.ts';
import {
  type BlockPut,
  type ResumableOptions,
  type ResumableRunStats,
  type ResumableStore,
  runResumableUpload,
} from './resumable-upload.ts';

export { abortResumable } from './resumable-api.ts';

export interface UploadLoraResumableInput extends Omit<ResumableOptions, 'fetch' | 'putBlock'> {
  /** Node: `{ path }` (and optionally `fileName`); browsers: a `File`/`Blob`. */
  file: { path: string; fileName?: string } | Blob;
  /** Where the session id is kept between runs. @default Node: a file beside `path`; browsers: IndexedDB */
  store?: ResumableStore;
  /** Filled in as the run goes (bytes and blocks this run sent, blocks resumed). */
  stats?: ResumableRunStats;
}

export async function uploadResumable(
  request: RequestFn,
  input: UploadLoraResumableInput,
  fetchImpl?: (input: string, init: RequestInit) => Promise<Response>,
): Promise<CompleteLoraUploadMutation['completeLoraUpload']> {
  const { file, store: givenStore, stats, ...options } = input;
  const isBlob = typeof Blob !== 'undefined' && file instanceof Blob;
  let source: Awaited<ReturnType<typeof import('./node-resumable.ts')['fileBlockSource']>>;
  let store: ResumableStore;
  let transport: { put: BlockPut; close(): void } | undefined;
  if (isBlob) {
    const browser = await import('./browser-resumable.ts');
    source = browser.blobBlockSource(file);
    store = givenStore ?? browser.indexedDbStore();
  } else {
    const node = await import('./node-resumable.ts');
    const { path, fileName } = file as { path: string; fileName?: string };
    source = await node.fileBlockSource(path, fileName);
    store = givenStore ?? node.jsonFileStore(node.stateFileBeside(path));
    // a fetch given to the client is used as given
    if (!fetchImpl) transport = node.httpBlockPut(options.blockTimeoutMs === undefined ? {} : { idleTimeoutMs: options.blockTimeoutMs });
  }
  const api = resumableApi(request, options.signal ? { signal: options.signal } : {});
  try {
    return await runResumableUpload(
      api,
      source,
      store,
      { ...options, ...(fetchImpl ? { fetch: fetchImpl } : {}), ...(transport ? { putBlock: transport.put } : {}) },
      stats,
    );
  } finally {
    transport?.close();
    await source.close?.();
  }
}
