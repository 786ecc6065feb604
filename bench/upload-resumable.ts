/**
 * The resumable path of `npm run bench:upload` (issue 17): 1 GiB through the SDK's
 * uploadLoraResumable (blocks straight to Azurite through the session's SAS, then the server's
 * one validation read of the committed blob), against the Azure SDK's own parallel `uploadFile`
 * of the same file to the same Azurite with the same block size and concurrency; and one run cut
 * at 50 % (its signal aborted) and resumed by a fresh client, counting the bytes both runs sent.
 */
import { createLoraClient, type ResumableRunStats, type ResumableStore } from '../sdk/index.ts';
import type { BlobStore } from '../server/storage/blob-store.ts';
import type { BenchFile } from './files.ts';

export const RESUMABLE_MIN_RATIO = 0.9;
export const RESUMABLE_MAX_RSS_GROWTH = 64e6;
export const RESUMABLE_MAX_RESENT = 1.1;

/** A store in memory: the bench's runs must not leave files beside the bench file. */
export function memoryStore(): ResumableStore {
  const map = new Map<string, Awaited<ReturnType<ResumableStore['get']>>>();
  return {
    get: async (k) => map.get(k),
    set: async (k, v) => {
      map.set(k, v);
    },
    delete: async (k) => {
      map.delete(k);
    },
  };
}

export async function viaResumable(
  graphqlUrl: string,
  token: string,
  file: BenchFile,
  options: {
    store?: ResumableStore;
    signal?: AbortSignal;
    onProgress?: (sent: number, total: number) => void;
    stats?: ResumableRunStats;
  } = {},
): Promise<void> {
  const client = createLoraClient({ url: graphqlUrl, token, timeoutMs: 600_000 });
  try {
    const done = await client.uploadLoraResumable({
      file: { path: file.path },
      concurrency: 4,
      store: options.store ?? memoryStore(),
      ...(options.signal ? { signal: options.signal } : {}),
      ...(options.onProgress ? { onProgress: options.onProgress } : {}),
      ...(options.stats ? { stats: options.stats } : {}),
    });
    if (done.lora.sizeBytes !== file.size || done.lora.sha256 !== file.sha256)
      throw new Error(`resumable upload stored the wrong thing: ${JSON.stringify(done.lora)}`);
  } finally {
    await client.close();
  }
}

export async function viaSdkUploadFile(store: BlobStore, name: string, file: BenchFile, blockBytes: number): Promise<void> {
  const blob = store.clientsForTests().loras.getBlockBlobClient(name);
  await blob.uploadFile(file.path, { blockSize: blockBytes, concurrency: 4, maxSingleShotSize: 0 });
  const props = await blob.getProperties();
  if (props.contentLength !== file.size) throw new Error(`SDK blob holds ${props.contentLength} bytes, expected ${file.size}`);
}

/** One run aborted once half the file is in storage, then resumed: the bytes both sent ÷ the file's size. */
export async function cutAndResume(graphqlUrl: string, token: string, file: BenchFile): Promise<number> {
  const store = memoryStore();
  const first: ResumableRunStats = { bytesSent: 0, blocksSent: 0, blocksResumed: 0 };
  const cut = new AbortController();
  await viaResumable(graphqlUrl, token, file, {
    store,
    stats: first,
    signal: cut.signal,
    onProgress: (sent, total) => {
      if (sent >= total / 2) cut.abort();
    },
  }).then(
    () => {
      throw new Error('the cut run finished');
    },
    (error: Error) => {
      if (!cut.signal.aborted) throw error;
    },
  );
  const second: ResumableRunStats = { bytesSent: 0, blocksSent: 0, blocksResumed: 0 };
  await viaResumable(graphqlUrl, token, file, { store, stats: second });
  return (first.bytesSent + second.bytesSent) / file.size;
}
