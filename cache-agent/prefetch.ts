import type { EnsureOptions, EnsureResult } from './ensure.ts';
import { AgentError } from './errors.ts';
import type { LoraRef } from './lora-refs.ts';
import type { Reporter } from './reporter.ts';
import { scanWorkflow, type WorkflowLoraRef } from './workflow.ts';

/**
 * prefetch(workflow) → every LoRA the ComfyUI workflow references made local, a few at a time.
 * Each item succeeds or fails on its own (the local interface answers 207 when some failed); the
 * user LoRAs used are recorded with the API in one batch.
 */

export interface PrefetchItem {
  ref: WorkflowLoraRef;
  result?: EnsureResult;
  error?: ReturnType<AgentError['toJSON']>;
}

export interface PrefetchResult {
  format: 'api' | 'nodes';
  items: PrefetchItem[];
  problems: { nodeId: string; message: string }[];
}

export type PrefetchOptions = Omit<EnsureOptions, 'recordUsage' | 'onProgress'>;

export interface PrefetchDeps {
  ensure: (ref: LoraRef, options: EnsureOptions) => Promise<EnsureResult>;
  reporter: Reporter;
  /** PREFETCH_CONCURRENCY: LoRAs of one workflow ensured at once. */
  concurrency: number;
}

export async function prefetchWorkflow(
  deps: PrefetchDeps,
  workflow: unknown,
  grant: string | null,
  opts: PrefetchOptions = {},
): Promise<PrefetchResult> {
  const scan = scanWorkflow(workflow);
  const items: PrefetchItem[] = scan.refs.map((ref) => ({ ref }));
  const queue = [...items];
  const worker = async () => {
    for (let item = queue.shift(); item; item = queue.shift()) {
      try {
        if (item.ref.source === 'user' && !grant)
          throw new AgentError('INVALID_GRANT', 'the workflow references user LoRAs: a job grant is required');
        const ref: LoraRef =
          item.ref.source === 'user'
            ? { source: 'user', id: item.ref.id, grant: grant as string }
            : { source: 'shared', name: item.ref.name };
        const lease = opts.lease ? { ...opts.lease, grant: opts.lease.grant ?? grant } : opts.lease;
        item.result = await deps.ensure(ref, { ...opts, lease, recordUsage: false });
      } catch (error) {
        item.error = (error instanceof AgentError ? error : new AgentError('DOWNLOAD_FAILED', (error as Error).message)).toJSON();
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(deps.concurrency, items.length) }, worker));
  const used = items.flatMap((i) => (i.result && i.ref.source === 'user' ? [i.ref.id] : []));
  if (grant) deps.reporter.usage(grant, used, opts.workflowId ?? null, opts.workflowName ?? null);
  return { format: scan.format, items, problems: scan.problems };
}
