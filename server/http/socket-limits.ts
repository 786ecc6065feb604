import { GraphQLError } from 'graphql';
import { RequestErrorCode } from '../domain/errors.ts';

/**
 * Limits of WebSocket connections (THREATS.md row 33): how many operations a socket and a caller
 * may have running at once, and a socket's end when its token expires.
 */

export interface OperationCaps {
  /** Subscriptions one socket may hold (a query running over the socket counts too). @default 32 */
  perSocket: number;
  /** Subscriptions one principal may hold across all its sockets on this process. @default 64 */
  perPrincipal: number;
  /** WebSockets one principal may hold open at once on this process (WS_MAX_CONNECTIONS_PER_PRINCIPAL). @default 32 */
  socketsPerPrincipal: number;
}

/** One socket's admitted operations; `live()` is graphql-ws's own record of those still running. */
interface SocketOperations {
  admitted: Set<string>;
  live: () => Record<string, unknown>;
}

/**
 * Counts operations per socket and per principal. graphql-ws removes an operation from
 * `ctx.subscriptions` however it ends (completed, errored, cancelled, socket closed), so an
 * admitted id counts only while graphql-ws still holds it: nothing can leak a place.
 */
export class OperationCounter {
  private readonly byPrincipal = new Map<string, Set<SocketOperations>>();

  constructor(private readonly caps: OperationCaps) {}

  /** Whether `principal` already holds as many sockets as it may on this process. */
  full(principal: string): boolean {
    return (this.byPrincipal.get(principal)?.size ?? 0) >= this.caps.socketsPerPrincipal;
  }

  /** Registers an authenticated socket; call `release` when it closes. */
  register(principal: string, live: () => Record<string, unknown>): { admit(id: string): GraphQLError | null; release(): void } {
    const socket: SocketOperations = { admitted: new Set(), live };
    const all = this.byPrincipal.get(principal) ?? new Set<SocketOperations>();
    this.byPrincipal.set(principal, all);
    all.add(socket);
    return {
      /** Admits operation `id` or says why not. Synchronous, so a burst of messages is counted exactly. */
      admit: (id) => {
        if (running(socket) >= this.caps.perSocket) {
          return tooMany(`At most ${this.caps.perSocket} subscriptions may run at once per connection`);
        }
        let total = 0;
        for (const other of all) total += running(other);
        if (total >= this.caps.perPrincipal) {
          return tooMany(`At most ${this.caps.perPrincipal} subscriptions may run at once per caller across connections`);
        }
        socket.admitted.add(id);
        return null;
      },
      release: () => {
        all.delete(socket);
        if (all.size === 0 && this.byPrincipal.get(principal) === all) this.byPrincipal.delete(principal);
      },
    };
  }
}

/** The admitted operations graphql-ws still runs (forgetting the ones that ended). */
function running(socket: SocketOperations): number {
  const live = socket.live();
  for (const id of socket.admitted) if (!(id in live)) socket.admitted.delete(id);
  return socket.admitted.size;
}

function tooMany(message: string): GraphQLError {
  return new GraphQLError(message, { extensions: { code: RequestErrorCode.RATE_LIMITED } });
}

/** setTimeout's longest delay (~24.8 days); a longer one would fire at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** Calls `fire` at `atMs` (epoch ms), however far away; `cancel` stops it. The timer never holds the process open. */
export function at(atMs: number, fire: () => void): { cancel(): void } {
  let timer: NodeJS.Timeout | undefined;
  const arm = () => {
    const left = atMs - Date.now();
    if (left <= 0) return fire();
    timer = setTimeout(arm, Math.min(left, MAX_TIMER_MS));
    timer.unref();
  };
  arm();
  return { cancel: () => clearTimeout(timer) };
}
