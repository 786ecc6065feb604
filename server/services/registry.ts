import { randomUUID } from 'node:crypto';
import type { Principal } from '../auth/principal.ts';
import type { Db } from '../db/client.ts';
import { findLoraRow } from '../db/lora-reads.ts';
import { UploadInterruptedError } from '../domain/errors.ts';
import { loraGenOutData, type UploadSource, ValidationStatus } from '../domain/flat-file-contract.ts';
import { type ExtractedMetadata, formatExtension, type LoraFormat, type LoraView, storedTags, toLoraView } from '../domain/lora.ts';
import type { JobQueue } from '../jobs/queues.ts';
import { type BlobStore, contentBlobPath } from '../storage/blob-store.ts';
import { assertAccountActive } from './accounts.ts';
import { AuditAction, audit } from './audit.ts';
import { commitLink, type LinkInput, LinkRaceError, prepareLink, type StoredContent } from './content-store.ts';
import type { QuotaService } from './quotas.ts';

/**
 * A LoRA's life from first byte to READY. `begin` reserves the id (and so the blob path) as an
 * invisible UPLOADING row; the caller stores the blob there; `finalize` then — in one
 * transaction — locks the owner's quota row, checks bytes and count, marks the row READY and
 * fills `flat_file`. Any failure before READY leaves nothing a user can see (`discard`).
 */

const UPLOAD_GONE = 'the upload was cancelled or expired before it completed';

export interface BeginInput {
  userId: string;
  name: string;
  fileName: string;
  format: LoraFormat;
  tags: string[];
  /** Where the upload's bytes are (a resumable session's blob); default a new `content/{uuid}.{ext}`. */
  blobPath?: string;
}

export interface FinalizeInput {
  fileId: bigint;
  sizeBytes: number;
  sha256: string;
  baseModel: string | null;
  baseModelSource: string | null;
  rank: number | null;
  alpha: number | null;
  metadata: ExtractedMetadata;
  /** What the uploader set (overrides what was extracted). */
  userMetadata?: Record<string, unknown>;
  /** Recorded in gen_out_data.upload_source (docs/flat-file.md). */
  uploadSource: UploadSource;
  /** The upload's blob ETag as committed (its content is linked only while it still matches). */
  blobEtag?: string;
  /** A resumable upload's session (COMPLETING → COMPLETED in the same transaction: its reservation ends as the LoRA is charged). */
  sessionId?: string;
}

export class LoraRegistry {
  constructor(
    private readonly db: Db,
    private readonly blobs: BlobStore,
    private readonly quotas: QuotaService,
    private readonly jobs: JobQueue,
  ) {}

  /** ACCOUNT_DELETED when the user's LoRA account is deleted (the early check; finalize checks again under its lock). */
  async assertActive(userId: string): Promise<void> {
    await assertAccountActive(this.db, userId);
  }

  async begin(input: BeginInput): Promise<{ fileId: bigint; blobPath: string }> {
    return this.db.$transaction(async (tx) => {
      const file = await tx.flat_file.create({
        data: {
          user_id: input.userId,
          name: input.name,
          hidden: true,
          tags: storedTags(input.tags),
          mime_type: 'application/octet-stream',
        },
        select: { id: true },
      });
      // A neutral name (no user, no hash): once READY it may be the stored content of other users' LoRAs too.
      const blobPath = input.blobPath ?? contentBlobPath(randomUUID(), formatExtension(input.format));
      await tx.lora.create({
        data: {
          file_id: file.id,
          user_id: input.userId,
          status: 'UPLOADING',
          name: input.name,
          file_name: input.fileName,
          format: input.format,
          size_bytes: 0n,
          sha256: '0'.repeat(64),
          blob_path: blobPath,
        },
      });
      return { fileId: file.id, blobPath };
    });
  }

  /**
   * Throws QUOTA_EXCEEDED (nothing changed) when the finished file does not fit, and
   * UPLOAD_INTERRUPTED when the row is no longer an upload in flight (the reconciler removed it
   * as stale): READY is only ever reached from UPLOADING, never from DELETED.
   */
  async finalize(actor: Principal, input: FinalizeInput): Promise<LoraView> {
    const own = await this.db.lora.findUnique({ where: { file_id: input.fileId }, select: { blob_path: true } });
    if (!own) throw new UploadInterruptedError(UPLOAD_GONE);
    const link = { sha256: input.sha256, sizeBytes: input.sizeBytes, ownPath: own.blob_path, ownEtag: input.blobEtag };
    for (let attempt = 1; ; attempt++) {
      // Content stored once: this LoRA's own snapshot of the content's base (content-store.ts), taken outside the transaction.
      const stored = await prepareLink(this.db, this.blobs, this.jobs, link);
      // the own blob was touched: a retry that falls back to it again expects the ETag it has now
      if (stored.blobPath === link.ownPath) link.ownEtag = stored.etag;
      try {
        await this.ready(actor, input, link, stored);
        break;
      } catch (error) {
        // not READY: the snapshot taken for it goes (on a shared base it would outlive the upload)
        await this.blobs.deleteSnapshot(stored.blobPath, stored.snapshot).catch(() => {});
        if (!(error instanceof LinkRaceError) || attempt >= 3) throw error;
      }
    }
    const row = await findLoraRow(this.db, input.fileId);
    if (!row) throw new Error(`LoRA ${input.fileId} vanished after finalize`);
    return toLoraView(row);
  }

  private async ready(actor: Principal, input: FinalizeInput, link: LinkInput, stored: StoredContent): Promise<void> {
    await this.db.$transaction(async (tx) => {
      // The row first, the quota row last: the same lock order as deleteLora and the reconciler.
      const [locked] = await tx.$queryRaw<{ file_id: bigint }[]>`
        SELECT file_id FROM lora
        WHERE file_id = ${input.fileId} AND status = 'UPLOADING' AND deleted_at IS NULL FOR UPDATE`;
      if (!locked) throw new UploadInterruptedError(UPLOAD_GONE);
      const row = await tx.lora.findUniqueOrThrow({ where: { file_id: input.fileId } });
      await assertAccountActive(tx, row.user_id); // deleted meanwhile: ACCOUNT_DELETED, the caller discards the upload
      if (input.sessionId) {
        const done = await tx.$executeRaw`
          UPDATE upload_session SET state = 'COMPLETED', lora_id = ${input.fileId}, updated_at = now()
          WHERE id = ${input.sessionId}::uuid AND state = 'COMPLETING'`;
        if (done !== 1) throw new UploadInterruptedError(UPLOAD_GONE);
      }
      await commitLink(tx, this.blobs, this.jobs, link, stored);
      const now = new Date();
      const ready = {
        status: 'READY',
        blob_path: stored.blobPath,
        blob_snapshot: stored.snapshot,
        size_bytes: BigInt(input.sizeBytes),
        sha256: input.sha256,
        base_model: input.baseModel,
        base_model_source: input.baseModelSource,
        rank: input.rank,
        alpha: input.alpha,
        metadata: { ...input.metadata, detectedBaseModel: input.baseModel, detectedBaseModelSource: input.baseModelSource } as object,
        user_metadata: (input.userMetadata ?? {}) as object,
        created_at: now,
        updated_at: now,
      } as const;
      await tx.lora.update({ where: { file_id: input.fileId }, data: ready });
      // the platform's copy is what the API will show of the row just written (no re-read under the quota lock)
      const shown = toLoraView({ ...row, ...ready, tags: null });
      await tx.flat_file.update({
        where: { id: input.fileId },
        data: {
          hidden: false,
          created_at: now,
          url: this.blobs.snapshotUrl(stored.blobPath, stored.snapshot),
          gen_out_data: loraGenOutData(shown, { uploadSource: input.uploadSource, validationStatus: ValidationStatus.SAFE }) as object,
        },
      });
      await audit(tx, actor, {
        action: AuditAction.UPLOAD,
        userId: row.user_id,
        loraId: input.fileId,
        details: { sizeBytes: input.sizeBytes, sha256: input.sha256, source: input.uploadSource },
      });
      // Last, so the user's quota row is locked only for the check, the update and the commit.
      await this.quotas.charge(tx, row.user_id, input.sizeBytes);
    });
  }

  /** Removes an upload that never became READY (its rows; the caller removes any blob). */
  async discard(fileId: bigint): Promise<void> {
    await this.db.$transaction(async (tx) => {
      const row = await tx.lora.findUnique({ where: { file_id: fileId }, select: { status: true } });
      if (row && row.status !== 'UPLOADING' && row.status !== 'FAILED') return;
      await tx.flat_file.deleteMany({ where: { id: fileId } });
    });
  }
}
