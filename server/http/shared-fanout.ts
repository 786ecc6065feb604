import type { Duplex } from 'node:stream';
import {
  createSourceEventStream,
  type DocumentNode,
  type ExecutionArgs,
  type ExecutionResult,
  execute,
  type GraphQLError,
  print,
} from 'graphql';
import type { Plugin } from 'graphql-yoga';
import type { Logger } from 'pino';
import { WebSocket } from 'ws';
import { type Sharing, sharingOf } from '../events/shareable.ts';
import { recordDelivery, subscriptionField } from '../telemetry/graphql-telemetry.ts';
import { sendFrame, type TextFrame, textFrame } from './ws-frames.ts';

/**
 * Shared fan-out for graphql-ws subscriptions: an event is executed and serialised once per
 * distinct (document, operation name, variables, visibility) and the same payload bytes are
 * framed for every socket that shares them (only the graphql-ws message id differs per socket).
 *
 * How a subscription joins: its own context runs the field's `subscribe` through graphql-js's
 * `createSourceEventStream`, so scope-auth and the service's checks decide for each subscriber
 * exactly as before (a refusal is an ordinary error result). When the service marks the stream
 * shareable (events/shareable.ts) the subscriber joins the group of its key and its private stream
 * is dropped unread; graphql-ws holds a parked iterator that yields nothing (frames are written
 * by the group) and ends when the client completes, the socket closes or the group's source ends.
 * For each event the group asks every member's own `wants` first: a member never gets a frame its
 * own subscription would not have produced. Streams that are not shareable run per subscriber as
 * graphql-js would run them.
 *
 * Writing (issue 16): per event, one complete WebSocket frame per distinct message id (members
 * whose ids are equal share it), written with one write on each socket's TCP socket where ws would
 * have written the same bytes (ws-frames.ts), through `WebSocket.send` otherwise.
 *
 * Memory per subscriber: the member (socket, message id, filter) and the parked iterator;
 * no context, document or source stream of its own is kept.
 */

export interface FanOutOptions {
  logger: Logger;
  /** Errors of an event's execution as they go out (masked like every other result). */
  formatErrors(errors: readonly GraphQLError[]): readonly GraphQLError[];
}

/** Where one subscription's frames go: put into the context of a WebSocket subscription. */
export interface FanOutTarget {
  hub: SharedFanOut;
  socket: WebSocket;
  /** The socket's TCP socket (the upgrade request's), for frames written as they are. */
  wire?: Duplex;
  id: string;
}

const CLOSE = Buffer.from('}');

interface Member {
  readonly socket: WebSocket;
  readonly wire: Duplex | undefined;
  /** The graphql-ws message id of this subscription. */
  readonly id: string;
  readonly wants: (value: unknown) => boolean;
  end(error?: unknown): void;
}

interface Group {
  readonly key: string;
  readonly args: ExecutionArgs;
  /** The subscription's root field: the label of its delivery figures. */
  readonly field: string;
  readonly members: Set<Member>;
  stop(): void;
}

export class SharedFanOut {
  private readonly groups = new Map<string, Group>();
  private readonly printed = new WeakMap<DocumentNode, string>();
  /** Counters for tests and benchmarks: events executed, frames sent, of which written as they are. */
  readonly stats = { executions: 0, frames: 0, direct: 0 };

  constructor(private readonly options: FanOutOptions) {}

  /** Subscribers and groups right now. */
  size(): { groups: number; members: number } {
    let members = 0;
    for (const group of this.groups.values()) members += group.members.size;
    return { groups: this.groups.size, members };
  }

  /** The subscribe function for one WebSocket subscription (see the file comment). */
  async subscribe(
    args: ExecutionArgs,
    target: Omit<FanOutTarget, 'hub'>,
  ): Promise<AsyncIterableIterator<ExecutionResult> | ExecutionResult> {
    const source = await createSourceEventStream(args);
    if (!isAsyncIterable(source)) return source; // refused: an error result, masked by Yoga like any other
    const sharing = sharingOf(source);
    if (!sharing) return mapResults(source, (value) => execute({ ...args, rootValue: value }));
    return this.join(args, sharing, target);
  }

  /** Ends every group (server shutdown): their subscriptions complete. */
  close(): void {
    for (const group of [...this.groups.values()]) this.endGroup(group);
  }

  private join(args: ExecutionArgs, sharing: Sharing<unknown>, target: Omit<FanOutTarget, 'hub'>): AsyncIterableIterator<never> {
    const key = this.keyOf(args, sharing.key);
    const group = this.groups.get(key) ?? this.openGroup(key, args, sharing);
    let finish: (result: IteratorResult<never>) => void = () => {};
    let fail: (error: unknown) => void = () => {};
    const ended = new Promise<IteratorResult<never>>((resolve, reject) => {
      finish = resolve;
      fail = reject;
    });
    const member: Member = {
      socket: target.socket,
      wire: target.wire,
      id: target.id,
      wants: sharing.wants,
      end: (error) => {
        this.leave(group, member);
        if (error === undefined) finish({ done: true, value: undefined as never });
        else fail(error);
      },
    };
    group.members.add(member);
    const iterator: AsyncIterableIterator<never> = {
      next: () => ended,
      return: () => {
        member.end();
        return Promise.resolve({ done: true, value: undefined as never });
      },
      [Symbol.asyncIterator]: () => iterator,
    };
    return iterator;
  }

  private keyOf(args: ExecutionArgs, visibility: string): string {
    let text = this.printed.get(args.document);
    if (text === undefined) {
      text = print(args.document);
      this.printed.set(args.document, text);
    }
    return JSON.stringify([text, args.operationName ?? null, args.variableValues ?? {}, visibility]);
  }

  private openGroup(key: string, args: ExecutionArgs, sharing: Sharing<unknown>): Group {
    // The group executes with the first subscriber's context minus its socket: same visibility,
    // so the same bytes for every member (the key says so); nothing of one socket is kept.
    const contextValue = { ...(args.contextValue as object), fanOut: undefined };
    const iterator = sharing.source()[Symbol.asyncIterator]();
    const group: Group = {
      key,
      args: { ...args, contextValue },
      field: subscriptionField(args.document, args.operationName),
      members: new Set(),
      stop: () => void iterator.return?.(),
    };
    this.groups.set(key, group);
    void this.pump(group, iterator);
    return group;
  }

  private async pump(group: Group, iterator: AsyncIterator<unknown>): Promise<void> {
    try {
      for (;;) {
        const next = await iterator.next();
        if (next.done) break;
        await this.deliver(group, next.value);
      }
      this.endGroup(group);
    } catch (error) {
      this.options.logger.error({ err: error }, 'shared subscription source failed');
      this.endGroup(group, error);
    }
  }

  private async deliver(group: Group, value: unknown): Promise<void> {
    const recipients: Member[] = [];
    for (const member of group.members) if (member.wants(value)) recipients.push(member);
    if (recipients.length === 0) return;
    this.stats.executions++;
    let result = execute({ ...group.args, rootValue: value });
    if (isPromise(result)) result = await result;
    const { errors, ...rest } = result;
    const payload = Buffer.from(JSON.stringify(errors ? { ...rest, errors: this.options.formatErrors(errors) } : rest));
    let sent = 0;
    let direct = 0;
    // the SDK's graphql-ws client draws a random id per subscription; clients that number them share frames
    const frames = new Map<string, TextFrame>();
    for (const member of recipients) {
      // a member may have left while the execution awaited
      if (member.socket.readyState !== WebSocket.OPEN || !group.members.has(member)) continue;
      let frame = frames.get(member.id);
      if (!frame) {
        frame = textFrame([Buffer.from(`{"id":${JSON.stringify(member.id)},"type":"next","payload":`), payload, CLOSE]);
        frames.set(member.id, frame);
      }
      if (sendFrame(member.socket, member.wire, frame)) direct++;
      sent++;
    }
    this.stats.frames += sent;
    this.stats.direct += direct;
    // the members' parked iterators yield nothing, so the per-subscription telemetry sees no result
    if (sent > 0) recordDelivery(group.field, sent, result);
  }

  private leave(group: Group, member: Member): void {
    if (!group.members.delete(member) || group.members.size > 0) return;
    if (this.groups.get(group.key) === group) this.groups.delete(group.key);
    group.stop();
  }

  private endGroup(group: Group, error?: unknown): void {
    if (this.groups.get(group.key) === group) this.groups.delete(group.key);
    for (const member of [...group.members]) member.end(error);
    group.stop();
  }
}

/**
 * The Yoga (envelop) plugin that routes a WebSocket subscription to its hub: subscriptions.ts puts
 * a `fanOut` target into the context of each one when shared fan-out is on.
 */
export function useSharedFanOut(): Plugin {
  return {
    onSubscribe({ args, setSubscribeFn }) {
      const target = (args.contextValue as { fanOut?: FanOutTarget }).fanOut;
      if (target) setSubscribeFn((subscribeArgs) => target.hub.subscribe(subscribeArgs, target) as never);
    },
  };
}

/** graphql-js's mapping of a source stream to results, with `return` passed straight through. */
function mapResults<T>(
  source: AsyncIterable<T>,
  map: (value: T) => ExecutionResult | Promise<ExecutionResult>,
): AsyncIterableIterator<ExecutionResult> {
  const it = source[Symbol.asyncIterator]();
  const step = async (r: IteratorResult<T>): Promise<IteratorResult<ExecutionResult>> =>
    r.done ? { done: true, value: undefined } : { done: false, value: await map(r.value) };
  const mapped: AsyncIterableIterator<ExecutionResult> = {
    next: () => it.next().then(step),
    return: () => (it.return ? it.return().then(step) : Promise.resolve({ done: true, value: undefined })),
    throw: (error: unknown) => (it.throw ? it.throw(error).then(step) : Promise.reject(error)),
    [Symbol.asyncIterator]: () => mapped,
  };
  return mapped;
}

function isAsyncIterable(value: unknown): value is AsyncIterable<unknown> {
  return typeof Object(value)[Symbol.asyncIterator] === 'function';
}

function isPromise<T>(value: T | Promise<T>): value is Promise<T> {
  return typeof (value as { then?: unknown })?.then === 'function';
}
