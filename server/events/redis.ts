import { createRedisEventTarget } from '@graphql-yoga/redis-event-target';
import { createPubSub } from 'graphql-yoga';
import { Redis } from 'ioredis';
import type { BusHandle, BusTopics } from './bus.ts';

/**
 * The event bus across replicas: Yoga's pub/sub over a Redis event target (one connection to
 * publish, one to subscribe), so an event raised on any replica reaches subscribers on all.
 */
export function createRedisEventBus(url: string, onError: (error: Error) => void = () => {}): BusHandle {
  // maxRetriesPerRequest null: during a Redis outage publishes wait in ioredis' offline queue and
  // go out on reconnect, instead of rejecting inside the event target (where nobody awaits them).
  const options = { lazyConnect: true, maxRetriesPerRequest: null, enableAutoPipelining: true };
  const publishClient = new Redis(url, options);
  const subscribeClient = new Redis(url, options);
  for (const client of [publishClient, subscribeClient]) client.on('error', (error: Error) => onError(error));
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
