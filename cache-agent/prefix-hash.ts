import { createHash } from 'node:crypto';
import type { FileHandle } from 'node:fs/promises';

const READ_BACK_BYTES = 1024 * 1024;

/**
 * sha256 of the file in order while parts complete out of order: bytes written at the hashed
 * frontier are hashed from memory; bytes written ahead of it are read back (from the page cache)
 * as soon as the gap before them closes. So the hash is ready moments after the last write.
 */
export class PrefixHasher {
  private readonly hash = createHash('sha256');
  private hashed = 0;
  private readonly pending: [number, number][] = []; // written but not hashed: sorted, disjoint [start, end)
  private reading: Promise<void> | null = null;
  private failure: unknown;

  constructor(private readonly file: FileHandle) {}

  written(position: number, chunks: Buffer[], bytes: number): void {
    if (this.reading === null && position === this.hashed) {
      for (const chunk of chunks) this.hash.update(chunk);
      this.hashed += bytes;
    } else {
      this.add(position, position + bytes);
    }
    this.pump();
  }

  /** Resolves when no read-back is running (none starts after a failure or once digested). */
  async idle(): Promise<void> {
    while (this.reading !== null) await this.reading;
  }

  async digest(): Promise<{ sha256: string; bytes: number }> {
    await this.idle();
    if (this.failure !== undefined) throw this.failure;
    return { sha256: this.hash.digest('hex'), bytes: this.hashed };
  }

  private add(start: number, end: number): void {
    let i = this.pending.findIndex(([s]) => s > start);
    if (i === -1) i = this.pending.length;
    const before = this.pending[i - 1];
    const after = this.pending[i];
    if (before !== undefined && before[1] === start) {
      before[1] = end;
      if (after !== undefined && after[0] === end) {
        before[1] = after[1];
        this.pending.splice(i, 1);
      }
    } else if (after !== undefined && after[0] === end) {
      after[0] = start;
    } else {
      this.pending.splice(i, 0, [start, end]);
    }
  }

  private pump(): void {
    if (this.reading !== null || this.failure !== undefined || this.pending[0]?.[0] !== this.hashed) return;
    this.reading = this.readBack()
      .catch((error: unknown) => {
        this.failure = error;
      })
      .finally(() => {
        this.reading = null;
      });
  }

  private async readBack(): Promise<void> {
    const buffer = Buffer.allocUnsafe(READ_BACK_BYTES);
    for (let head = this.pending[0]; head !== undefined && head[0] === this.hashed; head = this.pending[0]) {
      const { bytesRead } = await this.file.read(buffer, 0, Math.min(buffer.length, head[1] - head[0]), head[0]);
      if (bytesRead === 0) throw new Error(`the temp file ends before byte ${head[1]}`);
      this.hash.update(buffer.subarray(0, bytesRead));
      this.hashed += bytesRead;
      head[0] += bytesRead;
      if (head[0] >= head[1]) this.pending.shift();
    }
  }
}
