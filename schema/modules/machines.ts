import type { JobGrant } from '../../server/auth/grants.ts';
import { InvalidGrantError, NotFoundError, ValidationError } from '../../server/domain/errors.ts';
import { cacheUtilizationPercent } from '../../server/services/cache-stats.ts';
import type { DownloadView } from '../../server/services/downloads.ts';
import { MACHINE_EVENT_TYPES } from '../../server/services/events.ts';
import { builder } from '../builder.ts';
import { CacheEventRef } from './events.ts';
import { LoraFormatEnum } from './loras.ts';

/** What the dispatcher (service) and the GPU machines' cache agents use: grants, downloads, usage, cache reports and reconciling. */

const JobGrantRef = builder.objectRef<JobGrant & { token: string }>('JobGrant').implement({
  description: 'A short-lived signed grant naming one user and job; hand `token` to the machine running the job.',
  fields: (t) => ({
    token: t.exposeString('token'),
    userId: t.exposeID('userId'),
    jobId: t.exposeString('jobId'),
    expiresAt: t.expose('expiresAt', { type: 'DateTime' }),
  }),
});

const LoraDownloadRef = builder.objectRef<DownloadView>('LoraDownload').implement({
  description: 'A read-only SAS URL for one blob, valid until expiresAt.',
  fields: (t) => ({
    url: t.exposeString('url'),
    loraId: t.exposeID('loraId', { nullable: true }),
    sharedName: t.exposeString('sharedName', { nullable: true }),
    sha256: t.exposeString('sha256', { nullable: true, description: 'Null for shared LoRAs (not recorded)' }),
    sizeBytes: t.expose('sizeBytes', { type: 'Bytes' }),
    fileName: t.exposeString('fileName', {
      description:
        "The name to store the file under: user LoRAs get the uploaded name's stem with the DETECTED format's extension (never the uploaded one)",
    }),
    format: t.expose('format', {
      type: LoraFormatEnum,
      nullable: true,
      description: 'The format detected from the bytes (user LoRAs); null for the shared library',
    }),
    userId: t.exposeID('userId', { nullable: true }),
    etag: t.exposeString('etag'),
    expiresAt: t.expose('expiresAt', { type: 'DateTime' }),
  }),
});

const RecordLoraUsageSuccess = builder.objectRef<{ recorded: number }>('RecordLoraUsageSuccess').implement({
  fields: (t) => ({ recorded: t.exposeInt('recorded', { description: "How many of the ids were the grant user's READY LoRAs" }) }),
});

const MachineCacheStatsRef = builder.prismaObject('machine_cache_report', {
  name: 'MachineCacheStats',
  select: { id: true },
  fields: (t) => ({
    machineId: t.exposeString('machine_id'),
    totalLoraCacheBytes: t.expose('total_lora_cache_bytes', { type: 'Bytes' }),
    maxLoraCacheBytes: t.expose('max_lora_cache_bytes', { type: 'Bytes' }),
    utilizationPercent: t.float({
      select: { total_lora_cache_bytes: true, max_lora_cache_bytes: true },
      resolve: (r) => cacheUtilizationPercent(r.total_lora_cache_bytes, r.max_lora_cache_bytes),
    }),
    userLoraCount: t.exposeInt('user_lora_count'),
    sharedLoraCount: t.exposeInt('shared_lora_count'),
    cacheHitRate24h: t.exposeFloat('cache_hit_rate_24h', { description: '0–1' }),
    evictions24h: t.exposeInt('evictions_24h'),
    oldestLoraAgeDays: t.exposeFloat('oldest_lora_age_days'),
    reportedAt: t.expose('reported_at', { type: 'DateTime' }),
  }),
});

const MachineCacheEventTypeEnum = builder.enumType('MachineCacheEventType', { values: [...MACHINE_EVENT_TYPES] });

const CachedLoraInput = builder.inputType('CachedLoraInput', {
  fields: (t) => ({ id: t.id({ required: true }), sha256: t.string({ required: true }) }),
});

const CacheEventInput = builder.inputType('CacheEventInput', {
  fields: (t) => ({
    type: t.field({ type: MachineCacheEventTypeEnum, required: true }),
    loraId: t.id(),
    sharedName: t.string(),
    reason: t.string({ description: 'Why (for DOWNLOAD_FAILED / EVICTED), ≤ 500 characters' }),
  }),
});

const CacheStatsInputRef = builder.inputType('CacheStatsInput', {
  fields: (t) => ({
    totalLoraCacheBytes: t.field({ type: 'Bytes', required: true }),
    maxLoraCacheBytes: t.field({ type: 'Bytes', required: true }),
    userLoraCount: t.int({ required: true }),
    sharedLoraCount: t.int({ required: true }),
    cacheHitRate24h: t.float({ required: true }),
    evictions24h: t.int({ required: true }),
    oldestLoraAgeDays: t.float({ required: true }),
  }),
});

builder.queryFields((t) => ({
  loraDownload: t.field({
    type: LoraDownloadRef,
    description: 'Machines: a download URL for a user LoRA, with a job grant for its owner.',
    authScopes: { machine: true, admin: true },
    errors: { types: [NotFoundError, InvalidGrantError], union: { name: 'LoraDownloadResult' } },
    args: { id: t.arg.id({ required: true }), grant: t.arg.string({ required: true }) },
    resolve: (_root, { id, grant }, ctx) => ctx.services.downloads.loraDownload(ctx.principal, String(id), grant),
  }),
  sharedLoraDownload: t.field({
    type: LoraDownloadRef,
    description: 'Machines: a download URL for a LoRA of the shared library.',
    authScopes: { machine: true, admin: true },
    errors: { types: [NotFoundError, ValidationError], union: { name: 'SharedLoraDownloadResult' } },
    args: { name: t.arg.string({ required: true }) },
    resolve: (_root, { name }, ctx) => ctx.services.downloads.sharedDownload(ctx.principal, name),
  }),
  loraCacheStats: t.prismaField({
    type: [MachineCacheStatsRef],
    description: 'Admins: the latest report of every machine (or of one).',
    authScopes: { admin: true },
    args: { machineId: t.arg.string() },
    resolve: (query, _root, { machineId }, ctx) => ctx.services.cacheStats.latest(ctx.principal, machineId, query),
  }),
}));

builder.mutationFields((t) => ({
  createJobGrant: t.field({
    type: JobGrantRef,
    description: 'The dispatcher (service) or an admin: a grant for one user and job. Bad arguments throw BAD_USER_INPUT.',
    authScopes: { service: true, admin: true },
    args: {
      userId: t.arg.id({ required: true }),
      jobId: t.arg.string({ required: true }),
      ttlSeconds: t.arg.int({ defaultValue: 3600 }),
    },
    resolve: (_root, args, ctx) =>
      ctx.services.grants.create(ctx.principal, { userId: String(args.userId), jobId: args.jobId, ttlSeconds: args.ttlSeconds ?? 3600 }),
  }),
  recordLoraUsage: t.field({
    type: RecordLoraUsageSuccess,
    description: "Machines: count one use of each LoRA (the grant user's only) by a workflow.",
    authScopes: { machine: true },
    errors: { types: [InvalidGrantError, ValidationError], union: { name: 'RecordLoraUsageResult' } },
    args: {
      grant: t.arg.string({ required: true }),
      loraIds: t.arg.idList({ required: true }),
      workflowId: t.arg.string(),
      workflowName: t.arg.string(),
    },
    resolve: async (_root, args, ctx) => ({
      recorded: await ctx.services.downloads.recordUsage(ctx.principal, { ...args, loraIds: args.loraIds.map(String) }),
    }),
  }),
  reportCacheStats: t.boolean({
    description: "Machines: report this machine's cache figures (the machine id comes from the token).",
    authScopes: { machine: true },
    args: { input: t.arg({ type: CacheStatsInputRef, required: true }) },
    resolve: async (_root, { input }, ctx) => {
      await ctx.services.cacheStats.report(ctx.principal, input);
      return true;
    },
  }),
}));

builder.queryField('lorasStillValid', (t) =>
  t.idList({
    description: 'Machines, after a reconnect: which of the cached LoRAs (named by id and sha256) are still READY. Evict the others.',
    authScopes: { machine: true },
    args: { loras: t.arg({ type: [CachedLoraInput], required: true }) },
    resolve: (_root, { loras }, ctx) => ctx.services.events.lorasStillValid(loras.map((l) => ({ id: String(l.id), sha256: l.sha256 }))),
  }),
);

builder.mutationField('reportCacheEvent', (t) =>
  t.field({
    type: CacheEventRef,
    description: 'Machines: report a download, an eviction or a failed download (published to cacheEvents).',
    authScopes: { machine: true },
    errors: { types: [ValidationError], union: { name: 'ReportCacheEventResult' } },
    args: { input: t.arg({ type: CacheEventInput, required: true }) },
    resolve: (_root, { input }, ctx) =>
      ctx.services.events.reportCacheEvent(ctx.principal, {
        type: input.type,
        loraId: input.loraId?.toString(),
        sharedName: input.sharedName,
        reason: input.reason,
      }),
  }),
);
