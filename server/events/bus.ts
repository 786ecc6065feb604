import { setMaxListeners } from 'node:events';
import { createPubSub, type PubSub } from 'graphql-yoga';

/**
 * The event bus: typed topics in one place. In-memory here (one process); with `REDIS_URL` set,
 * ./redis.ts builds the same bus over Redis so events cross replicas. Events carry ids, never
 * file contents or URLs.
 */

export const Topic = {
  CACHE_EVENTS: 'cache-events',
  UPLOAD_PROGRESS: 'upload-progress',
} as const;

export const CacheEventType = {
  LORA_DELETED: 'LORA_DELETED',
  LORA_UPDATED: 'LORA_UPDATED',
  DOWNLOADED: 'DOWNLOADED',
  EVICTED: 'EVICTED',
  DOWNLOAD_FAILED: 'DOWNLOAD_FAILED',
} as const;
export type CacheEventType = (typeof CacheEventType)[keyof typeof CacheEventType];

export interface CacheEvent {
  type: CacheEventType;
  loraId: string | null;
  userId: string | null;
  machineId: string | null;
  sharedName: string | null;
  reason: string | null;
  at: string;
}

export type UploadPhase = 'RECEIVING' | 'VALIDATING' | 'STORING' | 'DONE' | 'FAILED';

export interface UploadProgress {
  uploadId: string;
  userId: string;
  phase: UploadPhase;
  bytesReceived: number;
  totalBytes: number | null;
  loraId: string | null;
  error: string | null;
}

export type BusTopics = {
  [Topic.CACHE_EVENTS]: [CacheEvent];
  [Topic.UPLOAD_PROGRESS]: [uploadId: string, progress: UploadProgress];
};

export type EventBus = PubSub<BusTopics>;

/** A bus and its lifecycle (a Redis bus connects on start and disconnects on stop). */
export interface BusHandle {
  bus: EventBus;
  connect(): Promise<void>;
  close(): Promise<void>;
}

export function createInMemoryEventBus(): BusHandle {
  const eventTarget = new EventTarget();
  setMaxListeners(0, eventTarget); // one listener per subscriber: thousands are expected
  return { bus: createPubSub<BusTopics>({ eventTarget }), connect: async () => {}, close: async () => {} };
}

export function cacheEvent(type: CacheEventType, fields: Partial<Omit<CacheEvent, 'type' | 'at'>>): CacheEvent {
  return {
    type,
    loraId: fields.loraId ?? null,
    userId: fields.userId ?? null,
    machineId: fields.machineId ?? null,
    sharedName: fields.sharedName ?? null,
    reason: fields.reason ?? null,
    at: new Date().toISOString(),
  };
}
