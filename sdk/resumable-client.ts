/**
 * `uploadLoraResumable` over the API's session operations (the client passes its `request`).
 * Node: `file` is `{ path }`, state beside it; browsers: a `File`, state in IndexedDB; either may
 * be given another `store`.
 */
import type { TypedDocumentNode } from '@graphql-typed-document-node/core';
import { LoraSdkError } from './errors.ts';
import {
  AbortLoraUploadDocument,
  BeginLoraUploadDocument,
  CompleteLoraUploadDocument,
  type CompleteLoraUploadMutation,
  LoraDocument,
  LoraQuotaDocument,
  LoraUploadSessionDocument,
  RenewLoraUploadDocument,
  type UploadSessionFieldsFragment,
} from './gql/graphql.ts';
import {
  type BlockPut,
  type ResumableApi,
  type ResumableOptions,
  type ResumableRunStats,
  type ResumableStore,
  runResumableUpload,
} from './resumable-upload.ts';

type RequestFn = <TData, TVariables>(
  document: TypedDocumentNode<TData, TVariables>,
  variables: TVariables,
  call?: { signal?: AbortSignal },
) => Promise<TData>;

export interface UploadLoraResumableInput extends Omit<ResumableOptions, 'fetch' | 'putBlock'> {
  /** Node: `{ path }` (and optionally `fileName`); browsers: a `File`/`Blob`. */
  file: { path: string; fileName?: string } | Blob;
  /** Where the session id is kept between runs. @default Node: a file beside `path`; browsers: IndexedDB */
  store?: ResumableStore;
  /** Filled in as the run goes (bytes and blocks this run sent, blocks resumed). */
  stats?: ResumableRunStats;
}

function session(value: { __typename: string } & Partial<UploadSessionFieldsFragment>): UploadSessionFieldsFragment {
  if (value.__typename === 'LoraUploadSession') return value as UploadSessionFieldsFragment;
  const error = value as unknown as { __typename: string; code: string; message: string };
  throw LoraSdkError.domain(error);
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
    if (!fetchImpl) transport = node.httpBlockPut(); // a fetch given to the client is used as given
  }
  const call = options.signal ? { signal: options.signal } : {};
  const api: ResumableApi = {
    begin: async (v) => session((await request(BeginLoraUploadDocument, v, call)).beginLoraUpload),
    renew: async (id) => session((await request(RenewLoraUploadDocument, { id }, call)).renewLoraUpload),
    session: async (id) => {
      const found = (await request(LoraUploadSessionDocument, { id }, call)).loraUploadSession;
      return found.__typename === 'LoraUploadSession' ? found : undefined;
    },
    complete: async (id, blockIds) => (await request(CompleteLoraUploadDocument, { id, blockIds }, call)).completeLoraUpload,
    finished: async (loraId) => {
      const lora = (await request(LoraDocument, { id: loraId }, call)).lora;
      if (lora.__typename !== 'Lora') throw LoraSdkError.domain(lora);
      const quota = (await request(LoraQuotaDocument, {}, call)).loraQuota;
      return { __typename: 'UploadLoraSuccess', lora, quota } as CompleteLoraUploadMutation['completeLoraUpload'];
    },
  };
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

/** Ends a session (its blocks discarded, its reservation released); for a run you will not resume. */
export async function abortResumable(request: RequestFn, id: string): Promise<void> {
  session((await request(AbortLoraUploadDocument, { id })).abortLoraUpload);
}
