import { Transform, type TransformCallback } from 'node:stream';
import { startPipeProxy } from '../test/testkit/pipe-proxy.ts';

/**
 * A TCP proxy that makes loopback look like a link to Blob Storage: every connection gets its own
 * bandwidth cap (each direction) and an added round trip (half on the way in, half on the way
 * out, plus one round trip before the first request byte, as a TCP handshake costs). Parallel
 * connections each get the cap, as they do from one VM to Azure Storage.
 *
 * Each direction is a delay line: a chunk that reaches the proxy at t starts "transmitting" when
 * the link is free (s = max(t, free)), occupies it for n / bandwidth, and is delivered one-way
 * delay later. The source is read only as fast as the link transmits (the transform's callback
 * waits until s is near), so about a bandwidth-delay product is buffered per connection.
 */

export interface LinkShape {
  /** Bandwidth per connection and direction, bytes per second. */
  bytesPerSecond: number;
  /** Added round trip, ms. */
  rttMs: number;
}

export interface ThrottleProxy {
  port: number;
  /** `url` with its host and port replaced by the proxy's (for URLs that point at the target). */
  rewrite(url: string): string;
  /** Connections accepted so far. */
  connections(): number;
  close(): Promise<void>;
}

/** How far ahead of the link the source is read (timers fire late on a busy machine). */
const LEAD_MS = 25;

class DelayLine extends Transform {
  private free: number;
  /** Chunks on the wire, in order, with when each arrives (one timer for all: order is kept). */
  private queue: { at: number; chunk: Buffer }[] = [];
  private timer: NodeJS.Timeout | null = null;
  private flushed: (() => void) | null = null;

  constructor(
    private readonly bytesPerMs: number,
    private readonly oneWayMs: number,
    startAt: number,
  ) {
    super();
    this.free = startAt;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    const now = performance.now();
    const start = Math.max(now, this.free);
    this.free = start + chunk.length / this.bytesPerMs;
    this.queue.push({ at: this.free + this.oneWayMs, chunk });
    this.schedule();
    // read on once the link is less than LEAD_MS from this chunk: the source is paced by the link,
    // and a late timer does not leave the link idle (its schedule is absolute, not per timer)
    const wait = start - now - LEAD_MS;
    if (wait >= 1) setTimeout(callback, wait);
    else callback();
  }

  override _flush(callback: TransformCallback): void {
    if (this.queue.length === 0) callback();
    else this.flushed = () => callback();
  }

  private schedule(): void {
    if (this.timer || this.queue.length === 0) return;
    const wait = (this.queue[0]?.at ?? 0) - performance.now();
    this.timer = setTimeout(() => this.deliver(), Math.max(0, wait));
  }

  /** Delivers every chunk that has arrived by now (a late timer delivers them all at once). */
  private deliver(): void {
    this.timer = null;
    const now = performance.now();
    let n = 0;
    while (n < this.queue.length && (this.queue[n]?.at ?? 0) <= now + 0.5) this.push(this.queue[n++]?.chunk);
    this.queue.splice(0, n);
    if (this.queue.length === 0) this.flushed?.();
    else this.schedule();
  }
}

export async function startThrottleProxy(target: { host: string; port: number }, shape: LinkShape): Promise<ThrottleProxy> {
  let accepted = 0;
  const bytesPerMs = shape.bytesPerSecond / 1000;
  const oneWay = shape.rttMs / 2;
  const proxy = await startPipeProxy({
    target: () => {
      accepted++;
      return target;
    },
    join(client, upstream) {
      const opened = performance.now();
      // the client's first bytes wait one round trip (the handshake a real connection costs)
      const inbound = new DelayLine(bytesPerMs, oneWay, opened + shape.rttMs);
      const outbound = new DelayLine(bytesPerMs, oneWay, opened);
      client.pipe(inbound).pipe(upstream);
      upstream.pipe(outbound).pipe(client);
    },
  });
  return {
    port: proxy.port,
    rewrite(url) {
      const u = new URL(url);
      u.hostname = '127.0.0.1';
      u.port = String(proxy.port);
      return u.toString();
    },
    connections: () => accepted,
    close: () => proxy.close(),
  };
}
