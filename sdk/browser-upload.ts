/**
 * Browsers: a GraphQL multipart request with a `File`/`Blob`, through XMLHttpRequest when there is
 * one (upload progress events), else `fetch` + `FormData` (progress only at the end).
 */
import { networkError } from './errors.ts';

export interface BlobUpload {
  url: string;
  headers: Record<string, string>;
  operations: string;
  fileVariable: string;
  blob: Blob;
  onProgress?: (bytesSent: number, totalBytes: number) => void;
  signal?: AbortSignal;
  fetch?: (input: string, init: RequestInit) => Promise<Response>;
}

function formOf(upload: BlobUpload): FormData {
  const form = new FormData();
  form.append('operations', upload.operations);
  form.append('map', JSON.stringify({ 0: [upload.fileVariable] }));
  const name = (upload.blob as { name?: unknown }).name;
  form.append('0', upload.blob, typeof name === 'string' && name ? name : 'lora.safetensors');
  return form;
}

interface XhrLike {
  open(method: string, url: string): void;
  setRequestHeader(name: string, value: string): void;
  send(body: unknown): void;
  abort(): void;
  status: number;
  responseText: string;
  upload: { onprogress: ((event: { loaded: number; total: number }) => void) | null };
  onload: (() => void) | null;
  onerror: (() => void) | null;
  ontimeout: (() => void) | null;
  onabort: (() => void) | null;
}

export async function postBlobMultipart(upload: BlobUpload): Promise<{ status: number; text: string }> {
  const Xhr = (globalThis as { XMLHttpRequest?: new () => XhrLike }).XMLHttpRequest;
  const total = upload.blob.size;
  if (!Xhr) {
    const doFetch = upload.fetch ?? globalThis.fetch;
    try {
      const response = await doFetch(upload.url, {
        method: 'POST',
        headers: upload.headers,
        body: formOf(upload),
        ...(upload.signal ? { signal: upload.signal } : {}),
      });
      const text = await response.text();
      upload.onProgress?.(total, total);
      return { status: response.status, text };
    } catch (error) {
      throw networkError(error);
    }
  }
  return new Promise((resolve, reject) => {
    const xhr = new Xhr();
    xhr.open('POST', upload.url);
    for (const [name, value] of Object.entries(upload.headers)) xhr.setRequestHeader(name, value);
    if (upload.onProgress) {
      const onProgress = upload.onProgress;
      xhr.upload.onprogress = (event) => onProgress(Math.min(event.loaded, total), total);
    }
    const onAbort = () => xhr.abort();
    upload.signal?.addEventListener('abort', onAbort, { once: true });
    const cleanup = () => upload.signal?.removeEventListener('abort', onAbort);
    xhr.onload = () => {
      cleanup();
      resolve({ status: xhr.status, text: xhr.responseText });
    };
    xhr.onerror = () => {
      cleanup();
      reject(networkError(new Error('The upload failed (network error)')));
    };
    xhr.ontimeout = () => {
      cleanup();
      reject(networkError(new Error('The upload timed out'), true));
    };
    xhr.onabort = () => {
      cleanup();
      reject(networkError(Object.assign(new Error('The upload was aborted'), { name: 'AbortError' })));
    };
    xhr.send(formOf(upload));
  });
}
