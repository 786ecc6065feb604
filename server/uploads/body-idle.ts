import type { IncomingMessage } from 'node:http';

/**
 * Calls `onIdle` once when a request body sends no byte for `idleMs` while the server is waiting
 * for it. Time the server itself is not reading (the request is paused because storage or the
 * validator is slower than the client) does not count: only a client that stops is cut, never
 * one that is slow but moving or one we hold back. Checks a few times per period; no listener
 * is added to the stream (that would change its flow).
 */
export function watchBodyIdle(req: IncomingMessage, idleMs: number, onIdle: () => void): { stop(): void } {
  let lastBytes = req.socket.bytesRead;
  let lastActivity = Date.now();
  const timer = setInterval(
    () => {
      const now = Date.now();
      const bytes = req.socket.bytesRead;
      if (bytes !== lastBytes || req.isPaused() || req.complete) {
        lastBytes = bytes;
        lastActivity = now;
        return;
      }
      if (now - lastActivity >= idleMs) {
        clearInterval(timer);
        onIdle();
      }
    },
    Math.max(10, Math.min(1000, idleMs / 4)),
  );
  timer.unref();
  return { stop: () => clearInterval(timer) };
}
