import type { IncomingMessage } from 'node:http';
import { z } from 'zod';
import { AgentError } from './errors.ts';
import type { JobRegistry } from './jobs.ts';
import { grantField, loraIdField, sharedNameField } from './request-fields.ts';

/**
 * The local interface's job routes (same caller checks as every route):
 *   POST /jobs                {jobId, grant, promptId?, instance?, ttlSeconds?, workflow?}   the runner, before the prompt
 *   POST /jobs/{jobId}/prompt {grant, promptId}                                          the runner, late prompt id
 *   POST /jobs/{jobId}/end    {grant}                                                    the runner, after the prompt
 *   POST /node/ensure         {source, id | name, promptId, instance, unreported?}       the ComfyUI loader node
 */

const jobId = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$/, 'letters, digits and ._:- (at most 200)');
const promptId = z.string().min(1).max(200);
const instance = z.string().min(1).max(200).nullish();

const registerBody = z.object({
  jobId,
  grant: grantField,
  promptId: promptId.nullish(),
  instance,
  ttlSeconds: z
    .number()
    .int()
    .positive()
    .max(7 * 86_400)
    .nullish(),
  workflow: z.unknown().optional(),
});
const bindBody = z.object({ grant: grantField, promptId });
const endBody = z.object({ grant: grantField });
const nodeCommon = {
  promptId: promptId.nullish().transform((v) => v ?? null),
  instance: instance.transform((v) => v ?? null),
  unreported: z.record(z.string(), z.number()).optional(),
};
const nodeEnsureBody = z.discriminatedUnion('source', [
  z.object({ source: z.literal('user'), id: loraIdField, ...nodeCommon }),
  z.object({
    source: z.literal('shared'),
    name: sharedNameField,
    ...nodeCommon,
  }),
]);

export interface JobRouteIo {
  readJson(req: IncomingMessage): Promise<unknown>;
  parse<T extends z.ZodType>(schema: T, value: unknown): z.infer<T>;
}

/** Answers a job route (`{status, body}`), or null when `path` is not one. */
export async function routeJobs(
  jobs: JobRegistry,
  req: IncomingMessage,
  path: string,
  io: JobRouteIo,
): Promise<{ status: number; body: unknown } | null> {
  const match = /^\/jobs(?:\/([^/]+)\/(prompt|end))?$/.exec(path);
  if (!match && path !== '/node/ensure') return null;
  if (req.method !== 'POST')
    throw Object.assign(new AgentError('INVALID_REQUEST', `${req.method} is not allowed on ${path}`), { status: 405 });
  const body = await io.readJson(req);
  if (path === '/node/ensure') {
    const parsed = io.parse(nodeEnsureBody, body);
    const request = {
      ref: parsed.source === 'user' ? { source: 'user' as const, id: parsed.id } : { source: 'shared' as const, name: parsed.name },
      promptId: parsed.promptId,
      instance: parsed.instance,
      ...(parsed.unreported ? { unreported: parsed.unreported } : {}),
    };
    return { status: 200, body: await jobs.ensureForNode(request) };
  }
  const [, id, action] = match as RegExpExecArray;
  if (id === undefined) {
    const r = io.parse(registerBody, body);
    const result = await jobs.register({
      jobId: r.jobId,
      grant: r.grant,
      promptId: r.promptId ?? null,
      instance: r.instance ?? null,
      ttlSeconds: r.ttlSeconds ?? null,
      ...(r.workflow === undefined ? {} : { workflow: r.workflow }),
    });
    return { status: result.prefetch?.items.some((item) => item.error) ? 207 : 200, body: result };
  }
  const job = decodedJobId(id);
  if (action === 'prompt') {
    const r = io.parse(bindBody, body);
    return { status: 200, body: jobs.bind(job, r.grant, r.promptId) };
  }
  return { status: 200, body: await jobs.end(job, io.parse(endBody, body).grant) };
}

/** The job id of a route path; a malformed escape (`%E0`) is the caller's error, not ours. */
function decodedJobId(raw: string): string {
  try {
    return decodeURIComponent(raw);
  } catch {
    throw new AgentError('INVALID_REQUEST', 'the job id in the path is not valid percent-encoding');
  }
}
