import { getEventListeners } from 'node:events';
import { describe, expect, it } from 'vitest';
import { delay } from '../../sdk/abortable-delay.ts';

/** The SDK's waits between retries (sdk/abortable-delay.ts): one signal serves a whole run's many waits. */

describe('delay', () => {
  it('leaves no abort listener on the signal once its wait is over', async () => {
    const signal = new AbortController().signal;
    for (let i = 0; i < 20; i++) await delay(1, signal);
    expect(getEventListeners(signal, 'abort')).toHaveLength(0);
  });

  it('rejects ABORTED at once when the signal aborts mid-wait, and removes its listener', async () => {
    const controller = new AbortController();
    const waiting = delay(60_000, controller.signal);
    expect(getEventListeners(controller.signal, 'abort')).toHaveLength(1);
    controller.abort();
    await expect(waiting).rejects.toMatchObject({ code: 'ABORTED', retryable: false });
    expect(getEventListeners(controller.signal, 'abort')).toHaveLength(0);
  });
});
