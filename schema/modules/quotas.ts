import type { QuotaView } from '../../server/services/quotas.ts';
import { builder } from '../builder.ts';

const QuotaEntry = builder.objectRef<QuotaView['loras'][number]>('LoraQuotaEntry').implement({
  fields: (t) => ({
    id: t.exposeID('id'),
    name: t.exposeString('name'),
    sizeBytes: t.expose('sizeBytes', { type: 'Bytes' }),
  }),
});

export const LoraQuotaRef = builder.objectRef<QuotaView>('LoraQuota').implement({
  fields: (t) => ({
    userId: t.exposeID('userId'),
    maxStorageBytes: t.expose('maxStorageBytes', { type: 'Bytes' }),
    usedStorageBytes: t.expose('usedStorageBytes', { type: 'Bytes' }),
    availableBytes: t.expose('availableBytes', { type: 'Bytes' }),
    utilizationPercent: t.exposeFloat('utilizationPercent'),
    maxLoraCount: t.exposeInt('maxLoraCount'),
    loraCount: t.exposeInt('loraCount'),
    warning: t.exposeBoolean('warning', { description: 'True from 80 % of either limit' }),
    loras: t.expose('loras', { type: [QuotaEntry], description: 'Largest first' }),
  }),
});

builder.queryField('loraQuota', (t) =>
  t.field({
    type: LoraQuotaRef,
    authScopes: { user: true, admin: true },
    args: { userId: t.arg.id({ description: 'Admins only (required for them)' }) },
    resolve: (_root, { userId }, ctx) => ctx.services.quotas.get(ctx.principal, userId?.toString()),
  }),
);

builder.mutationField('setUserLoraQuota', (t) =>
  t.field({
    type: LoraQuotaRef,
    description:
      "Admins: set a user's limits (null = back to the default). Lowering below usage keeps existing LoRAs and refuses new ones. Bad arguments throw BAD_USER_INPUT.",
    authScopes: { admin: true },
    args: {
      userId: t.arg.id({ required: true }),
      maxStorageBytes: t.arg({ type: 'Bytes' }),
      maxLoraCount: t.arg.int(),
    },
    resolve: (_root, args, ctx) =>
      ctx.services.quotas.set(ctx.principal, {
        userId: String(args.userId),
        maxStorageBytes: args.maxStorageBytes,
        maxLoraCount: args.maxLoraCount,
      }),
  }),
);
