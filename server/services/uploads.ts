import { basename, extname } from 'node:path';
import type { Readable } from 'node:stream';
import { z } from 'zod';
import type { Principal } from '../auth/principal.ts';
import { FileTooLargeError, RequestError, RequestErrorCode, ValidationError } from '../domain/errors.ts';
import { CLIENT_UPLOAD_SOURCES, UploadSource } from '../domain/flat-file-contract.ts';
import type { LoraView } from '../domain/lora.ts';
import { LIMITS, parseArgs, sanitizeDisplayName, userMetadata, userTags } from '../domain/validation.ts';
import { type EventBus, Topic, type UploadPhase } from '../events/bus.ts';
import { Limit, type RateLimits } from '../limits/rate-limits.ts';
import type { BlobStore } from '../storage/blob-store.ts';
import { traceUpload, type UploadTelemetry } from '../telemetry/upload-telemetry.ts';
import { BlockStager } from '../uploads/block-stager.ts';
import { runUploadPipeline } from '../uploads/pipeline.ts';
import { UploadSlots } from '../uploads/upload-slots.ts';
import type { EventService } from './events.ts';
import type { QuotaService, QuotaView } from './quotas.ts';
import type { LoraRegistry } from './registry.ts';

/**
 * uploadLora: a stream of up to MAX_UPLOAD_BYTES becomes a READY LoRA — or a typed error with
 * nothing left behind (no visible row, no committed blob, quota untouched).
 */

export interface IncomingFile {
  filename: string;
  createReadStream(): Readable;
  /** Settles when the request carrying the file is over; a rejection (malformed rest, idle client) fails the upload. */
  requestEnded?: Promise<void>;
}

export interface UploadInput {
  file: IncomingFile;
  name?: string | null;
  tags?: string[] | null;
  metadata?: unknown;
  uploadId?: string | null;
  sizeBytes?: number | null;
  /** Where the upload comes from (Studio says so); default `api`. */
  uploadSource?: string | null;
}

export interface UploadOptions {
  maxUploadBytes: number;
  spoolDir: string;
  /** At most this many progress events per second per upload. @default 10 */
  progressPerSecond?: number;
  /** Uploads running at once, per user and in this process; more are refused TOO_MANY_UPLOADS. */
  concurrency: { perUser: number; perProcess: number };
}

const uploadArgs = z.object({
  name: z.string().transform(sanitizeDisplayName).pipe(z.string().min(1, 'must not be empty').max(LIMITS.nameMaxChars)).nullish(),
  tags: userTags.nullish(),
  metadata: userMetadata.nullish(),
  uploadId: z.uuid('must be a UUID').nullish(),
  sizeBytes: z.number().int().min(0).nullish(),
  uploadSource: z.enum(CLIENT_UPLOAD_SOURCES).nullish(),
});

export class UploadService {
  readonly slots: UploadSlots;

  constructor(
    private readonly blobs: BlobStore,
    private readonly registry: LoraRegistry,
    private readonly quotas: QuotaService,
    private readonly events: EventService,
    private readonly bus: EventBus,
    private readonly limits: RateLimits,
    private readonly options: UploadOptions,
  ) {
    this.slots = new UploadSlots(options.concurrency);
  }

  async upload(principal: Principal, input: UploadInput): Promise<{ lora: LoraView; quota: QuotaView }> {
    if (principal.role !== 'user') throw new RequestError(RequestErrorCode.FORBIDDEN, 'Only users upload LoRAs');
    // before a byte is read: RATE_LIMITED (uploads started per window), then TOO_MANY_UPLOADS (at once)
    await this.limits.consume(Limit.UPLOADS, principal.userId);
    let releaseSlot: (() => void) | undefined;
    let releasePlace: (() => void) | undefined;
    try {
      releaseSlot = this.slots.take(principal.userId);
      releasePlace = await this.limits.takeUploadPlace(principal.userId);
    } catch (error) {
      releaseSlot?.();
      await this.limits.refund(Limit.UPLOADS, principal.userId); // a refused start is not a start
      throw error;
    }
    const [place, slot] = [releasePlace, releaseSlot];
    return traceUpload(async (telemetry) => {
      try {
        return await this.receive(principal, input, telemetry);
      } finally {
        place();
        slot();
      }
    });
  }

  private async receive(
    principal: Extract<Principal, { role: 'user' }>,
    input: UploadInput,
    telemetry: UploadTelemetry,
  ): Promise<{ lora: LoraView; quota: QuotaView }> {
    const userId = principal.userId;
    const stream = input.file.createReadStream();
    const progress = telemetry.observe(this.progressReporter(input.uploadId ?? null, userId, input.sizeBytes ?? null));
    let fileId: bigint | undefined;
    let blobPath: string | undefined;
    let stager: BlockStager | undefined;
    let committed = false;
    try {
      const args = parseArgs(uploadArgs, { ...input, file: undefined });
      if (args.uploadId && !(await this.events.claimUpload(userId, args.uploadId))) {
        throw new ValidationError([{ path: 'uploadId', message: 'already used by another upload' }]);
      }
      await this.registry.assertActive(userId); // a deleted account: ACCOUNT_DELETED before a byte is stored
      if (args.sizeBytes != null) {
        if (args.sizeBytes > this.options.maxUploadBytes) throw new FileTooLargeError(this.options.maxUploadBytes);
        await this.quotas.precheck(userId, args.sizeBytes);
      }
      const fileName = displayFileName(input.file.filename);
      const name =
        args.name ?? (sanitizeDisplayName(basename(fileName, extname(fileName))).slice(0, LIMITS.nameMaxChars) || 'Untitled LoRA');
      progress('RECEIVING', 0);
      const result = await runUploadPipeline({
        stream,
        maxBytes: this.options.maxUploadBytes,
        spoolDir: this.options.spoolDir,
        onProgress: progress,
        openStager: async (format) => {
          telemetry.staging(format);
          const begun = await this.registry.begin({ userId, name, fileName, format, tags: args.tags ?? [] });
          fileId = begun.fileId;
          blobPath = begun.blobPath;
          stager = new BlockStager(this.blobs.stagedBlob(begun.blobPath));
          return stager;
        },
      });
      // the rest of the request must have arrived, well-formed, before anything is committed
      await input.file.requestEnded;
      progress('STORING', result.sizeBytes);
      const blobEtag = await result.stager.commit('application/octet-stream');
      committed = true;
      telemetry.phase('finalize');
      const lora = await this.registry.finalize(principal, {
        fileId: fileId as bigint,
        sizeBytes: result.sizeBytes,
        sha256: result.sha256,
        baseModel: args.metadata?.baseModel ?? result.baseModel,
        baseModelSource: args.metadata?.baseModel ? 'USER' : result.baseModelSource,
        rank: result.rank,
        alpha: result.alpha,
        metadata: { ...result.metadata, autoV3: result.hashes.autoV3 },
        userMetadata: args.metadata ?? {},
        uploadSource: args.uploadSource ?? UploadSource.API,
        blobEtag,
      });
      progress('DONE', result.sizeBytes, { loraId: lora.id });
      return { lora, quota: await this.quotas.get(principal) };
    } catch (error) {
      stream.destroy();
      await stager?.abort();
      if (committed && blobPath) await this.blobs.delete(blobPath).catch(() => {});
      if (fileId !== undefined) await this.registry.discard(fileId).catch(() => {});
      progress('FAILED', 0, { error: (error as { code?: string }).code ?? RequestErrorCode.INTERNAL_SERVER_ERROR });
      throw error;
    }
  }

  /** Publishes uploadProgress for `uploadId` (at most `progressPerSecond` RECEIVING/VALIDATING events). */
  progressReporter(uploadId: string | null, userId: string, totalBytes: number | null) {
    const minGapMs = 1000 / (this.options.progressPerSecond ?? 10);
    let lastPhase: UploadPhase | undefined;
    let lastAt = 0;
    let lastBytes = 0;
    return (phase: UploadPhase, bytes: number, extra: { loraId?: string; error?: string } = {}) => {
      if (!uploadId) return;
      const now = Date.now();
      if ((phase === 'RECEIVING' || phase === 'VALIDATING') && phase === lastPhase && now - lastAt < minGapMs) return;
      lastPhase = phase;
      lastAt = now;
      lastBytes = Math.max(lastBytes, bytes);
      void this.bus.publish(Topic.UPLOAD_PROGRESS, uploadId, {
        uploadId,
        userId,
        phase,
        bytesReceived: lastBytes,
        totalBytes,
        loraId: extra.loraId ?? null,
        error: extra.error ?? null,
      });
    };
  }
}

/** The user's file name for display: sanitized, bounded; never part of any path. */
export function displayFileName(raw: string | undefined): string {
  const cleaned = sanitizeDisplayName(basename((raw ?? '').replaceAll('\\', '/')));
  return cleaned.slice(0, 255) || 'upload';
}
