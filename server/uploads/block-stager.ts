import { UploadInterruptedError } from '../domain/errors.ts';
import { type StagedBlob, StagedBlocksLostError } from '../storage/blob-store.ts';

/**
 * Stages a stream's bytes to a block blob in fixed-size blocks, a bounded number in flight, and
 * commits the block list only when asked — with `If-None-Match: *`, so an existing blob is never
 * overwritten. Until the commit nothing is visible; `abort` discards the staged blocks (Azure
 * would keep them for 7 days, outside any quota).
 *
 * Each byte is copied once, into a block buffer; a buffer whose block is staged is reused for a
 * later block. So one upload holds at most `concurrency + 1` blocks (40 MiB by default) and
 * allocates nothing per block: with fresh 8 MiB buffers per block (and a concat + copy to cut
 * them), the external-memory churn made V8 run a full GC every few blocks over the app's whole
 * heap, which cost about a third of the server's CPU time on a large upload.
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
  /** Buffers whose block has been staged, for the next blocks. */
  private readonly spare: Buffer[] = [];
  /** The block being filled (bytes [0, filled)), taken when the first byte for it arrives. */
  private block: Buffer | undefined;
  private filled = 0;
  private failure: unknown;
  private committed = false;

  constructor(
    private readonly blob: StagedBlob,
    options: BlockStagerOptions = {},
  ) {
    this.blockBytes = options.blockBytes ?? 8 * 1024 * 1024;
    this.concurrency = options.concurrency ?? 4;
  }

  /** Adds bytes; resolves when the caller may send more (backpressure on staging). */
  async write(chunk: Buffer): Promise<void> {
    this.throwIfFailed();
    for (let offset = 0; offset < chunk.length; ) {
      // allocUnsafe: only the bytes copied in, [0, filled), are ever sent
      this.block ??= this.spare.pop() ?? Buffer.allocUnsafe(this.blockBytes);
      const block = this.block;
      const copied = chunk.copy(block, this.filled, offset);
      this.filled += copied;
      offset += copied;
      if (this.filled === this.blockBytes) {
        this.block = undefined;
        this.filled = 0;
        await this.stage(block, this.blockBytes);
      }
    }
  }

  /** Stages what is left and commits the block list (→ the blob's ETag); throws if the blob already exists. */
  async commit(contentType: string): Promise<string> {
    if (this.block && this.filled > 0) {
      const [block, length] = [this.block, this.filled];
      this.block = undefined;
      this.filled = 0;
      await this.stage(block, length);
    }
    await Promise.all(this.inFlight);
    this.throwIfFailed();
    try {
      const etag = await this.blob.commit(this.blockIds, contentType);
      this.committed = true;
      return etag;
    } catch (error) {
      // Our blocks are gone, or an empty blob took the path: the reconciler discarded this
      // upload as stale (it outlived UPLOAD_STALE_SECONDS).
      if (error instanceof StagedBlocksLostError) throw new UploadInterruptedError('its staged blocks expired');
      throw error;
    }
  }

  /**
   * After a failure: waits for in-flight blocks (so nothing is still writing), then discards the
   * staged blocks unless they were committed (the caller deletes a committed blob). Never
   * throws: what a storage outage keeps here, the reconciler removes after UPLOAD_STALE_SECONDS.
   */
  async abort(): Promise<void> {
    this.block = undefined;
    this.filled = 0;
    await Promise.allSettled(this.inFlight);
    if (this.committed || this.blockIds.length === 0) return;
    await this.blob.discard().catch(() => {});
  }

  /** Uploads `block[0, length)`; the buffer is reused once the SDK is done with it (every try settled). */
  private async stage(block: Buffer, length: number): Promise<void> {
    while (this.inFlight.size >= this.concurrency) {
      await Promise.race(this.inFlight);
      this.throwIfFailed();
    }
    const id = Buffer.from(String(this.blockIds.length).padStart(8, '0')).toString('base64');
    this.blockIds.push(id);
    const task = this.blob.stageBlock(id, length === block.length ? block : block.subarray(0, length)).then(
      () => {
        this.spare.push(block);
      },
      (error: unknown) => {
        this.failure ??= error; // the buffer is dropped, not reused
      },
    );
    const tracked = task.finally(() => this.inFlight.delete(tracked));
    this.inFlight.add(tracked);
  }

  private throwIfFailed(): void {
    if (this.failure) throw this.failure;
  }
}
