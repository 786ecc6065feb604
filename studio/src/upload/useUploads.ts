import {
  type LoraQuotaQuery,
  type QuotaFieldsFragment,
  UploadProgressDocument,
  type UploadProgressSubscription,
  type UploadSessionFieldsFragment,
} from '@lora-vault/sdk/documents';
import { isLoraSdkError, networkError } from '@lora-vault/sdk/errors';
import {
  abortResumable,
  blobBlockSource,
  indexedDbStore,
  type ResumableApi,
  type ResumableStore,
  resumableApi,
  resumeKey,
  runResumableUpload,
} from '@lora-vault/sdk/resumable';
import { useCallback, useEffect, useRef, useState } from 'react';
import { useClient } from 'urql';
import { claimsOf } from '../auth/session.ts';
import { UPLOAD_CONCURRENCY } from '../config.ts';
import { newUuid } from '../shared/format.ts';
import { quotaSentence, requestErrorSentence, type UploadError, uploadErrorSentence } from './sentences.ts';
import { urqlRequest } from './urql-request.ts';

/**
 * The upload queue: each file is checked against the quota first (refused before a byte is
 * sent when it cannot fit), then uploaded the resumable way with the SDK's run
 * (`@lora-vault/sdk/resumable`): beginLoraUpload, blocks PUT straight to Blob Storage through the
 * session's write-only SAS, completeLoraUpload. The session id is kept in IndexedDB under the
 * user and the file's name, size, modification time and content samples (the SDK's resumeKey),
 * so the same file dropped again after a reload resumes
 * (only the blocks storage lacks are sent). Progress: bytes storage holds, then the server's
 * `uploadProgress` for the session (VALIDATING → STORING). Cancel stops the run and aborts the
 * session, so storage and the quota keep nothing.
 */

export type UploadPhase = 'QUEUED' | 'RECEIVING' | 'VALIDATING' | 'STORING' | 'DONE' | 'FAILED' | 'CANCELLED';

export interface UploadItem {
  key: string;
  fileName: string;
  sizeBytes: number;
  phase: UploadPhase;
  /** Bytes the browser has sent and the server reported received: the larger is shown. */
  bytesDone: number;
  /** The sentence shown when it failed or was cancelled. */
  message: string | null;
  loraId: string | null;
}

type Quota = LoraQuotaQuery['loraQuota'] | undefined;

const ACTIVE: ReadonlySet<UploadPhase> = new Set(['RECEIVING', 'VALIDATING', 'STORING']);

export function isActive(item: UploadItem): boolean {
  return item.phase === 'QUEUED' || ACTIVE.has(item.phase);
}

/** Cancel can still stop it: queued, or blocks still going to storage (not once completion runs: VALIDATING, STORING). */
export function cancellable(phase: UploadPhase): boolean {
  return phase === 'QUEUED' || phase === 'RECEIVING';
}

export function useUploads(options: { token: string; quota: Quota; onUploaded: (quota: QuotaFieldsFragment) => void }) {
  const client = useClient();
  const [items, setItems] = useState<UploadItem[]>([]);
  const itemsRef = useRef(items);
  itemsRef.current = items;
  const files = useRef(new Map<string, File>());
  const aborts = useRef(new Map<string, AbortController>());
  const running = useRef(new Set<string>());
  const latest = useRef(options);
  latest.current = options;

  const patch = useCallback((key: string, change: Partial<UploadItem>) => {
    setItems((all) => all.map((item) => (item.key === key ? { ...item, ...change } : item)));
  }, []);

  const run = useCallback(
    async (item: UploadItem) => {
      const file = files.current.get(item.key);
      if (!file) return;
      const abort = new AbortController();
      aborts.current.set(item.key, abort);
      const request = urqlRequest(client);
      const source = blobBlockSource(file);
      // IndexedDB entries are per user: another user signed in to this browser never resumes or overwrites them
      const owner = claimsOf(latest.current.token).sub ?? '';
      const forget = () =>
        resumeKey(source, owner)
          .then((key) => sessionStore().delete(key))
          .catch(() => undefined);
      let sessionId: string | null = null;
      let progress: { unsubscribe(): void } | undefined;
      let stored = 0; // bytes storage holds (staged blocks, earlier runs' included)
      let checked = 0; // bytes the server reported validated
      let serverPhase: UploadPhase = 'VALIDATING';
      const show = () => patch(item.key, { phase: stored < file.size ? 'RECEIVING' : serverPhase, bytesDone: Math.max(stored, checked) });
      // the server reports a session's validation under its id: follow it once the session is known
      const follow = (session: UploadSessionFieldsFragment) => {
        if (sessionId === session.id) return session;
        progress?.unsubscribe();
        sessionId = session.id;
        progress = client.subscription(UploadProgressDocument, { uploadId: session.id }).subscribe((result) => {
          const p = (result.data as UploadProgressSubscription | undefined)?.uploadProgress;
          if (!p || (p.phase !== 'VALIDATING' && p.phase !== 'STORING')) return; // the completion's answer decides the rest
          serverPhase = p.phase;
          checked = Math.max(checked, p.bytesReceived);
          show();
        });
        return session;
      };
      const sdkApi = resumableApi(request);
      const api: ResumableApi = {
        ...sdkApi,
        begin: async (input) => follow(await sdkApi.begin(input)),
        renew: async (id) => follow(await sdkApi.renew(id)),
      };
      try {
        const result = await runResumableUpload(api, source, sessionStore(), {
          uploadSource: 'EMPROPS_STUDIO', // recorded as flat_file's upload_source (docs/flat-file.md)
          owner,
          signal: abort.signal,
          onProgress: (bytes) => {
            stored = bytes;
            show();
          },
        });
        if (result.__typename === 'UploadLoraSuccess') {
          patch(item.key, { phase: 'DONE', bytesDone: file.size, loraId: result.lora.id, message: null });
          latest.current.onUploaded(result.quota);
        } else {
          // a refusal may leave the session OPEN (the server stayed busy past the SDK's wait): end it, so FAILED holds nothing
          if (sessionId) await abortResumable(request, sessionId).catch(() => undefined);
          await forget();
          patch(item.key, { phase: 'FAILED', message: uploadErrorSentence(file.name, file.size, result) });
        }
      } catch (error) {
        const sdkError = isLoraSdkError(error) ? error : networkError(error);
        if (abort.signal.aborted) {
          // nothing is left behind: the session's blocks and its quota reservation go now
          if (sessionId) await abortResumable(request, sessionId).catch(() => undefined);
          await forget();
          patch(item.key, { phase: 'CANCELLED', message: requestErrorSentence(file.name, networkError(abortError())) });
        } else if (sdkError.kind === 'domain' && sdkError.details) {
          patch(item.key, { phase: 'FAILED', message: uploadErrorSentence(file.name, file.size, sdkError.details as UploadError) });
        } else {
          patch(item.key, { phase: 'FAILED', message: requestErrorSentence(file.name, sdkError) });
        }
      } finally {
        progress?.unsubscribe();
        aborts.current.delete(item.key);
        files.current.delete(item.key);
        running.current.delete(item.key);
      }
    },
    [client, patch],
  );

  // start queued uploads while fewer than UPLOAD_CONCURRENCY run
  useEffect(() => {
    for (const item of items) {
      if (running.current.size >= UPLOAD_CONCURRENCY) break;
      if (item.phase !== 'QUEUED' || running.current.has(item.key)) continue;
      running.current.add(item.key);
      patch(item.key, { phase: 'RECEIVING' });
      void run(item);
    }
  }, [items, patch, run]);

  const add = useCallback((list: FileList | File[]) => {
    const quota = latest.current.quota;
    // what is already queued or running counts against the quota too
    let pendingBytes = 0;
    let pendingCount = 0;
    for (const i of itemsRef.current) {
      if (isActive(i)) {
        pendingBytes += i.sizeBytes;
        pendingCount += 1;
      }
    }
    const added: UploadItem[] = [];
    for (const file of Array.from(list)) {
      const key = newUuid();
      const item: UploadItem = {
        key,
        fileName: file.name,
        sizeBytes: file.size,
        phase: 'QUEUED',
        bytesDone: 0,
        message: null,
        loraId: null,
      };
      const refusal = earlyRefusal(file, quota, pendingBytes, pendingCount);
      if (refusal) {
        added.push({ ...item, phase: 'FAILED', message: refusal });
        continue;
      }
      pendingBytes += file.size;
      pendingCount += 1;
      files.current.set(key, file);
      added.push(item);
    }
    itemsRef.current = [...itemsRef.current, ...added];
    setItems((all) => [...all, ...added]);
  }, []);

  const cancel = useCallback(
    (key: string) => {
      const phase = itemsRef.current.find((i) => i.key === key)?.phase;
      if (phase && !cancellable(phase)) return; // completion is running: it would end DONE anyway
      const abort = aborts.current.get(key);
      if (abort) abort.abort();
      else {
        files.current.delete(key);
        patch(key, { phase: 'CANCELLED', message: 'Cancelled before it was sent. Nothing was stored.' });
      }
    },
    [patch],
  );

  const dismiss = useCallback((key: string) => setItems((all) => all.filter((i) => i.key !== key)), []);

  return { items, add, cancel, dismiss };
}

/** Why a file cannot be sent at all (empty, or it cannot fit the quota left), or null. */
function earlyRefusal(file: File, quota: Quota, pendingBytes: number, pendingCount: number): string | null {
  if (file.size === 0) return `“${file.name}” is empty: a LoRA file holds the network's weights.`;
  if (!quota) return null;
  const used = quota.usedStorageBytes + pendingBytes;
  const count = quota.loraCount + pendingCount;
  if (used + file.size > quota.maxStorageBytes || count >= quota.maxLoraCount) {
    return quotaSentence(file.name, file.size, {
      usedBytes: used,
      maxBytes: quota.maxStorageBytes,
      availableBytes: Math.max(0, quota.maxStorageBytes - used),
      count,
      maxCount: quota.maxLoraCount,
    });
  }
  return null;
}

let store: ResumableStore | undefined;
/** The page's IndexedDB store of session ids (database `lora-vault-uploads`), opened on first use. */
function sessionStore(): ResumableStore {
  store ??= indexedDbStore();
  return store;
}

function abortError(): Error {
  return Object.assign(new Error('cancelled'), { name: 'AbortError' });
}
