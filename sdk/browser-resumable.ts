/**
 * Browser parts of resumable uploads (imported lazily by the client): blocks sliced from a
 * `File`/`Blob`, and the session id kept in IndexedDB (database `lora-vault-uploads`), so a
 * reloaded page resumes. Typed and small on purpose; Studio exercises it in a browser.
 */
import type { BlockSource, ResumableState, ResumableStore } from './resumable-upload.ts';

export function blobBlockSource(blob: Blob): BlockSource {
  const file = blob as Blob & { name?: string; lastModified?: number };
  const name = typeof file.name === 'string' && file.name ? file.name : 'lora.safetensors';
  return {
    name,
    size: blob.size,
    key: `${blob.size}:${file.lastModified ?? 0}:${name}`,
    read: async (start, end) => new Uint8Array(await blob.slice(start, end).arrayBuffer()),
  };
}

interface IdbRequest<T> {
  result: T;
  error: unknown;
  onsuccess: (() => void) | null;
  onerror: (() => void) | null;
}
interface IdbOpen extends IdbRequest<IdbDatabase> {
  onupgradeneeded: (() => void) | null;
}
interface IdbStore {
  get(key: string): IdbRequest<ResumableState | undefined>;
  put(value: ResumableState, key: string): IdbRequest<unknown>;
  delete(key: string): IdbRequest<unknown>;
}
interface IdbDatabase {
  createObjectStore(name: string): unknown;
  objectStoreNames: { contains(name: string): boolean };
  transaction(store: string, mode: 'readonly' | 'readwrite'): { objectStore(name: string): IdbStore };
}
interface IdbFactory {
  open(name: string, version?: number): IdbOpen;
}

const STORE = 'sessions';

/** A ResumableStore in IndexedDB (`indexedDB` of the page unless given). */
export function indexedDbStore(factory?: IdbFactory, dbName = 'lora-vault-uploads'): ResumableStore {
  const idb = factory ?? (globalThis as { indexedDB?: IdbFactory }).indexedDB;
  if (!idb) throw new TypeError('No IndexedDB here: pass a store to uploadLoraResumable');
  const db = done(
    (() => {
      const req = idb.open(dbName, 1);
      req.onupgradeneeded = () => {
        if (!req.result.objectStoreNames.contains(STORE)) req.result.createObjectStore(STORE);
      };
      return req;
    })(),
  );
  const store = async (mode: 'readonly' | 'readwrite') => (await db).transaction(STORE, mode).objectStore(STORE);
  return {
    get: async (key) => done((await store('readonly')).get(key)),
    set: async (key, state) => {
      await done((await store('readwrite')).put(state, key));
    },
    delete: async (key) => {
      await done((await store('readwrite')).delete(key));
    },
  };
}

function done<T>(req: IdbRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}
