import { Repeater } from 'graphql-yoga';
import { z } from 'zod';
import type { Principal } from '../auth/principal.ts';
import type { Db } from '../db/client.ts';
import { RequestError, RequestErrorCode, ValidationError } from '../domain/errors.ts';
import { parseArgs, parseLoraId, sharedLoraName } from '../domain/validation.ts';
import { type CacheEvent, CacheEventType, cacheEvent, type EventBus, Topic, type UploadProgress } from '../events/bus.ts';
import { type ShareableStream, shareable } from '../events/shareable.ts';

/**
 * Live events: who may follow an upload, which cache events reach whom, what machines may
 * report, and how an agent that was offline reconciles its cache.
 */

export const MACHINE_EVENT_TYPES = [CacheEventType.DOWNLOADED, CacheEventType.EVICTED, CacheEventType.DOWNLOAD_FAILED] as const;
const GLOBAL_EVENT_TYPES: ReadonlySet<string> = new Set([CacheEventType.LORA_DELETED, CacheEventType.LORA_UPDATED]);

const reportInput = z.object({
  type: z.enum(MACHINE_EVENT_TYPES),
  loraId: z.string().nullish(),
  sharedName: sharedLoraName.nullish(),
  reason: z.string().max(500).nullish(),
});

const cachedLoras = z
  .array(z.object({ id: z.string(), sha256: z.string().regex(/^[0-9a-f]{64}$/i, 'a sha256 in hex') }))
  .max(10_000, 'at most 10,000 per call');

export class EventService {
  constructor(
    private readonly db: Db,
    private readonly bus: EventBus,
  ) {}

  /** The first user to use an uploadId owns it; returns whether `userId` does. */
  async claimUpload(userId: string, uploadId: string): Promise<boolean> {
    await this.db
      .$executeRaw`INSERT INTO upload_claim (upload_id, user_id) VALUES (${uploadId}::uuid, ${userId}::uuid) ON CONFLICT (upload_id) DO NOTHING`;
    const claim = await this.db.upload_claim.findUnique({ where: { upload_id: uploadId } });
    return claim?.user_id === userId;
  }

  /** Progress of one upload, to its owner (or an admin); ends after DONE or FAILED. */
  async uploadProgress(principal: Principal, uploadId: string): Promise<AsyncIterable<UploadProgress>> {
    const id = parseArgs(z.uuid('must be a UUID'), uploadId, 'uploadId');
    if (principal.role === 'user') {
      if (!(await this.claimUpload(principal.userId, id)))
        throw new RequestError(RequestErrorCode.FORBIDDEN, 'This upload belongs to someone else');
    } else if (principal.role !== 'admin') {
      throw new RequestError(RequestErrorCode.FORBIDDEN, 'Not allowed');
    }
    const source = this.bus.subscribe(Topic.UPLOAD_PROGRESS, id);
    const mine = (p: UploadProgress) => principal.role === 'admin' || (principal.role === 'user' && p.userId === principal.userId);
    return filtered(source, mine, undefined, (p) => p.phase === 'DONE' || p.phase === 'FAILED');
  }

  /**
   * Cache events for machines and admins. Everyone gets LORA_DELETED / LORA_UPDATED; reports by
   * machines go to admins (optionally of one machine) and to the machine that made them.
   * Machines get the LoRA id (all they need to evict or refresh), never its owner: every machine
   * would otherwise learn every user's ids. Admins get everything.
   *
   * Shareable (events/shareable.ts): subscribers of one visibility ("admin": everything, "machine":
   * no owner) share one source and one execution per event; `wanted` stays each one's own filter.
   */
  cacheEvents(principal: Principal, machineId: string | null | undefined): ShareableStream<CacheEvent> {
    if (principal.role === 'machine' && machineId && machineId !== principal.machineId) {
      throw new RequestError(RequestErrorCode.FORBIDDEN, "A machine may only follow its own machine's events");
    }
    const wanted = (e: CacheEvent): boolean => {
      if (GLOBAL_EVENT_TYPES.has(e.type)) return true;
      if (principal.role === 'machine') return e.machineId === principal.machineId;
      return !machineId || e.machineId === machineId;
    };
    const admin = principal.role === 'admin';
    const shown = admin ? (e: CacheEvent) => e : withoutOwner;
    return shareable(filtered(this.bus.subscribe(Topic.CACHE_EVENTS), wanted, shown), {
      key: admin ? 'admin' : 'machine',
      source: () => filtered(this.bus.subscribe(Topic.CACHE_EVENTS), () => true, shown),
      wants: wanted,
    });
  }

  /** LORA_DELETED / LORA_UPDATED of a user's own LoRAs (admins: of everyone's), for Studio's live library. */
  loraEvents(principal: Principal): AsyncIterable<CacheEvent> {
    if (principal.role !== 'user' && principal.role !== 'admin') throw new RequestError(RequestErrorCode.FORBIDDEN, 'Not allowed');
    const owner = principal.role === 'user' ? principal.userId : null;
    const wanted = (e: CacheEvent) => GLOBAL_EVENT_TYPES.has(e.type) && (owner === null || e.userId === owner);
    return filtered(this.bus.subscribe(Topic.CACHE_EVENTS), wanted);
  }

  async reportCacheEvent(
    principal: Principal,
    input: { type: string; loraId?: string | null; sharedName?: string | null; reason?: string | null },
  ): Promise<CacheEvent> {
    if (principal.role !== 'machine') throw new RequestError(RequestErrorCode.FORBIDDEN, 'Only machines report cache events');
    const args = parseArgs(reportInput, input, 'input');
    if (!args.loraId === !args.sharedName) {
      throw new ValidationError([{ path: 'input', message: 'give exactly one of loraId and sharedName' }]);
    }
    const loraId = args.loraId ? parseLoraId(args.loraId) : null;
    if (args.loraId && loraId === null) throw new ValidationError([{ path: 'input.loraId', message: 'not a LoRA id' }]);
    const event = cacheEvent(args.type, {
      loraId: loraId?.toString() ?? null,
      sharedName: args.sharedName ?? null,
      machineId: principal.machineId,
      reason: args.reason ?? null,
    });
    await this.bus.publish(Topic.CACHE_EVENTS, event);
    return event;
  }

  /**
   * For an agent back from being offline: which of its cached LoRAs are still READY. It must
   * name each by id and sha256 — it can only confirm what it already holds, never discover.
   */
  async lorasStillValid(entries: { id: string; sha256: string }[]): Promise<string[]> {
    const args = parseArgs(cachedLoras, entries, 'loras');
    const wanted = new Map<string, string>();
    for (const e of args) {
      const id = parseLoraId(e.id);
      if (id !== null) wanted.set(id.toString(), e.sha256.toLowerCase());
    }
    if (wanted.size === 0) return [];
    const rows = await this.db.lora.findMany({
      where: { file_id: { in: [...wanted.keys()].map(BigInt) }, status: 'READY' },
      select: { file_id: true, sha256: true },
    });
    return rows.filter((r) => wanted.get(r.file_id.toString()) === r.sha256.trim()).map((r) => r.file_id.toString());
  }
}

const withoutOwner = (e: CacheEvent): CacheEvent => ({ ...e, userId: null });

/**
 * The values `keep` accepts, as `show` presents them, until the source ends or `last` says the
 * value just sent was the final one.
 */
function filtered<T>(
  source: AsyncIterable<T>,
  keep: (value: T) => boolean,
  show: (value: T) => T = (value) => value,
  last: (value: T) => boolean = () => false,
): AsyncIterable<T> {
  return new Repeater<T>(async (push, stop) => {
    const iterator = source[Symbol.asyncIterator]();
    stop.then(() => iterator.return?.());
    for (;;) {
      const next = await iterator.next();
      if (next.done) break;
      if (!keep(next.value)) continue;
      await push(show(next.value));
      if (last(next.value)) break;
    }
    stop();
  });
}
