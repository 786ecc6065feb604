import { once } from 'node:events';
import { PassThrough } from 'node:stream';
import { BlobChangedError } from '../storage/blob-store.ts';
import type { SessionBlob } from '../storage/session-blob.ts';
import { AheadBreak, type AheadBreakReport } from './ahead-breaks.ts';
import { blockSize, expectedBlockIds, holdsAsDocumented } from './block-ids.ts';
import { type ChunkSink, type PipelineResult, runUploadPipeline } from './pipeline.ts';

/**
 * Validation of a resumable upload while its blocks arrive (issue 17: completing a 1 GiB upload
 * took a whole second read of the file). Storage cannot read uncommitted blocks, so each step
 * commits every staged block, in order — the blocks already validated as their *committed*
 * versions, each commit conditional on the server's previous ETag — and reads the newly contiguous
 * prefix with `If-Match` that commit's ETag into one running upload pipeline (the multipart one,
 * unchanged). At completion only the tail is left to read, from the final commit's snapshot.
 *
 * Why the bytes validated are the bytes completed: the prefix is read only while the blob is the
 * server's own commit; the next commit (and the final one) keeps those blocks' committed versions
 * and is refused (412) when anything else committed in between (the client through its write SAS,
 * another replica). After each commit the committed block list is read back: its ETag must be the
 * commit's, and its blocks exactly the ones listed, each of its documented size (a block staged
 * again between the look and the commit is committed at whatever it then is), and every read must
 * bring all the bytes asked for; completion checks the final snapshot's block list the same way.
 * Any refusal, mismatch, short read or stop leaves this object `broken`, and completion
 * falls back to validating the whole snapshot. A file the pipeline refuses early is refused at
 * completion with the same error a full read gives (the pipeline sees the same bytes in order).
 *
 * Blocks no block list of the session names (other ids, other sizes: junk staged through the
 * SAS, outside the quota) are discarded by the next commit, so they live one poll, not the SAS's
 * lifetime.
 *
 * A block the client staged between a step's listing and its commit is discarded by storage
 * (Put Block List drops unlisted uncommitted blocks); completion then names it as "never
 * staged" and the client stages it again (the SDK does, see sdk/resumable-upload.ts).
 */

export interface AheadSession {
  sizeBytes: number;
  blockBytes: number;
}

export interface AheadOptions {
  maxBytes: number;
  spoolDir: string;
  /** Told once when this breaks (ahead-breaks.ts logs and counts it). @default nothing */
  onBreak?: AheadBreakReport;
  /** Asked before each look (so before each commit): false stops the validation (the session is being completed, maybe elsewhere). */
  stillOpen?: () => Promise<boolean>;
}

/** A reason to stop found by a step (not a storage failure). */
class AheadStop extends Error {
  constructor(
    readonly reason: AheadBreak,
    message: string,
  ) {
    super(message);
  }
}

export class ValidationAhead {
  /** Blocks validated (a prefix of the session's block list) and their bytes. */
  validatedBlocks = 0;
  validatedBytes = 0;
  /** The ETag of the server's last commit (undefined before the first). */
  etag: string | undefined;
  /** Why this can no longer be used (completion then reads the whole file), in words. */
  broken: string | undefined;
  /** The same, as one of the bounded reasons (a metric label). */
  brokenBy: AheadBreak | undefined;
  /** Called with the bytes validated so far (completion reports them as VALIDATING progress). */
  onProgress: (bytes: number) => void = () => {};
  /** The pipeline's outcome, once all bytes are fed; it may reject early for a refused file. */
  readonly result: Promise<PipelineResult<ChunkSink>>;
  private readonly feed = new PassThrough();
  private readonly ids: string[];
  private settled = false;
  private stepping: Promise<boolean> | undefined;

  constructor(
    private readonly session: AheadSession,
    private readonly blob: SessionBlob,
    private readonly options: AheadOptions,
  ) {
    this.ids = expectedBlockIds(session.sizeBytes, session.blockBytes);
    this.result = runUploadPipeline({
      stream: this.feed,
      maxBytes: options.maxBytes,
      spoolDir: options.spoolDir,
      onProgress: (_phase, bytes) => this.onProgress(bytes),
      openStager: async () => ({ write: async () => {} }), // the bytes are stored already
    });
    this.result.then(
      () => {
        this.settled = true;
      },
      () => {
        this.settled = true; // read at completion
      },
    );
  }

  /** True when completion can go on from here: something validated, nothing broken. */
  get usable(): boolean {
    return !this.broken && this.etag !== undefined && this.validatedBlocks > 0;
  }

  /** Every block is validated (only the final commit is left). */
  get complete(): boolean {
    return this.validatedBlocks === this.ids.length;
  }

  /** The pipeline refused the file already (its error is `result`'s). */
  get refused(): boolean {
    return this.settled && !this.broken && this.validatedBytes < this.session.sizeBytes;
  }

  /** One look at storage: commits and validates what became contiguous. → whether it advanced. Never throws. */
  step(): Promise<boolean> {
    this.stepping ??= this.advance()
      .catch((error: unknown) => {
        if (error instanceof AheadStop) this.break(error.reason, error.message);
        else if (error instanceof BlobChangedError) this.break(AheadBreak.BLOB_CHANGED, 'the blob changed under the server');
        else this.break(AheadBreak.STORAGE_ERROR, (error as Error).message);
        return false;
      })
      .finally(() => {
        this.stepping = undefined;
      });
    return this.stepping;
  }

  /** Waits for a step in flight (completion takes over after it). */
  async idle(): Promise<void> {
    await this.stepping;
  }

  /** The ids the final commit keeps as committed, and those it takes as staged. */
  finalLists(): { keep: string[]; latest: string[] } {
    return { keep: this.ids.slice(0, this.validatedBlocks), latest: this.ids.slice(this.validatedBlocks) };
  }

  /** Feeds the rest of the file (from the final snapshot, starting at validatedBytes) and ends the pipeline. */
  async finish(rest: NodeJS.ReadableStream): Promise<PipelineResult<ChunkSink>> {
    try {
      await this.pump(rest);
      this.feed.end();
    } catch (error) {
      this.break(AheadBreak.STORAGE_ERROR, (error as Error).message); // the pipeline ends as UPLOAD_INTERRUPTED, as for a failed full read
    }
    return this.result;
  }

  /** Stops for good; the pipeline ends (its spool file removed). The first reason is kept and reported. */
  break(reason: AheadBreak, detail: string = reason): void {
    if (this.brokenBy === undefined) {
      this.brokenBy = reason;
      this.broken = detail;
      this.options.onBreak?.(reason, detail, this.validatedBytes);
    }
    this.feed.destroy(new Error(`validation ahead stopped: ${detail}`));
  }

  private async advance(): Promise<boolean> {
    if (this.broken || this.settled) return false;
    // the session row before the listing, not between it and the commit: that window drops blocks staged in it
    if (this.options.stillOpen && !(await this.options.stillOpen()))
      throw new AheadStop(AheadBreak.NOT_OPEN, 'the session is no longer open');
    const list = await this.blob.blockList();
    const { sizeBytes, blockBytes } = this.session;
    const want = (i: number) => blockSize(i, sizeBytes, blockBytes);
    const staged = new Map(list.uncommitted.map((b) => [b.id, b.size]));
    const committed = new Map(list.committed.map((b) => [b.id, b.size]));
    // a block counts when the version a commit would take (the staged one, else the committed one) has its size
    const good = (i: number) => (staged.get(this.ids[i] as string) ?? committed.get(this.ids[i] as string)) === want(i);
    let through = this.validatedBlocks;
    while (through < this.ids.length && good(through)) through++;
    // blocks no session block list names (other ids, other sizes): a commit discards them
    const index = new Map(this.ids.map((id, i) => [id, i]));
    const stray = list.uncommitted.some((b) => {
      const i = index.get(b.id);
      return i === undefined || b.size !== want(i);
    });
    if (through === this.validatedBlocks && !stray) return false;
    // every good block is listed (storage discards the others), in order; the validated ones as committed
    const rest: string[] = [];
    for (let i = this.validatedBlocks; i < this.ids.length; i++) if (good(i)) rest.push(this.ids[i] as string);
    const condition = this.etag === undefined ? ({ ifNoneMatch: '*' } as const) : { ifMatch: this.etag };
    const listed = [...this.ids.slice(0, this.validatedBlocks), ...rest];
    this.etag = await this.blob.commit(this.ids.slice(0, this.validatedBlocks), rest, condition);
    // What the commit stored, not what the look saw: a block staged again in between (same id,
    // other size) is committed at whatever it then is, and would shift every later offset.
    const stored = await this.blob.committedBlocks();
    if (stored.etag !== this.etag) throw new BlobChangedError('the session blob');
    if (!holdsAsDocumented(stored.blocks, listed, sizeBytes, blockBytes))
      throw new AheadStop(AheadBreak.BLOCK_CHANGED, 'a block changed before the commit');
    if (through === this.validatedBlocks) return false;
    const end = Math.min(sizeBytes, through * blockBytes);
    const read = await this.pump(await this.blob.readRange(this.validatedBytes, end - this.validatedBytes, this.etag));
    if (!this.settled && read !== end - this.validatedBytes)
      throw new AheadStop(AheadBreak.BLOCK_CHANGED, `read ${read} bytes of ${end - this.validatedBytes}`);
    this.validatedBlocks = through;
    this.validatedBytes = end;
    return true;
  }

  /** Copies a read into the pipeline, as fast as it validates; stops when the pipeline has settled. → the bytes fed. */
  private async pump(source: NodeJS.ReadableStream): Promise<number> {
    let fed = 0;
    for await (const chunk of source as AsyncIterable<Buffer>) {
      if (this.settled || this.broken) break;
      fed += chunk.length;
      if (!this.feed.write(chunk)) await Promise.race([once(this.feed, 'drain'), this.result.catch(() => undefined)]);
    }
    return fed;
  }
}
