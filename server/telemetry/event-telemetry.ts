import type { Server } from 'node:http';
import { SpanKind } from '@opentelemetry/api';
import type { EventBus } from '../events/bus.ts';
import { serverInstruments } from './instruments.ts';
import { tracer } from './tracing.ts';

/**
 * Events and sockets: every publish on the bus is counted by topic and gets a `publish <topic>`
 * PRODUCER span (the topic only: an upload's id or a LoRA's is never an attribute); open
 * WebSockets are counted from the HTTP server's upgrades. Deliveries are counted where they reach
 * a client (graphql-telemetry.ts), whatever fans them out in between.
 */
export function instrumentBus(bus: EventBus): EventBus {
  const publish = bus.publish.bind(bus) as (topic: string, ...args: unknown[]) => void;
  return {
    ...bus,
    subscribe: bus.subscribe.bind(bus),
    publish: ((topic: string, ...args: unknown[]) => {
      serverInstruments().eventsPublished.add(1, { 'messaging.destination.name': topic });
      const span = tracer().startSpan(`publish ${topic}`, {
        kind: SpanKind.PRODUCER,
        attributes: { 'messaging.destination.name': topic, 'messaging.operation.type': 'send' },
      });
      try {
        return publish(topic, ...args);
      } finally {
        span.end();
      }
    }) as EventBus['publish'],
  };
}

/** Counts open WebSocket connections (each upgraded socket, until it closes). */
export function countWebSockets(server: Server): void {
  server.on('upgrade', (_req, socket) => {
    const m = serverInstruments();
    m.websockets.add(1);
    socket.once('close', () => m.websockets.add(-1));
  });
}
