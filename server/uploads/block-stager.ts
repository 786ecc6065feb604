import type { BlockBlobClient } from '@azure/storage-blob';

/**
 * Stages a stream's bytes to a block blob in fixed-size blocks, a bounded number in flight, and
 * commits the block list only when asked — with `If-None-Match: *`, so an existing blob is never
 * overwritten. Until the commit nothing is visible; uncommitted blocks expire on their own.
 */

export interface BlockStagerOptions {
  /** @default 8 MiB */
  blockBytes?: number;
  /** Blocks uploading at once. @default 4 */
  concurrency?: number;
}

export class BlockStager {
  private readonly blockBytes: number;
  private readonly concurrency: number;
  private readonly blockIds: string[] = [];
  private readonly inFlight = new Set<Promise<void>>();
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private failure: unknown;

  constructor(
    private readonly blob: BlockBlobClient,
    options: BlockStagerOptions = {},
  ) {
    this.blockBytes = options.blockBytes ?? 8 * 1024 * 1024;
    this.concurrency = options.concurrency ?? 4;
  }

  /** Adds bytes; resolves when the caller may send more (backpressure on staging). */
  async write(chunk: Buffer): Promise<void> {
    this.throwIfFailed();
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    while (this.pendingBytes >= this.blockBytes) {
      const all = Buffer.concat(this.pending, this.pendingBytes);
      const block = all.subarray(0, this.blockBytes);
      const rest = all.subarray(this.blockBytes);
      this.pending = rest.length ? [Buffer.from(rest)] : [];
      this.pendingBytes = rest.length;
      await this.stage(Buffer.from(block));
    }
  }

  /** Stages what is left and commits the block list; throws if the blob already exists. */
  async commit(contentType: string): Promise<void> {
    if (this.pendingBytes > 0) {
      await this.stage(Buffer.concat(this.pending, this.pendingBytes));
      this.pending = [];
      this.pendingBytes = 0;
    }
    await Promise.all(this.inFlight);
    this.throwIfFailed();
    await this.blob.commitBlockList(this.blockIds, {
      conditions: { ifNoneMatch: '*' },
      blobHTTPHeaders: { blobContentType: contentType },
    });
  }

  /** Waits for in-flight blocks so nothing is still writing after a failure. */
  async abort(): Promise<void> {
    this.pending = [];
    await Promise.allSettled(this.inFlight);
  }

  private async stage(block: Buffer): Promise<void> {
    while (this.inFlight.size >= this.concurrency) {
      await Promise.race(this.inFlight);
      this.throwIfFailed();
    }
    const id = Buffer.from(String(this.blockIds.length).padStart(8, '0')).toString('base64');
    this.blockIds.push(id);
    const task = this.blob.stageBlock(id, block, block.length).then(
      () => {},
      (error: unknown) => {
        this.failure ??= error;
      },
    );
    const tracked = task.finally(() => this.inFlight.delete(tracked));
    this.inFlight.add(tracked);
  }

  private throwIfFailed(): void {
    if (this.failure) throw this.failure;
  }
}
