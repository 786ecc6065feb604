import { networkError } from './errors.ts';

/**
 * Waits `ms`, or rejects with an `ABORTED` LoraSdkError as soon as `signal` aborts. The abort
 * listener goes when the wait ends either way, so a long run's many waits on one signal leave none behind.
 */
export function delay(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(abortedError());
    const onAbort = () => {
      clearTimeout(timer);
      reject(abortedError());
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

function abortedError() {
  return networkError(Object.assign(new Error('aborted'), { name: 'AbortError' }));
}
