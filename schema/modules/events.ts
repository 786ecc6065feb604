import { type CacheEvent, CacheEventType, type UploadProgress } from '../../server/events/bus.ts';
import { builder } from '../builder.ts';

/** Live events over graphql-ws: upload progress and cache events (machines report theirs in ./machines.ts). */

builder.subscriptionType({});

const UploadPhaseEnum = builder.enumType('UploadPhase', {
  values: ['RECEIVING', 'VALIDATING', 'STORING', 'DONE', 'FAILED'] as const,
});
const CacheEventTypeEnum = builder.enumType('CacheEventType', { values: Object.values(CacheEventType) });

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

export const CacheEventRef = builder.objectRef<CacheEvent>('CacheEvent').implement({
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
  loraEvents: t.field({
    type: CacheEventRef,
    description:
      "The caller's library changed elsewhere (another tab, an admin): LORA_DELETED / LORA_UPDATED of the user's own LoRAs (admins: everyone's), so Studio drops or refreshes them live.",
    authScopes: { user: true, admin: true },
    subscribe: (_root, _args, ctx) => ctx.services.events.loraEvents(ctx.principal),
    resolve: (event) => event,
  }),
}));
