import { z } from 'zod';
import type { Principal } from '../auth/principal.ts';
import type { Config } from '../config.ts';
import type { Db, Tx } from '../db/client.ts';
import { QuotaExceededError, type QuotaFigures, RequestError, RequestErrorCode } from '../domain/errors.ts';
import { parseArgs, uuid } from '../domain/validation.ts';
import { AuditAction, audit } from './audit.ts';

/** Per-user storage limits and the counters that uploads and deletes move under a row lock. */

export interface QuotaView {
  userId: string;
  maxStorageBytes: number;
  usedStorageBytes: number;
  availableBytes: number;
  utilizationPercent: number;
  maxLoraCount: number;
  loraCount: number;
  warning: boolean;
  loras: { id: string; name: string; sizeBytes: number }[];
}

export const QUOTA_WARNING_RATIO = 0.8;

interface QuotaRow {
  max_storage_bytes: bigint | null;
  max_lora_count: number | null;
  used_bytes: bigint;
  lora_count: number;
}

const setQuotaInput = z.object({
  userId: uuid,
  maxStorageBytes: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).nullish(),
  maxLoraCount: z.number().int().min(0).max(1_000_000).nullish(),
});

export class QuotaService {
  constructor(
    private readonly db: Db,
    private readonly defaults: Config['quota'],
  ) {}

  /** The caller's quota; admins may name any user. */
  async get(principal: Principal, userId?: string | null): Promise<QuotaView> {
    return this.view(this.resolveUser(principal, userId));
  }

  async set(
    principal: Principal,
    input: { userId: string; maxStorageBytes?: number | null; maxLoraCount?: number | null },
  ): Promise<QuotaView> {
    const args = parseArgs(setQuotaInput, input);
    await this.db.$transaction(async (tx) => {
      const limits = {
        ...(args.maxStorageBytes !== undefined
          ? { max_storage_bytes: args.maxStorageBytes === null ? null : BigInt(args.maxStorageBytes) }
          : {}),
        ...(args.maxLoraCount !== undefined ? { max_lora_count: args.maxLoraCount } : {}),
      };
      await tx.user_lora_quota.upsert({
        where: { user_id: args.userId },
        create: { user_id: args.userId, ...limits },
        update: { ...limits, updated_at: new Date() },
      });
      await audit(tx, principal, { action: AuditAction.QUOTA_SET, userId: args.userId, details: { ...input } });
    });
    return this.view(args.userId);
  }

  /** Locks (creating if needed) the user's quota row for the rest of the transaction. */
  async lock(tx: Tx, userId: string): Promise<QuotaFigures> {
    await tx.$executeRaw`INSERT INTO user_lora_quota (user_id) VALUES (${userId}::uuid) ON CONFLICT (user_id) DO NOTHING`;
    const rows = await tx.$queryRaw<QuotaRow[]>`
      SELECT max_storage_bytes, max_lora_count, used_bytes, lora_count
      FROM user_lora_quota WHERE user_id = ${userId}::uuid FOR UPDATE`;
    return this.figures(rows[0]);
  }

  /**
   * The figures every check uses: the locked counters plus the reservations of the user's live
   * resumable upload sessions (upload-sessions.ts). Sessions are created, completed and ended
   * under this same row lock, so the sum is exact while it is held.
   */
  async lockWithReservations(tx: Tx, userId: string): Promise<QuotaFigures> {
    return withReservations(await this.lock(tx, userId), await reservations(tx, userId));
  }

  /** Adds one LoRA of `sizeBytes` to a locked row, or throws QUOTA_EXCEEDED (reservations counted). */
  async charge(tx: Tx, userId: string, sizeBytes: number): Promise<void> {
    const f = await this.lockWithReservations(tx, userId);
    assertFits(f, sizeBytes);
    await tx.$executeRaw`
      UPDATE user_lora_quota SET used_bytes = used_bytes + ${sizeBytes}, lora_count = lora_count + 1, updated_at = now()
      WHERE user_id = ${userId}::uuid`;
  }

  /** Releases one LoRA of `sizeBytes` (called once, in the transaction that deletes it). */
  async release(tx: Tx, userId: string, sizeBytes: number): Promise<void> {
    await this.lock(tx, userId);
    await tx.$executeRaw`
      UPDATE user_lora_quota
      SET used_bytes = GREATEST(used_bytes - ${sizeBytes}, 0), lora_count = GREATEST(lora_count - 1, 0), updated_at = now()
      WHERE user_id = ${userId}::uuid`;
  }

  /**
   * Sets a locked row's counters to the user's READY LoRAs: 0 after an account deletion suspended
   * them all, what was restored after its cancel (limits are not checked: nothing new is stored).
   */
  async recount(tx: Tx, userId: string): Promise<void> {
    await this.lock(tx, userId);
    await tx.$executeRaw`
      UPDATE user_lora_quota q SET used_bytes = r.bytes, lora_count = r.n, updated_at = now()
      FROM (SELECT COALESCE(sum(size_bytes), 0)::bigint AS bytes, count(*)::int AS n
            FROM lora WHERE user_id = ${userId}::uuid AND status = 'READY') r
      WHERE q.user_id = ${userId}::uuid`;
  }

  /** Refuses early when a declared size cannot fit (no lock; the final check is in `charge`). */
  async precheck(userId: string, sizeBytes: number): Promise<void> {
    const row = await this.db.user_lora_quota.findUnique({ where: { user_id: userId } });
    assertFits(withReservations(this.figures(row ?? undefined), await reservations(this.db, userId)), sizeBytes);
  }

  private figures(row: QuotaRow | undefined): QuotaFigures {
    const maxQuotaBytes = row?.max_storage_bytes != null ? Number(row.max_storage_bytes) : this.defaults.defaultMaxBytes;
    const maxCount = row?.max_lora_count ?? this.defaults.defaultMaxCount;
    const currentUsageBytes = Number(row?.used_bytes ?? 0n);
    return {
      currentUsageBytes,
      maxQuotaBytes,
      availableBytes: Math.max(0, maxQuotaBytes - currentUsageBytes),
      currentCount: row?.lora_count ?? 0,
      maxCount,
    };
  }

  private resolveUser(principal: Principal, userId: string | null | undefined): string {
    if (principal.role === 'user') {
      if (userId && userId.toLowerCase() !== principal.userId) {
        throw new RequestError(RequestErrorCode.FORBIDDEN, "Only admins may read another user's quota");
      }
      return principal.userId;
    }
    if (principal.role === 'admin') {
      if (!userId) throw new RequestError(RequestErrorCode.BAD_USER_INPUT, 'Admins must pass userId');
      return parseArgs(uuid, userId, 'userId');
    }
    throw new RequestError(RequestErrorCode.FORBIDDEN, 'Not allowed');
  }

  private async view(userId: string): Promise<QuotaView> {
    const [row, loras] = await Promise.all([
      this.db.user_lora_quota.findUnique({ where: { user_id: userId } }),
      this.db.lora.findMany({
        where: { user_id: userId, status: 'READY' },
        select: { file_id: true, name: true, size_bytes: true },
        orderBy: [{ size_bytes: 'desc' }, { file_id: 'asc' }],
      }),
    ]);
    const f = this.figures(row ?? undefined);
    const byteRatio = f.maxQuotaBytes > 0 ? f.currentUsageBytes / f.maxQuotaBytes : f.currentUsageBytes > 0 ? 1 : 0;
    const countRatio = f.maxCount > 0 ? f.currentCount / f.maxCount : f.currentCount > 0 ? 1 : 0;
    return {
      userId,
      maxStorageBytes: f.maxQuotaBytes,
      usedStorageBytes: f.currentUsageBytes,
      availableBytes: f.availableBytes,
      utilizationPercent: Math.round(byteRatio * 10_000) / 100,
      maxLoraCount: f.maxCount,
      loraCount: f.currentCount,
      warning: byteRatio >= QUOTA_WARNING_RATIO || countRatio >= QUOTA_WARNING_RATIO,
      loras: loras.map((l) => ({ id: l.file_id.toString(), name: l.name, sizeBytes: Number(l.size_bytes) })),
    };
  }
}

/** Bytes and count reserved by the user's live resumable upload sessions. */
async function reservations(db: Db | Tx, userId: string): Promise<{ bytes: number; count: number }> {
  const [row] = await db.$queryRaw<{ bytes: bigint; n: number }[]>`
    SELECT COALESCE(sum(size_bytes), 0)::bigint AS bytes, count(*)::int AS n FROM upload_session
    WHERE user_id = ${userId}::uuid AND state IN ('OPEN', 'COMPLETING') AND expires_at > now()`;
  return { bytes: Number(row?.bytes ?? 0n), count: row?.n ?? 0 };
}

function withReservations(f: QuotaFigures, reserved: { bytes: number; count: number }): QuotaFigures {
  const currentUsageBytes = f.currentUsageBytes + reserved.bytes;
  return {
    ...f,
    currentUsageBytes,
    availableBytes: Math.max(0, f.maxQuotaBytes - currentUsageBytes),
    currentCount: f.currentCount + reserved.count,
  };
}

export function assertFits(f: QuotaFigures, sizeBytes: number): void {
  if (f.currentCount + 1 > f.maxCount) {
    throw new QuotaExceededError(f, `LoRA count limit reached (${f.currentCount} of ${f.maxCount})`);
  }
  if (f.currentUsageBytes + sizeBytes > f.maxQuotaBytes) {
    throw new QuotaExceededError(
      f,
      `LoRA storage quota exceeded: ${sizeBytes} bytes needed, ${f.availableBytes} of ${f.maxQuotaBytes} available`,
    );
  }
}
