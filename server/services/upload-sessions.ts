import { randomUUID } from 'node:crypto';
import { basename, extname } from 'node:path';
import { Readable } from 'node:stream';
import type { Logger } from 'pino';
import { z } from 'zod';
import type { Principal } from '../auth/principal.ts';
import type { Db } from '../db/client.ts';
import type { upload_session } from '../db/generated/client.ts';
import {
  FileTooLargeError,
  RequestError,
  RequestErrorCode,
  UploadInterruptedError,
  UploadSessionNotFoundError,
  ValidationError,
} from '../domain/errors.ts';
import { CLIENT_UPLOAD_SOURCES, storedUploadSource, UploadSource } from '../domain/flat-file-contract.ts';
import type { LoraView } from '../domain/lora.ts';
import { LIMITS, parseArgs, sanitizeDisplayName, userMetadata, userTags } from '../domain/validation.ts';
import { BlobChangedError, type BlobStore, contentBlobPath, StagedBlocksLostError } from '../storage/blob-store.ts';
import { countAheadCompletion } from '../telemetry/upload-telemetry.ts';
import { AheadBreak, aheadBreakReporter } from '../uploads/ahead-breaks.ts';
import { AheadWatch } from '../uploads/ahead-watch.ts';
import { blockCount, blockListProblem, expectedBlockIds, holdsAsDocumented } from '../uploads/block-ids.ts';
import { type ChunkSink, type PipelineResult, runUploadPipeline } from '../uploads/pipeline.ts';
import { ValidationAhead } from '../uploads/validation-ahead.ts';
import { assertAccountActive } from './accounts.ts';
import type { EventService } from './events.ts';
import type { QuotaService, QuotaView } from './quotas.ts';
import { assertFits } from './quotas.ts';
import type { LoraRegistry } from './registry.ts';
import { displayFileName, type UploadService } from './uploads.ts';

/**
 * Resumable direct-to-Blob uploads (issue 17, docs/API.md "Resumable uploads"). A session
 * reserves the user's quota (bytes and one LoRA; counted by every later check, see
 * QuotaService.lockWithReservations) and hands out a write-only SAS for one staging blob; the
 * client stages blocks straight to storage. While blocks arrive, the process that began (or
 * renewed) the session validates them (validation-ahead.ts); `complete` commits exactly the
 * documented block list, snapshots what it committed, and reads through the multipart pipeline
 * what was not validated yet (the whole snapshot when validating ahead did not hold up); a
 * valid file becomes a READY LoRA in finalize's transaction (which ends the reservation), an
 * invalid one leaves nothing. A session of someone else is UPLOAD_SESSION_NOT_FOUND, as a missing one.
 */

export interface UploadSessionOptions {
  maxUploadBytes: number;
  spoolDir: string;
  /** Session (and reservation) lifetime. */
  sessionMs: number;
  sasTtlSeconds: number;
  blockBytes: number;
  /** Sessions validated while their blocks arrive, per process (0 = none), and how often they are looked at. */
  validateAhead: { max: number; pollMs: number; perUser?: number };
  /** Where a validation ahead that broke is said (server/uploads/ahead-breaks.ts). @default none */
  logger?: Logger;
}

export type SessionState = upload_session['state'];

export interface UploadSessionView {
  id: string;
  state: SessionState;
  fileName: string;
  name: string;
  sizeBytes: number;
  blockBytes: number;
  blockCount: number;
  /** The ids to stage and commit, in order (block-ids.ts). */
  blockIds: string[];
  expiresAt: Date;
  /** Only from begin and renew, while OPEN. */
  uploadUrl: string | null;
  uploadUrlExpiresAt: Date | null;
  /** Only from loraUploadSession: what storage holds (Azure's uncommitted block list). */
  stagedBlockIds: string[] | null;
  stagedBytes: number | null;
  loraId: string | null;
}

const beginArgs = z.object({
  fileName: z.string().max(10_000),
  sizeBytes: z.number().int().min(1, 'must be at least 1 byte'),
  name: z.string().transform(sanitizeDisplayName).pipe(z.string().min(1, 'must not be empty').max(LIMITS.nameMaxChars)).nullish(),
  tags: userTags.nullish(),
  metadata: userMetadata.nullish(),
  sha256: z
    .string()
    .regex(/^[0-9a-fA-F]{64}$/, 'must be 64 hex characters')
    .transform((s) => s.toLowerCase())
    .nullish(),
  uploadSource: z.enum(CLIENT_UPLOAD_SOURCES).nullish(),
});

const blockIdsArg = z.array(z.string().max(64)).min(1).max(100_000);

export class UploadSessionService {
  private readonly ahead: AheadWatch;

  constructor(
    private readonly db: Db,
    private readonly blobs: BlobStore,
    private readonly registry: LoraRegistry,
    private readonly quotas: QuotaService,
    private readonly events: EventService,
    private readonly uploads: UploadService,
    private readonly options: UploadSessionOptions,
  ) {
    this.ahead = new AheadWatch(options.validateAhead);
  }

  /** Ends every validation ahead (the server is stopping). */
  stop(): void {
    this.ahead.stop();
  }

  async begin(
    principal: Principal,
    input: {
      fileName: string;
      sizeBytes: number;
      name?: string | null;
      tags?: string[] | null;
      metadata?: unknown;
      sha256?: string | null;
      /** As multipart's (`emprops_studio` | `api`); none records `resumable` (docs/flat-file.md). */
      uploadSource?: string | null;
    },
  ): Promise<UploadSessionView> {
    const userId = this.userOf(principal);
    const args = parseArgs(beginArgs, input);
    if (args.sizeBytes > this.options.maxUploadBytes) throw new FileTooLargeError(this.options.maxUploadBytes);
    const fileName = displayFileName(args.fileName);
    const name = args.name ?? (sanitizeDisplayName(basename(fileName, extname(fileName))).slice(0, LIMITS.nameMaxChars) || 'Untitled LoRA');
    const id = randomUUID();
    if (!(await this.events.claimUpload(userId, id))) throw new Error('a fresh session id was already claimed');
    const session = await this.db.$transaction(async (tx) => {
      await assertAccountActive(tx, userId); // a deleted account starts no upload (ACCOUNT_DELETED)
      // the reservation is checked and made under the quota row lock, as every charge is
      assertFits(await this.quotas.lockWithReservations(tx, userId), args.sizeBytes);
      return tx.upload_session.create({
        data: {
          id,
          user_id: userId,
          file_name: fileName,
          name,
          tags: args.tags ?? [],
          user_metadata: (args.metadata ?? undefined) as object | undefined,
          declared_sha256: args.sha256 ?? null,
          upload_source: args.uploadSource ?? UploadSource.RESUMABLE,
          size_bytes: BigInt(args.sizeBytes),
          block_bytes: this.options.blockBytes,
          blob_path: contentBlobPath(id),
          expires_at: new Date(Date.now() + this.options.sessionMs),
        },
      });
    });
    this.watchAhead(session);
    return this.view(session, await this.sas(session));
  }

  async renew(principal: Principal, id: string): Promise<UploadSessionView> {
    const session = await this.find(principal, id);
    this.assertOpen(session);
    this.watchAhead(session); // a resumed upload, maybe on another process than the one that began it
    return this.view(session, await this.sas(session));
  }

  /** The session as storage sees it: which blocks it holds (from Azure, not from the client's word). */
  async get(principal: Principal, id: string): Promise<UploadSessionView> {
    const session = await this.find(principal, id);
    const live = session.state === 'OPEN' && session.expires_at > new Date();
    const staged = live ? await this.stagedBlocks(session.blob_path) : [];
    return {
      ...this.view(session),
      stagedBlockIds: staged.map((b) => b.id),
      stagedBytes: staged.reduce((sum, b) => sum + b.size, 0),
    };
  }

  async abort(principal: Principal, id: string): Promise<UploadSessionView> {
    const session = await this.find(principal, id);
    if (session.state !== 'OPEN') return this.view(session);
    this.ahead.drop(session.id, AheadBreak.ABORTED, 'the session was aborted');
    const ended = await this.end(session.id, ['OPEN'], 'ABORTED');
    if (ended) await this.blobs.purge(session.blob_path).catch(() => {}); // else the reconciler
    return this.view(await this.db.upload_session.findUniqueOrThrow({ where: { id: session.id } }));
  }

  async complete(principal: Principal, id: string, blockIds: string[]): Promise<{ lora: LoraView; quota: QuotaView }> {
    const session = await this.find(principal, id);
    this.assertOpen(session);
    const ids = parseArgs(blockIdsArg, blockIds, 'blockIds');
    const size = Number(session.size_bytes);
    // The validation ahead stops first: a commit of its in flight would drop blocks staged after its look.
    const ahead = await this.ahead.take(session.id);
    let release: () => void;
    try {
      // Checked against storage before anything is committed; a wrong list leaves the session OPEN.
      await this.assertBlockList(session, ids);
      release = this.uploads.slots.take(session.user_id); // TOO_MANY_UPLOADS leaves the session OPEN
    } catch (error) {
      if (ahead) this.watchAhead(session, ahead); // it goes on for the next completion
      throw error;
    }
    if (!(await this.transition(session.id, 'OPEN', 'COMPLETING'))) {
      ahead?.break(AheadBreak.NOT_OPEN, 'the session is being completed or has ended');
      release();
      throw new UploadInterruptedError('the upload session is being completed or has ended');
    }
    const progress = this.uploads.progressReporter(session.id, session.user_id, size);
    let fileId: bigint | undefined;
    let done: { lora: LoraView; snapshot: string };
    try {
      done = await this.validateAndFinalize(principal, session, ids, ahead, progress, (f) => {
        fileId = f;
      });
    } catch (error) {
      // Blocks lost or changed between the check and the commit (a commit from elsewhere: another
      // replica's validation ahead, the client): nothing is validated, the session is OPEN again
      // and the answer names what storage lacks, so the client stages it and completes again.
      const changed = error instanceof StagedBlocksLostError || (error instanceof BlobChangedError && fileId === undefined);
      if (changed && (await this.end(session.id, ['COMPLETING'], 'OPEN'))) {
        await this.assertBlockList(session, ids);
        throw new ValidationError([{ path: 'blockIds', message: 'the staged blocks changed while completing: stage them again' }]);
      }
      await this.end(session.id, ['COMPLETING'], 'FAILED');
      await this.blobs.purge(session.blob_path).catch(() => {}); // the blob and its snapshots; else the reconciler
      if (fileId !== undefined) await this.registry.discard(fileId).catch(() => {});
      const failure = changed ? new UploadInterruptedError('its staged blocks are gone') : error; // the session ended meanwhile
      progress('FAILED', 0, { error: (failure as { code?: string }).code ?? RequestErrorCode.INTERNAL_SERVER_ERROR });
      throw failure;
    } finally {
      release();
    }
    // READY: from here on the blob may be stored content other LoRAs name; nothing below removes it
    await this.blobs.deleteSnapshot(session.blob_path, done.snapshot).catch(() => {}); // the LoRA has its own
    progress('DONE', size, { loraId: done.lora.id });
    return { lora: done.lora, quota: await this.quotas.get(principal) };
  }

  private async validateAndFinalize(
    principal: Principal,
    session: upload_session,
    ids: string[],
    ahead: ValidationAhead | undefined,
    progress: ReturnType<UploadService['progressReporter']>,
    began: (fileId: bigint) => void,
  ): Promise<{ lora: LoraView; snapshot: string }> {
    const size = Number(session.size_bytes);
    const { result, etag, snapshot } = await this.validateStored(session, ids, ahead, progress);
    if (result.sizeBytes !== size) {
      throw new ValidationError([{ path: 'blockIds', message: `the committed file has ${result.sizeBytes} bytes, the session ${size}` }]);
    }
    if (session.declared_sha256 && session.declared_sha256 !== result.sha256) {
      throw new ValidationError([{ path: 'sha256', message: 'the stored file does not have the declared sha256' }]);
    }
    const begun = await this.registry.begin({
      userId: session.user_id,
      name: session.name,
      fileName: session.file_name,
      format: result.format,
      tags: session.tags,
      blobPath: session.blob_path,
    });
    began(begun.fileId);
    progress('STORING', size);
    const metadata = (session.user_metadata ?? null) as { baseModel?: string } | null;
    const lora = await this.registry.finalize(principal, {
      fileId: begun.fileId,
      sizeBytes: size,
      sha256: result.sha256,
      baseModel: metadata?.baseModel ?? result.baseModel,
      baseModelSource: metadata?.baseModel ? 'USER' : result.baseModelSource,
      rank: result.rank,
      alpha: result.alpha,
      metadata: { ...result.metadata, autoV3: result.hashes.autoV3 },
      userMetadata: metadata ?? {},
      uploadSource: storedUploadSource(session.upload_source),
      blobEtag: etag,
      sessionId: session.id,
    });
    return { lora, snapshot };
  }

  /**
   * Commits the session's blocks and validates what was committed: the rest of a validation ahead
   * (only while the blob is still the server's last commit), else the whole file. What is validated
   * is always a snapshot of exactly what was committed (or, ahead, the same blocks read under the
   * ETag of the server's own commits): the upload SAS may still write the blob.
   */
  private async validateStored(
    session: upload_session,
    ids: string[],
    ahead: ValidationAhead | undefined,
    progress: ReturnType<UploadService['progressReporter']>,
  ): Promise<{ result: PipelineResult<ChunkSink>; etag: string; snapshot: string }> {
    const path = session.blob_path;
    const size = Number(session.size_bytes);
    const blob = this.blobs.sessionBlob(path);
    if (ahead?.etag !== undefined && !ahead.broken) {
      ahead.onProgress = (bytes) => progress('VALIDATING', bytes);
      try {
        if (ahead.refused) {
          countAheadCompletion('ahead');
          await ahead.result; // the file was refused already: its error, as a full read gives it
        }
        const { keep, latest } = ahead.finalLists();
        const etag = await blob.commit(keep, latest, { ifMatch: ahead.etag });
        countAheadCompletion('ahead');
        const { snapshot } = await this.blobs.snapshot(path, etag);
        await this.assertCommittedAsDocumented(session, snapshot);
        // all validated: nothing to read (Azure answers a range starting at the size with 416)
        const tail =
          ahead.validatedBytes >= size ? Readable.from([]) : await this.blobs.readSnapshot(path, snapshot, undefined, ahead.validatedBytes);
        const result = await ahead.finish(tail);
        return { result, etag, snapshot };
      } catch (error) {
        // every way out ends the running pipeline (its spooled .pt removed)
        if (error instanceof BlobChangedError) ahead.break(AheadBreak.BLOB_CHANGED, 'the blob changed under the server');
        else ahead.break(AheadBreak.STORAGE_ERROR, `completion failed: ${(error as Error).message}`);
        if (!(error instanceof BlobChangedError)) throw error; // else committed by someone else: read it all
      }
    }
    ahead?.break(AheadBreak.NOT_STARTED, 'completion came before the first commit of the blocks'); // else broken already
    const etag = await blob.commit([], ids, 'unconditional');
    countAheadCompletion('full');
    const { snapshot } = await this.blobs.snapshot(path, etag);
    await this.assertCommittedAsDocumented(session, snapshot);
    const result = await runUploadPipeline({
      stream: await this.blobs.readSnapshot(path, snapshot),
      maxBytes: this.options.maxUploadBytes,
      spoolDir: this.options.spoolDir,
      onProgress: (_phase, bytes) => progress('VALIDATING', bytes),
      openStager: async () => ({ write: async () => {} }), // the bytes are stored already
    });
    return { result, etag, snapshot };
  }

  /**
   * The snapshot holds exactly the session's blocks, in order, each of its documented size (the
   * bytes validated ahead were read at those offsets): a block staged again between the check of
   * the block list and the commit is refused here.
   */
  private async assertCommittedAsDocumented(session: upload_session, snapshot: string): Promise<void> {
    const { blocks } = await this.blobs.sessionBlob(session.blob_path).committedBlocks(snapshot);
    const size = Number(session.size_bytes);
    if (holdsAsDocumented(blocks, expectedBlockIds(size, session.block_bytes), size, session.block_bytes)) return;
    await this.blobs.deleteSnapshot(session.blob_path, snapshot).catch(() => {}); // else with the blob
    throw new StagedBlocksLostError(session.blob_path); // the session goes back to OPEN (complete)
  }

  /** ValidationError (path blockIds) unless `ids` are the session's blocks and storage holds each of its size. */
  private async assertBlockList(session: upload_session, ids: string[]): Promise<void> {
    const problem = blockListProblem(ids, await this.stagedBlocks(session.blob_path), Number(session.size_bytes), session.block_bytes);
    if (problem) throw new ValidationError([{ path: 'blockIds', message: problem }]);
  }

  /** What storage holds for a session: staged blocks, and blocks a validation ahead committed. */
  private async stagedBlocks(path: string): Promise<{ id: string; size: number }[]> {
    const list = await this.blobs.sessionBlob(path).blockList();
    const sizes = new Map<string, number>();
    for (const b of [...list.committed, ...list.uncommitted]) sizes.set(b.id, b.size);
    return [...sizes].map(([id, size]) => ({ id, size }));
  }

  /** Starts validating a session ahead (or goes on with `resume`, one taken by a completion that did not happen). */
  private watchAhead(session: upload_session, resume?: ValidationAhead): void {
    if (session.state !== 'OPEN' || resume?.broken) return;
    let resumed = false;
    this.ahead.watch(session.id, session.user_id, session.expires_at, () => {
      if (resume) {
        resumed = true;
        return resume;
      }
      return new ValidationAhead(
        { sizeBytes: Number(session.size_bytes), blockBytes: session.block_bytes },
        this.blobs.sessionBlob(session.blob_path),
        {
          maxBytes: this.options.maxUploadBytes,
          spoolDir: this.options.spoolDir,
          onBreak: aheadBreakReporter(this.options.logger, session.id),
          // another replica completing the session: commit nothing more (it would drop blocks staged meanwhile)
          stillOpen: async () =>
            (await this.db.upload_session.findUnique({ where: { id: session.id }, select: { state: true } }))?.state === 'OPEN',
        },
      );
    });
    if (resume && !resumed) resume.break(AheadBreak.NOT_RESUMED, 'not taken back by the watch');
  }

  private userOf(principal: Principal): string {
    if (principal.role !== 'user') throw new RequestError(RequestErrorCode.FORBIDDEN, 'Only users upload LoRAs');
    return principal.userId;
  }

  private async find(principal: Principal, id: string): Promise<upload_session> {
    const userId = this.userOf(principal);
    const parsed = z.uuid().safeParse(id);
    const session = parsed.success ? await this.db.upload_session.findUnique({ where: { id: parsed.data.toLowerCase() } }) : null;
    if (!session || session.user_id !== userId) throw new UploadSessionNotFoundError(id);
    return session;
  }

  private assertOpen(session: upload_session): void {
    if (session.state === 'OPEN' && session.expires_at > new Date()) return;
    throw new UploadInterruptedError(
      session.state === 'OPEN' || session.state === 'EXPIRED'
        ? 'the upload session expired'
        : `the upload session is ${session.state.toLowerCase()}`,
    );
  }

  private async transition(id: string, from: SessionState, to: SessionState): Promise<boolean> {
    const { count } = await this.db.upload_session.updateMany({
      where: { id, state: from, expires_at: { gt: new Date() } },
      data: { state: to, updated_at: new Date() },
    });
    return count === 1;
  }

  private async end(id: string, from: SessionState[], to: SessionState): Promise<boolean> {
    const { count } = await this.db.upload_session.updateMany({
      where: { id, state: { in: from } },
      data: { state: to, updated_at: new Date() },
    });
    return count === 1;
  }

  private async sas(session: upload_session): Promise<{ url: string; expiresAt: Date }> {
    const left = Math.floor((session.expires_at.getTime() - Date.now()) / 1000);
    return this.blobs.uploadSas(session.blob_path, Math.max(1, Math.min(this.options.sasTtlSeconds, left)));
  }

  private view(session: upload_session, sas?: { url: string; expiresAt: Date }): UploadSessionView {
    const size = Number(session.size_bytes);
    return {
      id: session.id,
      state: session.state,
      fileName: session.file_name,
      name: session.name,
      sizeBytes: size,
      blockBytes: session.block_bytes,
      blockCount: blockCount(size, session.block_bytes),
      blockIds: expectedBlockIds(size, session.block_bytes),
      expiresAt: session.expires_at,
      uploadUrl: sas?.url ?? null,
      uploadUrlExpiresAt: sas?.expiresAt ?? null,
      stagedBlockIds: null,
      stagedBytes: null,
      loraId: session.lora_id?.toString() ?? null,
    };
  }
}
