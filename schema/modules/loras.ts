import { NotFoundError, ValidationError } from '../../server/domain/errors.ts';
import type { LoraMetadataView, LoraView } from '../../server/domain/lora.ts';
import type { LoraPage } from '../../server/services/loras.ts';
import type { QuotaView } from '../../server/services/quotas.ts';
import { builder } from '../builder.ts';
import { LoraQuotaRef } from './quotas.ts';

export const LoraFormatEnum = builder.enumType('LoraFormat', { values: ['SAFETENSORS', 'PT'] as const });
export const LoraStatusEnum = builder.enumType('LoraStatus', {
  description:
    'READY LoRAs are listed; the others are seen by admins only. SUSPENDED: hidden by an account deletion, restored if an admin cancels it before the purge.',
  values: ['UPLOADING', 'READY', 'FAILED', 'DELETED', 'SUSPENDED'] as const,
});
export const LoraSortEnum = builder.enumType('LoraSort', { values: ['NAME', 'SIZE', 'CREATED_AT', 'LAST_USED'] as const });
export const SortOrderEnum = builder.enumType('SortOrder', { values: ['ASC', 'DESC'] as const });

// Loaded whole (5 columns) for a page's LoRAs in one query by ctx.loaders.workflowsUsing: the
// parent Lora comes from the SQL list path, so the plugin's per-parent relation loading would cost
// a query per LoRA.
const WorkflowRefRef = builder.prismaObject('lora_workflow_usage', {
  name: 'WorkflowRef',
  fields: (t) => ({
    id: t.exposeID('workflow_id'),
    name: t.exposeString('workflow_name', { nullable: true }),
    lastUsedAt: t.expose('last_used_at', { type: 'DateTime' }),
    useCount: t.exposeInt('use_count'),
  }),
});

const LoraMetadataRef = builder.objectRef<LoraMetadataView>('LoraMetadata').implement({
  description: 'Extracted from the file header, overridable by the owner.',
  fields: (t) => ({
    baseModel: t.exposeString('baseModel', { nullable: true, description: 'SD1, SD2, SDXL, FLUX1, SD3, UNKNOWN …' }),
    baseModelSource: t.exposeString('baseModelSource', { nullable: true, description: 'METADATA | TENSOR_SHAPES | USER' }),
    rank: t.exposeInt('rank', { nullable: true }),
    alpha: t.exposeFloat('alpha', { nullable: true }),
    networkModule: t.exposeString('networkModule', { nullable: true }),
    triggerWords: t.exposeStringList('triggerWords'),
    description: t.exposeString('description', { nullable: true }),
    title: t.exposeString('title', { nullable: true }),
    trainingEpochs: t.exposeInt('trainingEpochs', { nullable: true }),
    trainingImages: t.exposeInt('trainingImages', { nullable: true }),
    tensorCount: t.exposeInt('tensorCount', { nullable: true }),
    raw: t.expose('raw', { type: 'JSON', nullable: true, description: "The file's __metadata__ as found (strings only)" }),
  }),
});

export const LoraRef = builder.objectRef<LoraView>('Lora').implement({
  description: "A user's LoRA: a flat_file row tagged 'lora' plus its LoRA facts.",
  fields: (t) => ({
    id: t.exposeID('id'),
    name: t.exposeString('name'),
    fileName: t.exposeString('fileName', { description: 'The uploaded file name (display only; never part of a path)' }),
    format: t.expose('format', { type: LoraFormatEnum }),
    sizeBytes: t.expose('sizeBytes', { type: 'Bytes' }),
    sha256: t.exposeString('sha256'),
    autoV2: t.exposeString('autoV2', {
      description: 'AutoV2 hash: the first 10 hex characters of sha256 (as Civitai and A1111 look LoRAs up)',
    }),
    autoV3: t.exposeString('autoV3', {
      nullable: true,
      description: 'AutoV3 hash: sha256 of the tensor data after the safetensors header (unchanged by metadata edits); null for .pt',
    }),
    createdAt: t.expose('createdAt', { type: 'DateTime' }),
    updatedAt: t.expose('updatedAt', { type: 'DateTime' }),
    tags: t.exposeStringList('tags', { description: "User tags; the implicit 'lora' tag is not shown" }),
    status: t.expose('status', { type: LoraStatusEnum }),
    metadata: t.expose('metadata', { type: LoraMetadataRef }),
    usageCount: t.exposeInt('usageCount'),
    lastUsedAt: t.expose('lastUsedAt', { type: 'DateTime', nullable: true }),
    userId: t.exposeID('userId', { authScopes: { admin: true }, nullable: true, description: 'Owner (admins only)' }),
    workflowsUsing: t.field({
      type: [WorkflowRefRef],
      resolve: (lora, _args, ctx) => ctx.loaders.workflowsUsing.load(lora.id),
    }),
  }),
});

const LoraPageRef = builder.objectRef<LoraPage>('LoraPage').implement({
  fields: (t) => ({
    loras: t.expose('loras', { type: [LoraRef] }),
    total: t.exposeInt('total'),
    limit: t.exposeInt('limit'),
    offset: t.exposeInt('offset'),
  }),
});

builder.queryFields((t) => ({
  loras: t.field({
    type: LoraPageRef,
    description: "Your READY LoRAs (admins: anyone's, or one user's with userId). Errors: VALIDATION_FAILED is thrown as BAD_USER_INPUT.",
    authScopes: { user: true, admin: true },
    args: {
      search: t.arg.string({ description: 'Case-insensitive substring of the name' }),
      tags: t.arg.stringList({ description: 'LoRAs carrying every one of these tags' }),
      baseModel: t.arg.string(),
      limit: t.arg.int({ defaultValue: 50, description: '1–200' }),
      offset: t.arg.int({ defaultValue: 0 }),
      sort: t.arg({ type: LoraSortEnum, defaultValue: 'CREATED_AT' }),
      order: t.arg({ type: SortOrderEnum, defaultValue: 'DESC' }),
      userId: t.arg.id({ description: 'Admins only' }),
    },
    resolve: (_root, args, ctx) => ctx.services.loras.list(ctx.principal, { ...args, userId: args.userId?.toString() }),
  }),
  lora: t.field({
    type: LoraRef,
    authScopes: { user: true, admin: true },
    errors: { types: [NotFoundError], union: { name: 'LoraResult' } },
    args: { id: t.arg.id({ required: true }) },
    resolve: (_root, { id }, ctx) => ctx.services.loras.get(ctx.principal, String(id)),
  }),
}));

const DeleteLoraSuccess = builder.objectRef<{ loraId: string; quota: QuotaView }>('DeleteLoraSuccess').implement({
  description: 'The LoRA is hidden at once, its quota freed; the blob is removed by a background job.',
  fields: (t) => ({
    loraId: t.exposeID('loraId'),
    quota: t.expose('quota', { type: LoraQuotaRef }),
  }),
});

builder.mutationFields((t) => ({
  updateLora: t.field({
    type: LoraRef,
    authScopes: { user: true, admin: true },
    errors: { types: [NotFoundError, ValidationError], union: { name: 'UpdateLoraResult' } },
    args: {
      id: t.arg.id({ required: true }),
      name: t.arg.string(),
      tags: t.arg.stringList({ description: 'Replaces the tags (max 20, each ≤ 50 characters)' }),
      metadata: t.arg({ type: 'JSON', description: '{ baseModel, triggerWords, description, title } — each optional; null clears' }),
    },
    resolve: (_root, { id, ...input }, ctx) => ctx.services.loras.update(ctx.principal, String(id), input),
  }),
  deleteLora: t.field({
    type: DeleteLoraSuccess,
    authScopes: { user: true, admin: true },
    errors: { types: [NotFoundError], union: { name: 'DeleteLoraResult' } },
    args: { id: t.arg.id({ required: true }) },
    resolve: (_root, { id }, ctx) => ctx.services.loras.delete(ctx.principal, String(id)),
  }),
}));
