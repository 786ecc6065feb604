import type { BusinessMetrics } from '../../server/services/business-metrics.ts';
import { builder } from '../builder.ts';

/** Admins: the product's figures from the database (the same the business gauges export on /metrics). */

const QueueDepthRef = builder.objectRef<BusinessMetrics['queueDepth'][number]>('QueueDepth').implement({
  fields: (t) => ({
    queue: t.exposeString('queue'),
    jobs: t.exposeInt('jobs', { description: 'Jobs waiting, retrying or running' }),
  }),
});

const BusinessMetricsRef = builder.objectRef<BusinessMetrics>('BusinessMetrics').implement({
  description: 'Figures over READY LoRAs and the background queues, measured when asked.',
  fields: (t) => ({
    usersWithLoras: t.exposeInt('usersWithLoras', { description: 'Users with at least one READY LoRA' }),
    loraCount: t.exposeInt('loraCount'),
    lorasPerUser: t.exposeFloat('lorasPerUser', { description: 'loraCount / usersWithLoras (0 when none)' }),
    storageBytes: t.expose('storageBytes', { type: 'Bytes' }),
    storageBytesPerUser: t.exposeFloat('storageBytesPerUser'),
    storageGrowthBytes24h: t.expose('storageGrowthBytes24h', {
      type: 'Bytes',
      description: 'Bytes of LoRAs that became READY in the last 24 hours and are still READY',
    }),
    workflowsUsingUserLoras30d: t.exposeInt('workflowsUsingUserLoras30d', {
      description: 'Distinct workflows that used a user LoRA in the last 30 days',
    }),
    blobDeletionsPending: t.exposeInt('blobDeletionsPending'),
    blobDeletionsFailed: t.exposeInt('blobDeletionsFailed', { description: 'Blob deletions that exhausted their retries' }),
    queueDepth: t.field({ type: [QueueDepthRef], resolve: (m) => m.queueDepth }),
    measuredAt: t.expose('measuredAt', { type: 'DateTime' }),
  }),
});

builder.queryFields((t) => ({
  businessMetrics: t.field({
    type: BusinessMetricsRef,
    description: 'Admins: users with LoRAs, LoRAs per user, storage and its growth, workflows using user LoRAs, queues.',
    authScopes: { admin: true },
    resolve: (_root, _args, ctx) => ctx.services.businessMetrics.read(ctx.principal),
  }),
}));
