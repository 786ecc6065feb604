import { postBlobMultipart } from '@lora-vault/sdk/browser-upload';
import {
  type LoraQuotaQuery,
  type QuotaFieldsFragment,
  UploadLoraDocument,
  type UploadLoraMutation,
  UploadProgressDocument,
  type UploadProgressSubscription,
} from '@lora-vault/sdk/documents';
import { isLoraSdkError, networkError, resultFromResponse } from '@lora-vault/sdk/errors';
import { stringifyDocument } from '@urql/core';
import { useCallback, useEffect, useRef, useState } from 'react';
import { useClient } from 'urql';
import { GRAPHQL_URL, UPLOAD_CONCURRENCY } from '../config.ts';
import { newUuid } from '../shared/format.ts';
import { quotaSentence, requestErrorSentence, uploadErrorSentence } from './sentences.ts';

/**
 * The upload queue: each file is checked against the quota first (refused before a byte is
 * sent when it cannot fit), then sent as a GraphQL multipart request (the SDK's browser upload,
 * XHR with send progress) with `sizeBytes` and an `uploadId` whose `uploadProgress` subscription
 * reports the server's phases (RECEIVING → VALIDATING → STORING → DONE). Cancel aborts the
 * request; the API then stores nothing.
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
      const uploadId = newUuid();
      let received = 0;
      let sent = 0;
      const show = (phase: UploadPhase) => patch(item.key, { phase, bytesDone: Math.max(received, sent) });
      const progress = client.subscription(UploadProgressDocument, { uploadId }).subscribe((result) => {
        const p = (result.data as UploadProgressSubscription | undefined)?.uploadProgress;
        if (!p || p.phase === 'FAILED' || p.phase === 'DONE') return; // the mutation's answer decides those
        received = p.bytesReceived;
        show(p.phase);
      });
      try {
        const response = await postBlobMultipart({
          url: GRAPHQL_URL,
          headers: { authorization: `Bearer ${latest.current.token}`, 'x-graphql-yoga-csrf': '1' },
          operations: JSON.stringify({
            query: stringifyDocument(UploadLoraDocument),
            operationName: 'UploadLora',
            variables: { file: null, uploadId, sizeBytes: file.size, uploadSource: 'EMPROPS_STUDIO' },
          }),
          fileVariable: 'variables.file',
          blob: file,
          signal: abort.signal,
          onProgress: (bytes) => {
            sent = bytes;
            show(bytes < file.size ? 'RECEIVING' : 'VALIDATING');
          },
        });
        const result = resultFromResponse<UploadLoraMutation>(response.status, response.text).uploadLora;
        if (result.__typename === 'UploadLoraSuccess') {
          patch(item.key, { phase: 'DONE', bytesDone: file.size, loraId: result.lora.id, message: null });
          latest.current.onUploaded(result.quota);
        } else {
          patch(item.key, { phase: 'FAILED', message: uploadErrorSentence(file.name, file.size, result) });
        }
      } catch (error) {
        const sdkError = isLoraSdkError(error) ? error : networkError(error);
        const cancelled = sdkError.code === 'ABORTED';
        patch(item.key, { phase: cancelled ? 'CANCELLED' : 'FAILED', message: requestErrorSentence(file.name, sdkError) });
      } finally {
        progress.unsubscribe();
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
