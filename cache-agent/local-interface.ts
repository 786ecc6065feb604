import { chmod, rm } from 'node:fs/promises';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { z } from 'zod';
import type { EnsureOptions, EnsureResult } from './ensure.ts';
import { AgentError, HTTP_STATUS } from './errors.ts';
import { routeJobs } from './job-routes.ts';
import type { JobRegistry } from './jobs.ts';
import type { LoraRef } from './lora-refs.ts';
import type { PrefetchOptions, PrefetchResult } from './prefetch.ts';
import { grantField, loraIdField, sharedNameField } from './request-fields.ts';
import type { CacheStore } from './store.ts';
import type { AgentTelemetry } from './telemetry-sdk.ts';

/**
 * The local interface for ComfyUI nodes and job runners, on 127.0.0.1 (or a unix socket):
 *   POST /ensure   {source:'user', id, grant} | {source:'shared', name, grant?}  (+ lease, workflowId)
 *   POST /prefetch {workflow, grant?, lease?, workflowId?, workflowName?}
 *   POST /release  {leaseId} | {holder, grant}
 *   POST /jobs, /jobs/{id}/prompt, /jobs/{id}/end, /node/ensure   (job-routes.ts)
 *   GET  /stats, GET /health, GET /metrics (Prometheus text)
 * Errors: `{ error: { code, message, retryable, details } }` with the status of the code.
 *
 * Who may call (checked before anything else): no browser (any `Origin`, or `Sec-Fetch-Site` other
 * than `none` → FORBIDDEN_ORIGIN); on TCP only a loopback `Host` (or AGENT_HOST / AGENT_ALLOWED_HOSTS)
 * so a DNS-rebinding page is refused (FORBIDDEN_HOST). On a unix socket its file mode decides.
 *
 * This file only translates requests: it parses and checks bodies, then calls the handlers the
 * wiring (app.ts) passes in — `ensure` is CacheCore.ensure (ensure.ts), `prefetch` prefetch.ts.
 */

/** What the local interface calls; app.ts provides them from the running agent. */
export interface LocalInterfaceHandlers {
  health(): unknown;
  stats(): unknown;
  ensure(ref: LoraRef, options: EnsureOptions): Promise<EnsureResult>;
  prefetch(workflow: unknown, grant: string | null, options: PrefetchOptions): Promise<PrefetchResult>;
  /** By the lease's token, or by holder with the job grant the leases were taken with. */
  release(by: Parameters<CacheStore['releaseLeases']>[0]): Promise<{ released: number }>;
  /** The jobs runners registered for the ComfyUI node (`/jobs`, `/node/ensure`). */
  jobs: JobRegistry;
  /** GET /metrics (Prometheus text); null when METRICS_ENABLED=false. */
  prometheus?: (() => AgentTelemetry['prometheus']) | null;
}

const MAX_BODY_BYTES = 8 * 1024 * 1024;

const lease = z
  .union([
    z.boolean(),
    z.object({
      ttlSeconds: z
        .number()
        .int()
        .positive()
        .max(7 * 86_400)
        .optional(),
      holder: z.string().min(1).max(200).optional(),
    }),
  ])
  .optional();
const common = { lease, workflowId: z.string().max(200).optional(), workflowName: z.string().max(500).optional() };
const ensureBody = z.discriminatedUnion('source', [
  z.object({ source: z.literal('user'), id: loraIdField, grant: grantField, ...common }),
  z.object({ source: z.literal('shared'), name: sharedNameField, grant: grantField.optional(), ...common }),
]);
const prefetchBody = z.object({ workflow: z.unknown(), grant: grantField.optional(), ...common });
const releaseBody = z.union([
  z.object({ leaseId: z.string().min(1).max(100) }),
  z.object({ holder: z.string().min(1).max(200), grant: grantField }),
]);

type LeaseInput = z.infer<typeof lease>;
/** The lease to take: the default one, none, or the caller's, bound to the request's grant (if any). */
const leaseOption = (value: LeaseInput, grant: string | undefined) =>
  value === false ? null : { ...(value === undefined || value === true ? {} : value), grant: grant ?? null };

export interface LocalInterface {
  address: string;
  close(): Promise<void>;
}

export async function startLocalInterface(
  handlers: LocalInterfaceHandlers,
  listen: { host: string; port: number } | { socket: string },
  /** `Host` names accepted on TCP (config.allowedHosts); the unix socket checks none. */
  allowedHosts: readonly string[],
  logger: Logger,
): Promise<LocalInterface> {
  const tcpHosts = 'socket' in listen ? null : new Set(allowedHosts);
  const server = createServer((req, res) => {
    Promise.resolve()
      .then(() => checkCaller(req, tcpHosts))
      .then(() => handle(handlers, req, res))
      .catch((error: unknown) => {
        const agentError = error instanceof AgentError ? error : null;
        if (!agentError) logger.error({ err: error, url: req.url }, 'local interface: unexpected error');
        const e = agentError ?? new AgentError('DOWNLOAD_FAILED', 'internal error', { retryable: true });
        const status = agentError ? ((error as { status?: number }).status ?? HTTP_STATUS[e.code]) : 500;
        send(res, status, { error: e.toJSON() });
      });
  });
  server.keepAliveTimeout = 5000;
  if ('socket' in listen) {
    await rm(listen.socket, { force: true });
    await new Promise<void>((resolve, reject) => server.once('error', reject).listen(listen.socket, resolve));
    await chmod(listen.socket, 0o660);
  } else {
    await new Promise<void>((resolve, reject) => server.once('error', reject).listen(listen.port, listen.host, resolve));
  }
  const address = 'socket' in listen ? listen.socket : `http://${listen.host}:${(server.address() as AddressInfo).port}`;
  return {
    address,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

async function handle(handlers: LocalInterfaceHandlers, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const path = (req.url ?? '/').split('?')[0];
  const routed = await routeJobs(handlers.jobs, req, path ?? '/', { readJson, parse });
  if (routed) return send(res, routed.status, routed.body);
  const route = `${req.method} ${path}`;
  const prometheus = route === 'GET /metrics' ? handlers.prometheus?.() : undefined;
  if (prometheus) return prometheus.getMetricsRequestHandler(req, res);
  switch (route) {
    case 'GET /health':
      return send(res, 200, handlers.health());
    case 'GET /stats':
      return send(res, 200, { ...(handlers.stats() as object), ...handlers.jobs.stats() });
    case 'POST /ensure': {
      const body = parse(ensureBody, await readJson(req));
      const options = {
        lease: leaseOption(body.lease, body.grant),
        workflowId: body.workflowId ?? null,
        workflowName: body.workflowName ?? null,
      };
      const ref =
        body.source === 'user'
          ? { source: 'user' as const, id: body.id, grant: body.grant }
          : { source: 'shared' as const, name: body.name };
      return send(res, 200, await handlers.ensure(ref, options));
    }
    case 'POST /prefetch': {
      const body = parse(prefetchBody, await readJson(req));
      const result = await handlers.prefetch(body.workflow, body.grant ?? null, {
        lease: leaseOption(body.lease, body.grant),
        workflowId: body.workflowId ?? null,
        workflowName: body.workflowName ?? null,
      });
      return send(res, result.items.some((i) => i.error) ? 207 : 200, result);
    }
    case 'POST /release': {
      const body = await readJson(req);
      if (isObject(body) && 'holder' in body && !('grant' in body)) {
        throw new AgentError('INVALID_REQUEST', 'releasing by holder needs the job grant the leases were taken with: {"holder", "grant"}', {
          details: { issues: [{ path: 'grant', message: 'required with holder' }] },
        });
      }
      return send(res, 200, await handlers.release(parse(releaseBody, body)));
    }
    default: {
      const known = ['/health', '/stats', '/ensure', '/prefetch', '/release'].includes(path ?? '');
      res.setHeader('allow', path === '/health' || path === '/stats' ? 'GET' : 'POST');
      throw Object.assign(new AgentError('INVALID_REQUEST', known ? `${req.method} is not allowed on ${path}` : `no route ${path}`), {
        status: known ? 405 : 404,
      });
    }
  }
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null;

/** Refuses browsers (DNS rebinding, cross-site requests) before a route or body is looked at. */
function checkCaller(req: IncomingMessage, tcpHosts: Set<string> | null): void {
  const fetchSite = req.headers['sec-fetch-site'];
  if (req.headers.origin !== undefined || (fetchSite !== undefined && fetchSite !== 'none')) {
    throw new AgentError(
      'FORBIDDEN_ORIGIN',
      'browser requests are refused (Origin / Sec-Fetch-Site): call the agent from a local process',
      {
        details: { origin: req.headers.origin ?? null, secFetchSite: fetchSite ?? null },
      },
    );
  }
  if (!tcpHosts) return;
  const host = req.headers.host ?? '';
  const name = /^(\[[0-9A-Fa-f:.]+\]|[^:[\]]+)(?::\d{1,5})?$/.exec(host)?.[1]?.toLowerCase();
  if (name === undefined || !tcpHosts.has(name)) {
    throw new AgentError('FORBIDDEN_HOST', `Host ${JSON.stringify(host)} is not this agent: call it as 127.0.0.1, localhost or [::1]`, {
      details: { host, allowed: [...tcpHosts] },
    });
  }
}

function parse<T extends z.ZodType>(schema: T, value: unknown): z.infer<T> {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  throw new AgentError('INVALID_REQUEST', 'the request body is not valid', {
    details: { issues: result.error.issues.map((i) => ({ path: i.path.join('.'), message: i.message })) },
  });
}

async function readJson(req: IncomingMessage): Promise<unknown> {
  const type = req.headers['content-type'] ?? '';
  if (!/^application\/json\b/i.test(type)) throw new AgentError('INVALID_REQUEST', 'send a JSON body (content-type: application/json)');
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY_BYTES)
      throw new AgentError('INVALID_REQUEST', `the body exceeds ${MAX_BODY_BYTES} bytes`, { details: { maxBytes: MAX_BODY_BYTES } });
    chunks.push(chunk as Buffer);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw new AgentError('INVALID_REQUEST', 'the body is not valid JSON');
  }
}

function send(res: ServerResponse, status: number, body: unknown): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}
