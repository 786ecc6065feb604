import type { Principal } from '../auth/principal.ts';
import type { Db } from '../db/client.ts';
import { RequestError, RequestErrorCode } from '../domain/errors.ts';
import { Queue } from '../jobs/queues.ts';

/**
 * The product's figures, read from the database: users with at least one LoRA, LoRAs per user,
 * total and average storage, storage added in the last 24 h, workflows that used user LoRAs in
 * the last 30 days, and the background queues (blob deletions pending and failed). Served to admins
 * (`businessMetrics`) and exported as gauges on an interval (telemetry/business-gauges.ts).
 */

export interface BusinessMetrics {
  usersWithLoras: number;
  loraCount: number;
  lorasPerUser: number;
  storageBytes: number;
  storageBytesPerUser: number;
  storageGrowthBytes24h: number;
  workflowsUsingUserLoras30d: number;
  blobDeletionsPending: number;
  blobDeletionsFailed: number;
  /** Jobs waiting or running per pg-boss queue. */
  queueDepth: { queue: string; jobs: number }[];
  measuredAt: Date;
}

export class BusinessMetricsService {
  constructor(private readonly db: Db) {}

  /** Admins only. */
  async read(principal: Principal): Promise<BusinessMetrics> {
    if (principal.role !== 'admin') throw new RequestError(RequestErrorCode.FORBIDDEN, 'Only admins read the business metrics');
    return this.measure();
  }

  /** Four aggregate statements; no row leaves the database. */
  async measure(): Promise<BusinessMetrics> {
    const [loras] = await this.db.$queryRaw<{ users: number; loras: number; bytes: bigint; growth: bigint }[]>`
      SELECT count(DISTINCT user_id)::int AS users, count(*)::int AS loras,
             COALESCE(sum(size_bytes), 0)::bigint AS bytes,
             COALESCE(sum(size_bytes) FILTER (WHERE created_at > now() - interval '1 day'), 0)::bigint AS growth
      FROM lora WHERE status = 'READY' AND deleted_at IS NULL`;
    const [workflows] = await this.db.$queryRaw<{ n: number }[]>`
      SELECT count(DISTINCT workflow_id)::int AS n FROM lora_workflow_usage WHERE last_used_at > now() - interval '30 days'`;
    const jobs = await this.db.$queryRaw<{ name: string; state: string; n: number }[]>`
      SELECT name, state::text AS state, count(*)::int AS n FROM pgboss.job
      WHERE state IN ('created', 'retry', 'active', 'failed') GROUP BY name, state`;
    const users = loras?.users ?? 0;
    const count = loras?.loras ?? 0;
    const bytes = Number(loras?.bytes ?? 0);
    const depth = new Map<string, number>(Object.values(Queue).map((q) => [q, 0]));
    let failedDeletes = 0;
    for (const j of jobs) {
      if (j.state === 'failed') {
        if (j.name === Queue.DELETE_LORA_BLOB) failedDeletes += j.n;
      } else if (depth.has(j.name)) depth.set(j.name, (depth.get(j.name) ?? 0) + j.n);
    }
    return {
      usersWithLoras: users,
      loraCount: count,
      lorasPerUser: users > 0 ? count / users : 0,
      storageBytes: bytes,
      storageBytesPerUser: users > 0 ? bytes / users : 0,
      storageGrowthBytes24h: Number(loras?.growth ?? 0),
      workflowsUsingUserLoras30d: workflows?.n ?? 0,
      blobDeletionsPending: depth.get(Queue.DELETE_LORA_BLOB) ?? 0,
      blobDeletionsFailed: failedDeletes,
      queueDepth: [...depth].map(([queue, n]) => ({ queue, jobs: n })),
      measuredAt: new Date(),
    };
  }
}
