import type pg from 'pg';
import { z } from 'zod';
import type { Principal } from '../auth/principal.ts';
import type { Db } from '../db/client.ts';
import type { lora_workflow_usage } from '../db/generated/client.ts';
import { findLoraRow, type LoraSort, listLoraRows, type SortOrder } from '../db/lora-reads.ts';
import { NotFoundError, RequestError, RequestErrorCode } from '../domain/errors.ts';
import { type ExtractedMetadata, type LoraRow, type LoraView, storedTags, toLoraView } from '../domain/lora.ts';
import { displayName, LIMITS, parseArgs, parseLoraId, sanitizeDisplayName, userMetadata, userTags, uuid } from '../domain/validation.ts';
import { CacheEventType, cacheEvent, type EventBus, Topic } from '../events/bus.ts';
import type { JobQueue } from '../jobs/queues.ts';
import { Queue } from '../jobs/queues.ts';
import { AuditAction, audit } from './audit.ts';
import { unlinkContent } from './content-store.ts';
import { refreshGenOutData } from './gen-out-data.ts';
import type { QuotaService, QuotaView } from './quotas.ts';

/** The LoRA library: list, read, rename/retag, delete. Owners see their READY LoRAs; admins see all. */

export interface ListArgs {
  search?: string | null;
  tags?: string[] | null;
  baseModel?: string | null;
  limit?: number | null;
  offset?: number | null;
  sort?: LoraSort | null;
  order?: SortOrder | null;
  /** Admins only: whose LoRAs (unset = everyone's). */
  userId?: string | null;
}

export interface LoraPage {
  loras: LoraView[];
  total: number;
  limit: number;
  offset: number;
}

/** One workflow's use of one LoRA: a `lora_workflow_usage` row (the GraphQL `WorkflowRef`). */
export type WorkflowRef = lora_workflow_usage;

const listArgs = z.object({
  search: z
    .string()
    .transform((s) => sanitizeDisplayName(s))
    .pipe(z.string().max(LIMITS.searchMaxChars))
    .nullish(),
  tags: z.array(z.string().trim().min(1).max(LIMITS.tagMaxChars)).max(LIMITS.tagsMax).nullish(),
  baseModel: z.string().trim().min(1).max(50).nullish(),
  limit: z.number().int().min(1, 'at least 1').max(LIMITS.pageMax, `at most ${LIMITS.pageMax}`).nullish(),
  offset: z.number().int().min(0, 'must not be negative').max(1_000_000).nullish(),
  userId: uuid.nullish(),
});

const updateArgs = z.object({
  name: displayName.nullish(),
  tags: userTags.nullish(),
  metadata: userMetadata.nullish(),
});

export class LoraService {
  constructor(
    private readonly db: Db,
    private readonly reads: pg.Pool,
    private readonly quotas: QuotaService,
    private readonly jobs: JobQueue,
    private readonly bus: EventBus,
  ) {}

  async list(principal: Principal, input: ListArgs): Promise<LoraPage> {
    const args = parseArgs(listArgs, input);
    const limit = args.limit ?? 50;
    const offset = args.offset ?? 0;
    let userId: string | null;
    if (principal.role === 'admin') userId = args.userId ?? null;
    else if (principal.role === 'user') {
      if (args.userId && args.userId !== principal.userId)
        throw new RequestError(RequestErrorCode.FORBIDDEN, "Only admins may list another user's LoRAs");
      userId = principal.userId;
    } else throw new RequestError(RequestErrorCode.FORBIDDEN, 'Not allowed');
    const { rows, total } = await listLoraRows(
      this.reads,
      { userId, search: args.search || null, tags: args.tags ?? null, baseModel: args.baseModel ?? null, statuses: ['READY'] },
      { sort: input.sort ?? 'CREATED_AT', order: input.order ?? 'DESC', limit, offset },
    );
    return { loras: rows.map(toLoraView), total, limit, offset };
  }

  async get(principal: Principal, id: string): Promise<LoraView> {
    return toLoraView(await this.visibleRow(principal, id));
  }

  async update(
    principal: Principal,
    id: string,
    input: { name?: string | null; tags?: string[] | null; metadata?: unknown },
  ): Promise<LoraView> {
    const args = parseArgs(updateArgs, input);
    const row = await this.visibleRow(principal, id);
    await this.db.$transaction(async (tx) => {
      const now = new Date();
      const metadataPatch = args.metadata ?? undefined;
      const mergedUserMetadata = metadataPatch ? { ...((row.user_metadata ?? {}) as object), ...metadataPatch } : undefined;
      const baseModelOverride = metadataPatch && 'baseModel' in metadataPatch ? metadataPatch.baseModel : undefined;
      await tx.lora.update({
        where: { file_id: BigInt(row.file_id) },
        data: {
          updated_at: now,
          ...(args.name ? { name: args.name } : {}),
          ...(mergedUserMetadata ? { user_metadata: mergedUserMetadata } : {}),
          ...(baseModelOverride !== undefined
            ? baseModelOverride === null
              ? detectedBaseModel(row)
              : { base_model: baseModelOverride, base_model_source: 'USER' }
            : {}),
        },
      });
      if (args.name || args.tags) {
        await tx.flat_file.update({
          where: { id: BigInt(row.file_id) },
          data: { ...(args.name ? { name: args.name } : {}), ...(args.tags ? { tags: storedTags(args.tags) } : {}) },
        });
      }
      if (metadataPatch) await refreshGenOutData(tx, BigInt(row.file_id)); // trigger words, base model: as the API shows them
      await audit(tx, principal, {
        action: AuditAction.UPDATE,
        userId: row.user_id,
        loraId: BigInt(row.file_id),
        details: { name: args.name ?? undefined, tags: args.tags ?? undefined, metadata: metadataPatch },
      });
    });
    await this.bus.publish(Topic.CACHE_EVENTS, cacheEvent(CacheEventType.LORA_UPDATED, { loraId: id, userId: row.user_id }));
    return this.get(principal, id);
  }

  /**
   * Soft delete of a READY LoRA: hidden + DELETED + quota released + blob-deletion job, in one
   * transaction. Deleting an already-deleted LoRA of one's own succeeds again and releases
   * nothing; an upload still in flight answers LORA_NOT_FOUND (its finalize decides its fate).
   */
  async delete(principal: Principal, id: string): Promise<{ loraId: string; quota: QuotaView }> {
    const fileId = this.parseId(id);
    const outcome = await this.db.$transaction(async (tx) => {
      const row = (await findLoraRow(tx, fileId, true)) as (LoraRow & { blob_path: string; blob_snapshot: string | null }) | null;
      if (!row || !this.owns(principal, row)) throw new NotFoundError(id);
      if (row.status === 'DELETED') return { row, changed: false, job: undefined, jobId: null };
      // An upload in flight (or failed) is not a LoRA yet: not deletable, as for any id one cannot see.
      if (row.status !== 'READY') throw new NotFoundError(id);
      const now = new Date();
      // The row is locked (FOR UPDATE) and READY: the status cannot change under us before the commit.
      await tx.lora.update({ where: { file_id: fileId }, data: { status: 'DELETED', deleted_at: now, updated_at: now } });
      await tx.flat_file.update({ where: { id: fileId }, data: { hidden: true } });
      const snapshot = row.blob_snapshot ?? null;
      const job = { loraId: id, userId: row.user_id, blobPath: row.blob_path, snapshot };
      const jobId = await this.jobs.enqueue(tx, Queue.DELETE_LORA_BLOB, job);
      // one reference fewer on the stored content; its base goes by its own job at zero (never here)
      await unlinkContent(tx, this.jobs, row.blob_path);
      await audit(tx, principal, {
        action: AuditAction.DELETE,
        userId: row.user_id,
        loraId: fileId,
        details: { sizeBytes: Number(row.size_bytes), previousStatus: row.status },
      });
      // Last, so the user's quota row is locked only for the update and the commit.
      await this.quotas.release(tx, row.user_id, Number(row.size_bytes));
      return { row, changed: true, job, jobId };
    });
    if (outcome.changed && outcome.job) {
      // Download URLs already handed out stop working now (404), not when the job runs.
      // (the LoRA's own snapshot, or its own blob: the same work whoever else holds the content)
      await this.jobs.deleteBlobNow(outcome.job, outcome.jobId);
      await this.bus.publish(Topic.CACHE_EVENTS, cacheEvent(CacheEventType.LORA_DELETED, { loraId: id, userId: outcome.row.user_id }));
    }
    const quota = await this.quotas.get(
      principal.role === 'admin' ? principal : { role: 'user', userId: outcome.row.user_id },
      outcome.row.user_id,
    );
    return { loraId: id, quota };
  }

  /** Workflows that used each LoRA, most recent first; one query for any number of LoRAs. */
  async workflowsUsing(loraIds: readonly string[]): Promise<WorkflowRef[][]> {
    const ids = loraIds.map((id) => BigInt(id));
    const rows = await this.db.lora_workflow_usage.findMany({
      where: { lora_id: { in: ids } },
      orderBy: [{ last_used_at: 'desc' }, { workflow_id: 'asc' }],
    });
    const byLora = new Map<string, WorkflowRef[]>();
    for (const r of rows) {
      const key = r.lora_id.toString();
      const list = byLora.get(key) ?? [];
      list.push(r);
      byLora.set(key, list);
    }
    return loraIds.map((id) => byLora.get(id) ?? []);
  }

  private parseId(id: string): bigint {
    const fileId = parseLoraId(id);
    if (fileId === null) throw new NotFoundError(id);
    return fileId;
  }

  private owns(principal: Principal, row: LoraRow): boolean {
    if (principal.role === 'admin') return true;
    return principal.role === 'user' && row.user_id === principal.userId;
  }

  /** The row if the caller may see it: owners see READY rows, admins any; else LORA_NOT_FOUND. */
  private async visibleRow(principal: Principal, id: string): Promise<LoraRow> {
    const row = await findLoraRow(this.db, this.parseId(id));
    if (!row || !this.owns(principal, row)) throw new NotFoundError(id);
    if (principal.role !== 'admin' && row.status !== 'READY') throw new NotFoundError(id);
    return row;
  }
}

/** Clearing a user's base-model override restores what was detected from the file. */
function detectedBaseModel(row: LoraRow): { base_model: string | null; base_model_source: string | null } {
  const extracted = (row.metadata ?? {}) as ExtractedMetadata;
  return { base_model: extracted.detectedBaseModel ?? null, base_model_source: extracted.detectedBaseModelSource ?? null };
}
