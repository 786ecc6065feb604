import { createHash, timingSafeEqual } from 'node:crypto';
import type { Logger } from 'pino';
import type { AgentConfig } from './config.ts';
import type { EnsureOptions, EnsureResult } from './ensure.ts';
import { AgentError, type AgentErrorCode } from './errors.ts';
import type { GrantClaims } from './grant-verifier.ts';
import type { LoraRef } from './lora-refs.ts';

/**
 * Jobs: how a job's grant reaches the ComfyUI node without passing through ComfyUI.
 *
 * The job runner registers the job (its grant, job id, the ComfyUI prompt id it will submit, the
 * ComfyUI instance) before it submits the prompt, and ends it afterwards. The node sends only the
 * prompt id of the prompt it is executing (not secret; ComfyUI keeps it in /history) and its
 * instance; the agent looks the job up and uses that job's grant, so a workflow naming another
 * user's LoRA id gets LORA_NOT_FOUND, as on /ensure. Every lease taken for a job has holder
 * `job:<jobId>`, is bound to the job's grant and ends with the job: at `end`, or when the job
 * expires (min(ttl, LEASE_MAX_SECONDS, the grant's exp)) if the runner died.
 *
 * Jobs live in memory: a restarted agent knows none (the node then gets JOB_NOT_FOUND for user
 * LoRAs); their leases are in model_cache.db and expire on their own.
 */

export interface JobAgent {
  config: Pick<AgentConfig, 'leaseTtlSeconds' | 'leaseMaxSeconds'>;
  ensure(ref: LoraRef, options?: EnsureOptions): Promise<EnsureResult>;
  prefetch(workflow: unknown, grant: string | null, options?: Omit<EnsureOptions, 'recordUsage' | 'onProgress'>): Promise<PrefetchOutcome>;
  release(by: { holder: string; grant: string }): Promise<{ released: number }>;
  /** The grant's claims once its signature verifies (grant-verifier.ts); INVALID_GRANT otherwise. */
  verifyGrant(grant: string): Promise<GrantClaims>;
  /** A lease on a file ensure() answered with, without looking it up again. */
  leaseFile(path: string, lease: NonNullable<EnsureOptions['lease']>): Promise<NonNullable<EnsureResult['lease']>>;
}
interface PrefetchOutcome {
  items: { ref: { source: 'user' | 'shared' }; result?: unknown; error?: unknown }[];
}

export interface JobRegistration {
  jobId: string;
  grant: string;
  /** The ComfyUI prompt id the runner submits with (or binds later with `bind`). */
  promptId?: string | null;
  /** The ComfyUI instance (e.g. its port) the prompt runs on; a node of another instance is refused. */
  instance?: string | null;
  ttlSeconds?: number | null;
  /** Prefetched under the job's leases before the answer. */
  workflow?: unknown;
}

export interface NodeEnsureRequest {
  ref: { source: 'user'; id: string } | { source: 'shared'; name: string };
  promptId: string | null;
  instance: string | null;
  /** Failures the node could not report when they happened (the agent was unreachable), by code. */
  unreported?: Record<string, number>;
}

interface Job {
  jobId: string;
  grant: string;
  grantHash: string;
  userId: string;
  promptId: string | null;
  instance: string | null;
  expiresAt: Date;
  /** User LoRA ids whose use was recorded with the API already (by the prefetch). */
  usageRecorded: Set<string>;
  /** The path each LoRA ("user:<id>" / "shared:<name>") is leased at for the job (until it ends). */
  leased: Map<string, string>;
}

/** How long a node's lookup waits for a runner that binds its prompt id after submitting (older ComfyUI). */
const BIND_WAIT_MS = 2000;
const BIND_POLL_MS = 50;
/** At most this many unreachable-agent failures are taken from one node call (a node counts its own calls). */
const MAX_UNREPORTED = 10_000;

const hash = (grant: string) => createHash('sha256').update(grant).digest();

export class JobRegistry {
  private readonly jobs = new Map<string, Job>();
  private readonly byPrompt = new Map<string, string>();
  /** Loader failures by error code: answered to nodes, plus those nodes reported afterwards. */
  private readonly failures: Record<string, number> = Object.create(null);

  constructor(
    private readonly agent: JobAgent,
    private readonly logger: Logger,
    private readonly now: () => Date = () => new Date(),
  ) {}

  static holder(jobId: string): string {
    return `job:${jobId}`;
  }

  async register(
    input: JobRegistration,
  ): Promise<{ jobId: string; promptId: string | null; expiresAt: string; prefetch?: PrefetchOutcome }> {
    const now = this.now();
    this.sweep(now);
    const { sub, exp } = await this.agent.verifyGrant(input.grant);
    const existing = this.jobs.get(input.jobId);
    if (existing && !sameGrant(existing, input.grant))
      throw new AgentError('INVALID_REQUEST', `job ${input.jobId} is registered already with another grant`);
    const ttl = Math.min(input.ttlSeconds ?? this.agent.config.leaseTtlSeconds, this.agent.config.leaseMaxSeconds);
    const job: Job = existing ?? {
      jobId: input.jobId,
      grant: input.grant,
      grantHash: hash(input.grant).toString('hex'),
      userId: sub,
      promptId: null,
      instance: null,
      expiresAt: new Date(Math.min(now.getTime() + ttl * 1000, exp * 1000)),
      usageRecorded: new Set(),
      leased: new Map(),
    };
    job.instance = input.instance ?? job.instance;
    if (input.promptId) this.bindPrompt(job, input.promptId);
    this.jobs.set(job.jobId, job);
    this.logger.info({ jobId: job.jobId, promptId: job.promptId, instance: job.instance, expiresAt: job.expiresAt }, 'job registered');
    const answer = { jobId: job.jobId, promptId: job.promptId, expiresAt: job.expiresAt.toISOString() };
    if (input.workflow === undefined) return answer;
    const prefetch = await this.agent.prefetch(input.workflow, job.grant, { lease: this.lease(job, now), workflowId: job.jobId });
    for (const item of prefetch.items) {
      const result = item.result as EnsureResult | undefined;
      if (result?.loraId) job.usageRecorded.add(result.loraId);
      if (result?.lease) job.leased.set(refKey(result), result.path);
    }
    return { ...answer, prefetch };
  }

  /** Binds the prompt id ComfyUI returned (ComfyUI < 0.3.45 ignores a client-chosen one). */
  bind(jobId: string, grant: string, promptId: string): { jobId: string; promptId: string } {
    const job = this.live(jobId, grant);
    this.bindPrompt(job, promptId);
    return { jobId, promptId };
  }

  /** Ends the job and releases its leases (also after it expired: leases are released by holder + grant). */
  async end(jobId: string, grant: string): Promise<{ released: number; ended: boolean }> {
    const job = this.jobs.get(jobId);
    const ended = job !== undefined && sameGrant(job, grant);
    if (job && ended) this.forget(job);
    const { released } = await this.agent.release({ holder: JobRegistry.holder(jobId), grant });
    this.logger.info({ jobId, released, ended }, 'job ended');
    return { released, ended };
  }

  /** The node's request: the LoRA for the job its prompt belongs to. Failures are counted and logged. */
  async ensureForNode(request: NodeEnsureRequest): Promise<EnsureResult> {
    // Only what a node can have missed telling us: failures while the agent was unreachable. Any other
    // code is ours to count when we answer it, so a caller cannot grow /stats with names of its own.
    const missed = request.unreported?.AGENT_UNAVAILABLE;
    if (missed !== undefined && missed <= MAX_UNREPORTED) this.count('AGENT_UNAVAILABLE', missed);
    try {
      const job = await this.jobOfPrompt(request);
      if (request.ref.source === 'user') {
        if (!job) throw new AgentError('JOB_NOT_FOUND', noJob(request));
        const id = request.ref.id;
        const result = await this.ensureLeased(job, { source: 'user', id, grant: job.grant }, !job.usageRecorded.has(id));
        job.usageRecorded.add(id);
        return result;
      }
      // Shared LoRAs need no grant: without a job the node still gets the file, without a lease.
      const ref = { source: 'shared' as const, name: request.ref.name };
      return job ? await this.ensureLeased(job, ref, false) : await this.agent.ensure(ref, { lease: null });
    } catch (error) {
      const code: AgentErrorCode = error instanceof AgentError ? error.code : 'DOWNLOAD_FAILED';
      this.count(code, 1);
      const ref = request.ref.source === 'user' ? `user:${request.ref.id}` : `shared:${request.ref.name}`;
      this.logger.warn({ code, ref, promptId: request.promptId, instance: request.instance }, `loader node refused ${ref}: ${code}`);
      throw error;
    }
  }

  /**
   * ensure() under the job's lease. A job holds one lease per file until it ends, so a LoRA the job
   * already leased at the same path is served without another lease (a hit then writes nothing).
   */
  private async ensureLeased(job: Job, ref: LoraRef, recordUsage: boolean): Promise<EnsureResult> {
    const key = ref.source === 'user' ? `user:${ref.id}` : `shared:${ref.name}`;
    const leasedAt = job.leased.get(key);
    const options = { recordUsage, workflowId: job.jobId };
    const result = await this.agent.ensure(ref, { ...options, lease: leasedAt === undefined ? this.lease(job, this.now()) : null });
    if (result.lease) job.leased.set(key, result.path);
    else if (leasedAt !== result.path) {
      // Downloaded again at another path since (evicted, renamed): lease the new file for the job,
      // without a second ensure (which would count this one load as two hits).
      const lease = await this.agent.leaseFile(result.path, this.lease(job, this.now()));
      job.leased.set(key, result.path);
      return { ...result, lease };
    }
    return result;
  }

  stats(): { jobs: number; nodeFailures: Record<string, number> } {
    this.sweep(this.now());
    return { jobs: this.jobs.size, nodeFailures: { ...this.failures } };
  }

  private count(code: string, n: number): void {
    if (!/^[A-Z_]{1,40}$/.test(code) || !Number.isSafeInteger(n) || n <= 0 || n > 1_000_000) return;
    this.failures[code] = (this.failures[code] ?? 0) + n;
  }

  private lease(job: Job, now: Date): NonNullable<EnsureOptions['lease']> {
    const ttlSeconds = Math.max(1, Math.ceil((job.expiresAt.getTime() - now.getTime()) / 1000));
    return { ttlSeconds, holder: JobRegistry.holder(job.jobId), grant: job.grant };
  }

  private bindPrompt(job: Job, promptId: string): void {
    const otherId = this.byPrompt.get(promptId);
    const other = otherId === undefined || otherId === job.jobId ? undefined : this.jobs.get(otherId);
    if (other && other.expiresAt > this.now()) throw new AgentError('INVALID_REQUEST', `prompt ${promptId} belongs to another live job`);
    if (job.promptId) this.byPrompt.delete(job.promptId);
    job.promptId = promptId;
    this.byPrompt.set(promptId, job.jobId);
  }

  private live(jobId: string, grant: string): Job {
    const job = this.jobs.get(jobId);
    if (!job || !sameGrant(job, grant) || job.expiresAt <= this.now()) throw new AgentError('JOB_NOT_FOUND', `no live job ${jobId}`);
    return job;
  }

  private async jobOfPrompt(request: NodeEnsureRequest): Promise<Job | null> {
    if (!request.promptId) return null;
    const deadline = Date.now() + BIND_WAIT_MS;
    for (;;) {
      const jobId = this.byPrompt.get(request.promptId);
      const job = jobId === undefined ? undefined : this.jobs.get(jobId);
      if (job && job.expiresAt > this.now()) {
        if (job.instance && request.instance && job.instance !== request.instance) return null;
        return job;
      }
      if (job || request.ref.source === 'shared' || Date.now() >= deadline) return null;
      await new Promise((r) => setTimeout(r, BIND_POLL_MS));
    }
  }

  private sweep(now: Date): void {
    for (const job of this.jobs.values()) if (job.expiresAt <= now) this.forget(job);
  }

  private forget(job: Job): void {
    this.jobs.delete(job.jobId);
    if (job.promptId && this.byPrompt.get(job.promptId) === job.jobId) this.byPrompt.delete(job.promptId);
  }
}

function refKey(result: EnsureResult): string {
  return result.source === 'user' ? `user:${result.loraId}` : `shared:${result.sharedName}`;
}

function sameGrant(job: Job, grant: string): boolean {
  return timingSafeEqual(Buffer.from(job.grantHash, 'hex'), hash(grant));
}

function noJob(request: NodeEnsureRequest): string {
  return request.promptId
    ? `no live job registered for prompt ${request.promptId}${request.instance ? ` on instance ${request.instance}` : ''}: the runner registers it with POST /jobs`
    : 'the node could not tell which prompt it runs for (no prompt id): user LoRAs need a registered job';
}
