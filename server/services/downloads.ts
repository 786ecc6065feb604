import { z } from 'zod';
import type { Principal } from '../auth/principal.ts';
import type { Db } from '../db/client.ts';
import { NotFoundError } from '../domain/errors.ts';
import { downloadFileName, type LoraFormat } from '../domain/lora.ts';
import { LIMITS, parseArgs, parseLoraId, sharedLoraName } from '../domain/validation.ts';
import { BlobNotFoundError, type BlobStore, type SasLink } from '../storage/blob-store.ts';
import { AuditAction, audit } from './audit.ts';
import type { GrantService } from './grants.ts';

/**
 * What machines may do: fetch short-lived read-only URLs (user LoRAs only with a job grant for
 * the owner) and record usage. A valid grant for user U naming a LoRA that is not U's answers
 * LORA_NOT_FOUND, exactly as for an id that does not exist: nothing tells whether it does.
 */

export interface DownloadView {
  loraId: string | null;
  sharedName: string | null;
  url: string;
  sha256: string | null;
  sizeBytes: number;
  /** User LoRAs: the uploaded name's stem with the detected format's extension (downloadFileName). */
  fileName: string;
  /** The detected format (user LoRAs); null for the shared library. */
  format: LoraFormat | null;
  userId: string | null;
  etag: string;
  expiresAt: Date;
}

const usageArgs = z.object({
  loraIds: z.array(z.string()).min(1, 'at least one id').max(LIMITS.usageIdsMax),
  workflowId: z.string().trim().min(1).max(LIMITS.workflowIdMaxChars).nullish(),
  workflowName: z.string().trim().max(LIMITS.nameMaxChars).nullish(),
});

/** A SAS link, or LORA_NOT_FOUND (named `id`) when the blob is gone: the answer for any id one cannot have. */
export async function sasOrNotFound(id: string, sign: () => Promise<SasLink>): Promise<SasLink> {
  try {
    return await sign();
  } catch (error) {
    if (error instanceof BlobNotFoundError) throw new NotFoundError(id);
    throw error;
  }
}

/** The row a download link is made from (the caller's, READY: each service checks), or null for a malformed or missing id. */
export async function downloadRow(db: Db, fileId: bigint | null) {
  if (fileId === null) return null;
  return db.lora.findUnique({
    where: { file_id: fileId },
    select: {
      user_id: true,
      status: true,
      blob_path: true,
      blob_snapshot: true,
      name: true,
      sha256: true,
      size_bytes: true,
      file_name: true,
      format: true,
    },
  });
}

export class DownloadService {
  constructor(
    private readonly db: Db,
    private readonly blobs: BlobStore,
    private readonly grants: GrantService,
    private readonly sasTtlSeconds: number,
  ) {}

  async loraDownload(principal: Principal, id: string, grantToken: string): Promise<DownloadView> {
    const grant = await this.grants.check(grantToken);
    const fileId = parseLoraId(id);
    const row = await downloadRow(this.db, fileId);
    if (row?.status !== 'READY' || row.user_id !== grant.userId) throw new NotFoundError(id);
    const fileName = downloadFileName(row.file_name, row.format);
    const link = await sasOrNotFound(id, () => this.blobs.loraSas(row.blob_path, this.sasTtlSeconds, fileName, row.blob_snapshot));
    await this.db.$transaction((tx) =>
      audit(tx, principal, {
        action: AuditAction.DOWNLOAD_GRANTED,
        userId: row.user_id,
        loraId: fileId,
        details: { jobId: grant.jobId, expiresAt: link.expiresAt },
      }),
    );
    return {
      loraId: id,
      sharedName: null,
      url: link.url,
      sha256: row.sha256.trim(),
      sizeBytes: Number(row.size_bytes),
      fileName,
      format: row.format,
      userId: row.user_id,
      etag: link.etag,
      expiresAt: link.expiresAt,
    };
  }

  async sharedDownload(principal: Principal, name: string): Promise<DownloadView> {
    const safeName = parseArgs(sharedLoraName, name, 'name');
    const link = await sasOrNotFound(safeName, () => this.blobs.sharedSas(safeName, this.sasTtlSeconds));
    await this.db.$transaction((tx) => audit(tx, principal, { action: AuditAction.SHARED_DOWNLOAD_GRANTED, details: { name: safeName } }));
    return {
      loraId: null,
      sharedName: safeName,
      url: link.url,
      sha256: null,
      sizeBytes: link.sizeBytes,
      fileName: safeName.split('/').pop() ?? safeName,
      format: null,
      userId: null,
      etag: link.etag,
      expiresAt: link.expiresAt,
    };
  }

  /** Counts one use of each LoRA the grant's user owns; others are ignored. Returns how many counted. */
  async recordUsage(
    principal: Principal,
    input: {
      grant: string;
      loraIds: string[];
      workflowId?: string | null;
      workflowName?: string | null;
    },
  ): Promise<number> {
    const grant = await this.grants.check(input.grant);
    const args = parseArgs(usageArgs, input);
    const ids = [...new Set(args.loraIds.map(parseLoraId).filter((v): v is bigint => v !== null))];
    if (ids.length === 0) return 0;
    return this.db.$transaction(async (tx) => {
      const now = new Date();
      const owned = await tx.lora.findMany({
        where: { file_id: { in: ids }, user_id: grant.userId, status: 'READY' },
        select: { file_id: true },
      });
      const ownedIds = owned.map((o) => o.file_id);
      if (ownedIds.length === 0) return 0;
      await tx.lora.updateMany({
        where: { file_id: { in: ownedIds } },
        data: { usage_count: { increment: 1 }, last_used_at: now },
      });
      if (args.workflowId) {
        const workflowId = args.workflowId;
        const workflowName = args.workflowName ?? null;
        for (const loraId of ownedIds) {
          await tx.$executeRaw`
            INSERT INTO lora_workflow_usage (lora_id, workflow_id, workflow_name, use_count, last_used_at)
            VALUES (${loraId}, ${workflowId}, ${workflowName}, 1, ${now})
            ON CONFLICT (lora_id, workflow_id) DO UPDATE SET
              use_count = lora_workflow_usage.use_count + 1,
              last_used_at = EXCLUDED.last_used_at,
              workflow_name = COALESCE(EXCLUDED.workflow_name, lora_workflow_usage.workflow_name)`;
        }
      }
      await audit(tx, principal, {
        action: AuditAction.USAGE_RECORDED,
        userId: grant.userId,
        details: { jobId: grant.jobId, loraIds: ownedIds.map(String), workflowId: args.workflowId ?? null },
      });
      return ownedIds.length;
    });
  }
}
