import { join } from 'node:path';
import type pg from 'pg';
import type { Logger } from 'pino';
import type { DownloadTokens } from '../auth/download-tokens.ts';
import type { GrantSigner } from '../auth/grants.ts';
import type { Config } from '../config.ts';
import type { Db } from '../db/client.ts';
import type { EventBus } from '../events/bus.ts';
import type { JobQueue } from '../jobs/queues.ts';
import type { RateLimits } from '../limits/rate-limits.ts';
import type { BlobStore } from '../storage/blob-store.ts';
import { AccountService } from './accounts.ts';
import { AuditLogService } from './audit-log.ts';
import { BusinessMetricsService } from './business-metrics.ts';
import { CacheStatsService } from './cache-stats.ts';
import { DownloadService } from './downloads.ts';
import { EventService } from './events.ts';
import { GrantService } from './grants.ts';
import { LoraService } from './loras.ts';
import { OwnerDownloadService } from './owner-downloads.ts';
import { QuotaService } from './quotas.ts';
import { LoraRegistry } from './registry.ts';
import { UploadSessionService } from './upload-sessions.ts';
import { UploadService } from './uploads.ts';

export interface ServiceDeps {
  config: Config;
  db: Db;
  /** node-postgres pool for the hot list reads (see server/db/README.md). */
  reads: pg.Pool;
  blobs: BlobStore;
  jobs: JobQueue;
  bus: EventBus;
  grantSigner: GrantSigner;
  /** Rate limits (server/limits/rate-limits.ts), shared by the services and the schema's mutation limit. */
  limits: RateLimits;
  /** The server's logger, for services that say what happened in the background. @default none */
  logger?: Logger;
  /** Owner download links (auth/download-tokens.ts) and the base URL they point at (PUBLIC_URL, else the listening address). */
  downloadTokens: DownloadTokens;
  publicUrl: () => string;
}

export type Services = ReturnType<typeof createServices>;

/** Every service, wired once per process; resolvers reach them through `ctx.services`. */
export function createServices({
  config,
  db,
  reads,
  blobs,
  jobs,
  bus,
  grantSigner,
  limits,
  logger,
  downloadTokens,
  publicUrl,
}: ServiceDeps) {
  const quotas = new QuotaService(db, config.quota);
  const grants = new GrantService(db, grantSigner, config.auth.grantMaxTtlSeconds, limits);
  const registry = new LoraRegistry(db, blobs, quotas, jobs);
  const events = new EventService(db, bus);
  const uploads = new UploadService(blobs, registry, quotas, events, bus, limits, {
    maxUploadBytes: config.maxUploadBytes,
    spoolDir: join(config.dataDir, 'spool'),
    concurrency: { perUser: config.uploadLimits.perUser, perProcess: config.uploadLimits.perProcess },
  });
  return {
    limits,
    events,
    quotas,
    grants,
    loras: new LoraService(db, reads, quotas, jobs, bus),
    downloads: new DownloadService(db, blobs, grants, config.storage.sasTtlSeconds),
    ownerDownloads: new OwnerDownloadService(db, blobs, downloadTokens, {
      ttlSeconds: config.storage.sasTtlSeconds,
      publicUrl,
      concurrency: { perUser: config.ownerDownloads.perUser, perProcess: config.ownerDownloads.perProcess },
    }),
    cacheStats: new CacheStatsService(db),
    auditLog: new AuditLogService(db),
    accounts: new AccountService(db, quotas, jobs, bus, config.retention.accountPurgeDelayMs),
    businessMetrics: new BusinessMetricsService(db),
    registry,
    uploads,
    uploadSessions: new UploadSessionService(db, blobs, registry, quotas, events, uploads, {
      maxUploadBytes: config.maxUploadBytes,
      spoolDir: join(config.dataDir, 'spool'),
      ...config.resumable,
      ...(logger ? { logger } : {}),
    }),
  };
}
