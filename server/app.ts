import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import pino, { type Logger } from 'pino';
import { createDownloadTokens } from './auth/download-tokens.ts';
import type { GrantKeySet } from './auth/grant-keys.ts';
import { createGrantSigner } from './auth/grants.ts';
import { cachedTokenVerifier } from './auth/token-cache.ts';
import { createTokenVerifier } from './auth/tokens.ts';
import type { Config } from './config.ts';
import { createDb, type Db } from './db/client.ts';
import { migrate } from './db/migrate.ts';
import { RequestErrorCode } from './domain/errors.ts';
import { createInMemoryEventBus, type EventBus } from './events/bus.ts';
import { createRedisEventBus } from './events/redis.ts';
import { AUDIT_EXPORT_PATH, createAuditExportHandler } from './http/audit-export.ts';
import { JWKS_PATH, serveJwks } from './http/jwks.ts';
import { createOwnerDownloadHandler, ownerDownloadFailed } from './http/owner-download-route.ts';
import type { SharedFanOut } from './http/shared-fanout.ts';
import { attachSubscriptions } from './http/subscriptions.ts';
import { loadTrustedDocuments } from './http/trusted-documents.ts';
import { createYogaServer } from './http/yoga.ts';
import { startGenOutDataUpgrade } from './jobs/gen-out-data-upgrade.ts';
import { createJobRunner, type JobRunner } from './jobs/runner.ts';
import { createRateLimits } from './limits/rate-limits.ts';
import { createServices, type Services } from './services/index.ts';
import { OWNER_DOWNLOAD_PATH } from './services/owner-downloads.ts';
import { applyUploadCors } from './storage/blob-cors.ts';
import { BlobStore } from './storage/blob-store.ts';
import { createDevTokenHandler } from './studio/dev-tokens.ts';
import { createStudioStaticHandler, STUDIO_PATH } from './studio/static-files.ts';
import { startBusinessGauges } from './telemetry/business-gauges.ts';
import { countWebSockets, instrumentBus } from './telemetry/event-telemetry.ts';
import { sdkOperationNames, useGraphQLTelemetry } from './telemetry/graphql-telemetry.ts';
import { createMetricsHandler } from './telemetry/metrics-endpoint.ts';
import { currentTelemetry, startTelemetry } from './telemetry/sdk.ts';
import { watchBodyIdle } from './uploads/body-idle.ts';

/**
 * Builds the API server from a resolved configuration. Nothing happens on import or on build:
 * `start()` migrates, prepares storage, starts the job workers and listens; `stop()` stops
 * accepting, lets in-flight requests finish (up to the grace period) and closes everything.
 */

/** Config whose external services are decided (runtime.ts fills in embedded ones when unset). */
export type RuntimeConfig = Config & {
  databaseUrl: string;
  storage: Config['storage'] & { connectionString: string };
  auth: Config['auth'] & { grantKeys: GrantKeySet };
};

export interface App {
  config: RuntimeConfig;
  logger: Logger;
  db: Db;
  blobs: BlobStore;
  bus: EventBus;
  jobs: JobRunner;
  services: Services;
  server: Server;
  /** The WebSocket subscriptions' shared fan-out (null with WS_SHARED_FANOUT=false). */
  fanOut: SharedFanOut | null;
  /** Listens and resolves with the base URL (e.g. http://127.0.0.1:4000). */
  start(): Promise<string>;
  stop(): Promise<void>;
}

const PACKAGE_ROOT = fileURLToPath(new URL('..', import.meta.url));

/** Largest ordinary (non-multipart) request body. */
export const MAX_JSON_BODY_BYTES = 1024 * 1024;

export interface BuildOptions {
  logger?: Logger;
  /** Studio's dev token picker (`GET /studio/dev-tokens`): only when the development secret was generated here. */
  studioDevTokens?: boolean;
}

export function buildApp(config: RuntimeConfig, options: BuildOptions = {}): App {
  const logger = options.logger ?? pino({ level: config.logLevel, base: { service: 'lora-vault' } });
  const db = createDb(config.databaseUrl);
  const reads = new pg.Pool({ connectionString: config.databaseUrl, max: 10 });
  const blobs = new BlobStore({
    connectionString: config.storage.connectionString,
    loraContainer: config.storage.loraContainer,
    sharedContainer: config.storage.sharedContainer,
    sharedPrefix: config.storage.sharedPrefix,
  });
  const busHandle = config.redisUrl
    ? createRedisEventBus(config.redisUrl, (error) => logger.warn({ err: error }, 'redis event bus'))
    : createInMemoryEventBus();
  const bus = instrumentBus(busHandle.bus);
  const jobs = createJobRunner({
    databaseUrl: config.databaseUrl,
    db,
    blobs,
    logger,
    workers: config.jobsEnabled,
    pollingIntervalSeconds: config.jobsPollSeconds,
    uploadStaleAfterMs: config.uploadStaleMs,
    uploadSessionRetentionMs: config.resumable.retentionMs,
    auditRetentionDays: config.retention.auditRetentionDays,
  });
  const limitsHandle = createRateLimits({
    config: config.rateLimits,
    redisUrl: config.redisUrl,
    uploadsPerUser: config.uploadLimits.perUser,
    uploadLeaseSeconds: Math.ceil(config.uploadStaleMs / 1000),
    onError: (error) => logger.warn({ err: error }, 'rate limits store'),
  });
  // owner download links point at PUBLIC_URL, else at the address this server listens on (known after listen)
  let listeningUrl: string | null = null;
  const publicUrl = () => config.ownerDownloads.publicUrl ?? listeningUrl ?? `http://${config.host}:${config.port}`;
  const services = createServices({
    downloadTokens: createDownloadTokens(config.auth.grantKeys),
    publicUrl,
    limits: limitsHandle.limits,
    config,
    db,
    reads,
    blobs,
    jobs,
    bus,
    grantSigner: createGrantSigner(config.auth.grantKeys),
    logger,
  });
  const verify = cachedTokenVerifier(
    createTokenVerifier({
      secret: config.auth.jwtSecret,
      jwksUrl: config.auth.jwksUrl,
      issuer: config.auth.issuer,
      audience: config.auth.audience,
    }),
  );
  const trustedDocuments = loadTrustedDocuments(resolve(PACKAGE_ROOT, config.trustedDocuments.file), config.trustedDocuments.only);
  const yoga = createYogaServer({
    trustedDocuments,
    services,
    verify,
    logger,
    production: config.production,
    graphiql: config.graphiql,
    corsOrigins: config.corsOrigins,
    maxUploadBytes: config.maxUploadBytes,
    uploadIdleMs: config.uploadLimits.idleMs,
    trustProxyHops: config.trustProxyHops,
    telemetry: useGraphQLTelemetry({ operationNames: sdkOperationNames(resolve(PACKAGE_ROOT, 'sdk/gql/persisted-documents.json')) }),
  });
  const metricsHandler = createMetricsHandler(config.telemetry.metrics, () => currentTelemetry()?.prometheus ?? null);

  const auditExport = createAuditExportHandler({ verify, auditLog: services.auditLog, logger });
  const ownerDownload = createOwnerDownloadHandler({ ownerDownloads: services.ownerDownloads, blobs, logger });
  // Studio's uploads PUT blocks straight to Blob Storage: the page may connect to its origin
  const studio = createStudioStaticHandler(resolve(PACKAGE_ROOT, 'studio/dist'), [new URL(blobs.url('content')).origin]);
  const devTokens = options.studioDevTokens && config.auth.jwtSecret ? createDevTokenHandler(config.auth.jwtSecret) : null;

  async function ready(): Promise<{ ok: boolean; checks: Record<string, string> }> {
    const checks: Record<string, string> = {};
    await Promise.all([
      db.$queryRaw`SELECT 1`.then(
        () => {
          checks.database = 'ok';
        },
        (e: Error) => {
          checks.database = e.message;
        },
      ),
      blobs.ping().then(
        () => {
          checks.storage = 'ok';
        },
        (e: Error) => {
          checks.storage = e.message;
        },
      ),
    ]);
    return { ok: Object.values(checks).every((v) => v === 'ok'), checks };
  }

  function handle(req: IncomingMessage, res: ServerResponse): void {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    if (path === '/healthz') {
      json(res, 200, { status: 'ok' });
      return;
    }
    if (path === JWKS_PATH) {
      serveJwks(req, res, config.auth.grantKeys);
      return;
    }
    if (path === '/metrics' && metricsHandler) {
      metricsHandler(req, res);
      return;
    }
    if (path === '/readyz') {
      void ready().then((r) => json(res, r.ok ? 200 : 503, { status: r.ok ? 'ready' : 'not ready', checks: r.checks }));
      return;
    }
    if (path === AUDIT_EXPORT_PATH) {
      auditExport(req, res).catch((error: unknown) => {
        logger.error({ err: error }, 'audit export failed');
        if (!res.headersSent)
          json(res, 500, { errors: [{ message: 'Internal error', extensions: { code: RequestErrorCode.INTERNAL_SERVER_ERROR } }] });
        else res.destroy();
      });
      return;
    }
    if (path.startsWith(OWNER_DOWNLOAD_PATH)) {
      ownerDownload(req, res, path).catch((error: unknown) => ownerDownloadFailed(res, logger, error));
      return;
    }
    if (path === STUDIO_PATH || path.startsWith(`${STUDIO_PATH}/`)) {
      if (devTokens && path === `${STUDIO_PATH}/dev-tokens`) devTokens(req, res);
      else studio(req, res, path);
      return;
    }
    const length = Number(req.headers['content-length'] ?? 0);
    const multipart = (req.headers['content-type'] ?? '').startsWith('multipart/');
    if (!multipart && req.method === 'POST' && req.headers['content-length'] === undefined) {
      // a chunked body of unknown size could not be held to the 1 MiB limit
      res.setHeader('connection', 'close');
      json(res, 411, { errors: [{ message: 'Content-Length is required', extensions: { code: RequestErrorCode.BAD_USER_INPUT } }] });
      return;
    }
    if (!multipart && length > MAX_JSON_BODY_BYTES) {
      res.setHeader('connection', 'close');
      json(res, 413, {
        errors: [{ message: `Request body over ${MAX_JSON_BODY_BYTES} bytes`, extensions: { code: RequestErrorCode.BAD_USER_INPUT } }],
      });
      return;
    }
    if (!multipart && length > 0) {
      // a JSON body that stops sending holds its socket like a stalled upload: cut it the same way
      const idle = watchBodyIdle(req, config.uploadLimits.idleMs, () => req.socket.destroy());
      req.once('end', idle.stop);
      req.once('close', idle.stop);
    }
    // A multipart response may come before the whole body was read (a refusal, a too-large
    // file): the connection then closes rather than reading up to 2 GiB nobody wants.
    if (multipart) res.setHeader('connection', 'close');
    void yoga.handle(req, res);
  }

  // Node checks the headers timeout on this interval, so it bounds how late a slow client is cut
  const server = createServer({ connectionsCheckingInterval: Math.min(30_000, config.httpTimeouts.headersMs / 2) }, handle);
  const subscriptions = attachSubscriptions({
    server,
    yoga,
    verify,
    logger,
    production: config.production,
    trustedDocuments,
    caps: { ...config.websocket, socketsPerPrincipal: config.rateLimits.wsOpenPerPrincipal },
    limits: limitsHandle.limits,
    trustProxyHops: config.trustProxyHops,
    sharedFanOut: config.wsSharedFanOut,
  });
  // No total request timeout: a 2 GiB upload may take long while it moves. A body that stops is
  // cut by UPLOAD_IDLE_SECONDS (uploads/body-idle.ts); slow headers and idle keep-alive sockets here.
  countWebSockets(server);
  server.requestTimeout = 0;
  server.headersTimeout = config.httpTimeouts.headersMs;
  server.keepAliveTimeout = config.httpTimeouts.keepAliveMs;
  const sockets = new Set<Socket>();
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });

  let started = false;
  let upgrade: ReturnType<typeof startGenOutDataUpgrade> | undefined;
  let gauges: ReturnType<typeof startBusinessGauges> | undefined;
  return {
    config,
    logger,
    db,
    blobs,
    bus,
    jobs,
    services,
    server,
    fanOut: subscriptions.fanOut,
    async start() {
      startTelemetry(config.telemetry); // once per process (README "Observability")
      const result = await migrate(config.databaseUrl);
      if (result.applied.length) logger.info({ applied: result.applied }, 'applied migrations');
      await blobs.ensureContainers();
      // browsers PUT upload blocks straight to storage (Studio): its CORS rule (server/storage/blob-cors.ts)
      if (config.storageCorsOrigins.length) await applyUploadCors(config.storage.connectionString, config.storageCorsOrigins);
      await busHandle.connect();
      await limitsHandle.connect();
      await jobs.start();
      // rows written before docs/flat-file.md, rewritten in the background (resumes where it stopped)
      if (config.jobsEnabled) upgrade = startGenOutDataUpgrade(db, logger);
      gauges = startBusinessGauges(services.businessMetrics, config.telemetry.businessIntervalMs, logger);
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(config.port, config.host, () => {
          server.off('error', reject);
          resolve();
        });
      });
      started = true;
      const address = server.address() as AddressInfo;
      const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
      listeningUrl = `http://${host === '0.0.0.0' || host === '[::]' ? '127.0.0.1' : host}:${address.port}`;
      if (config.production && !config.ownerDownloads.publicUrl)
        logger.warn({ listeningUrl }, 'PUBLIC_URL is not set: owner download links point at the listening address');
      if (config.production && config.storageCorsOrigins.length === 0)
        logger.warn(
          'no storage CORS rule (STORAGE_CORS_ORIGINS, CORS_ORIGINS and PUBLIC_URL unset): browsers cannot upload straight to storage, Studio uploads will fail',
        );
      return listeningUrl;
    },
    async stop() {
      services.uploadSessions.stop();
      await subscriptions.close();
      if (started) {
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        server.closeIdleConnections();
        const timer = setTimeout(() => {
          for (const s of sockets) s.destroy();
        }, config.shutdownGraceMs);
        await closed;
        clearTimeout(timer);
        started = false;
      }
      gauges?.stop();
      await upgrade?.stop();
      await jobs.stop().catch((error: unknown) => logger.warn({ err: error }, 'job runner stop failed'));
      await db.$disconnect();
      await reads.end();
      await busHandle.close();
      await limitsHandle.close();
    },
  };
}

function json(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8' });
  res.end(JSON.stringify(body));
}
