import { ValidationError } from '../../server/domain/errors.ts';
import { type CacheEvent, CacheEventType, type UploadProgress } from '../../server/events/bus.ts';
import { MACHINE_EVENT_TYPES } from '../../server/services/events.ts';
import { builder } from '../builder.ts';

/** Live events over graphql-ws: upload progress, cache events; machines' reports and reconciling. */

builder.subscriptionType({});

const UploadPhaseEnum = builder.enumType('UploadPhase', {
  values: ['RECEIVING', 'VALIDATING', 'STORING', 'DONE', 'FAILED'] as const,
});
const CacheEventTypeEnum = builder.enumType('CacheEventType', { values: Object.values(CacheEventType) });
const MachineCacheEventTypeEnum = builder.enumType('MachineCacheEventType', { values: [...MACHINE_EVENT_TYPES] });

const UploadProgressRef = builder.objectRef<UploadProgress>('UploadProgress').implement({
  fields: (t) => ({
    uploadId: t.exposeID('uploadId'),
    phase: t.expose('phase', { type: UploadPhaseEnum }),
    bytesReceived: t.expose('bytesReceived', { type: 'Bytes' }),
    totalBytes: t.expose('totalBytes', { type: 'Bytes', nullable: true, description: 'As declared by the client (sizeBytes)' }),
    loraId: t.exposeID('loraId', { nullable: true, description: 'Set when DONE' }),
    error: t.exposeString('error', { nullable: true, description: 'The error code when FAILED' }),
  }),
});

const CacheEventRef = builder.objectRef<CacheEvent>('CacheEvent').implement({
  description: 'Ids only: never file contents or URLs.',
  fields: (t) => ({
    type: t.expose('type', { type: CacheEventTypeEnum }),
    loraId: t.exposeID('loraId', { nullable: true }),
    userId: t.exposeID('userId', {
      nullable: true,
      description: 'The LoRA owner, for admins only; null for machines (they act on loraId and learn no user ids).',
    }),
    machineId: t.exposeString('machineId', { nullable: true }),
    sharedName: t.exposeString('sharedName', { nullable: true }),
    reason: t.exposeString('reason', { nullable: true }),
    at: t.expose('at', { type: 'DateTime' }),
  }),
});

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

builder.subscriptionFields((t) => ({
  uploadProgress: t.field({
    type: UploadProgressRef,
    description: 'The owner (or an admin) follows an upload by the uploadId passed to uploadLora; ends after DONE or FAILED.',
    authScopes: { user: true, admin: true },
    args: { uploadId: t.arg.id({ required: true }) },
    subscribe: (_root, { uploadId }, ctx) => ctx.services.events.uploadProgress(ctx.principal, String(uploadId)),
    resolve: (progress) => progress,
  }),
  cacheEvents: t.field({
    type: CacheEventRef,
    description:
      "Machines and admins: LORA_DELETED / LORA_UPDATED for every LoRA (machines get its loraId, not its userId); machines' DOWNLOADED / EVICTED / DOWNLOAD_FAILED (admins: of every machine, or of machineId).",
    authScopes: { machine: true, admin: true },
    args: { machineId: t.arg.string() },
    subscribe: (_root, { machineId }, ctx) => ctx.services.events.cacheEvents(ctx.principal, machineId),
    resolve: (event) => event,
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
