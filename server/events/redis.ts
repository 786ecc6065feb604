import { createRedisEventTarget } from '@graphql-yoga/redis-event-target';
import { createPubSub } from 'graphql-yoga';
import { Redis } from 'ioredis';
import type { BusHandle, BusTopics } from './bus.ts';

/**
 * The event bus across replicas: Yoga's pub/sub over a Redis event target (one connection to
 * publish, one to subscribe), so an event raised on any replica reaches subscribers on all.
 */
export function createRedisEventBus(url: string): BusHandle {
  const options = { lazyConnect: true, maxRetriesPerRequest: 3, enableAutoPipelining: true };
  const publishClient = new Redis(url, options);
  const subscribeClient = new Redis(url, options);
  const bus = createPubSub<BusTopics>({ eventTarget: createRedisEventTarget({ publishClient, subscribeClient }) });
  return {
    bus,
    async connect() {
      await Promise.all([publishClient.connect(), subscribeClient.connect()]);
    },
    async close() {
      await Promise.allSettled([publishClient.quit(), subscribeClient.quit()]);
    },
  };
}
