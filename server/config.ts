import { isIP } from 'node:net';
import { z } from 'zod';
import { type OtlpProtocol, otlpProtocolEnv, tracesProtocol } from '../cache-agent/otlp-protocol.ts';
import { GrantKeyError, type GrantKeySet, parseGrantKeys } from './auth/grant-keys.ts';

/**
 * The server's configuration: the only reader of `process.env`. Parsed once at start-up;
 * every problem is reported together (see `ConfigError`). Defaults are documented in README.md.
 */

const GiB = 1024 ** 3;

const boolish = z.enum(['true', 'false', '1', '0', 'yes', 'no']).transform((v) => v === 'true' || v === '1' || v === 'yes');

const positiveInt = z.coerce.number().int().positive();

const commaList = z.string().transform((v) => v.split(',').flatMap((item) => item.trim() || []));

/** `*` or an origin exactly as browsers send it: scheme://host[:port], no path. */
const corsOrigin = z.union([
  z.literal('*'),
  z.url({ protocol: /^https?$/ }).refine((o) => URL.canParse(o) && new URL(o).origin === o, 'not an origin'),
]);

/** A rate limit: `points/seconds` (e.g. `600/60`: 600 per minute); windows are whole seconds (Redis keys expire in seconds). */
const rateLimit = z
  .string()
  .regex(/^\d+\/\d+$/, 'must be points/seconds, e.g. 600/60')
  .transform((v) => {
    const [points, seconds] = v.split('/').map(Number) as [number, number];
    return { points, windowSeconds: seconds };
  })
  .refine((l) => l.points >= 1 && l.windowSeconds >= 1 && l.windowSeconds <= 7 * 24 * 3600, 'points ≥ 1, 1 s ≤ window ≤ 7 days');
/** `10.0.0.0/8`, `::1/128` or a bare address. */
function isCidr(value: string): boolean {
  const [address = '', prefix] = value.split('/');
  const version = isIP(address);
  return version !== 0 && (prefix === undefined || (/^\d{1,3}$/.test(prefix) && Number(prefix) <= (version === 4 ? 32 : 128)));
}

/** A duration in seconds (fractions allowed), at most an hour. */
const seconds = z.coerce.number().positive().max(3600);

const envSchema = z
  .object({
    NODE_ENV: z.enum(['development', 'production', 'test']).default('development'),
    /** TCP port of the HTTP/WebSocket server. */
    PORT: z.coerce.number().int().min(0).max(65535).default(4000),
    /** Interface to bind; production deployments usually set 0.0.0.0. */
    HOST: z.string().min(1).default('127.0.0.1'),
    /** Where embedded PostgreSQL, Azurite and the dev signing secret keep their data. */
    DATA_DIR: z.string().min(1).default('./.data'),
    /** PostgreSQL URL; unset = embedded PostgreSQL under DATA_DIR. */
    DATABASE_URL: z.url({ protocol: /^postgres(ql)?$/ }).optional(),
    /** Azure Storage connection string; unset = Azurite under DATA_DIR. */
    AZURE_STORAGE_CONNECTION_STRING: z.string().min(1).optional(),
    /** Container holding user LoRAs (`content/{uuid}.{ext}`; before issue 17 `users/{user_id}/loras/{file_id}.{ext}`). */
    LORA_CONTAINER: z
      .string()
      .regex(/^[a-z0-9](?:[a-z0-9-]{1,61}[a-z0-9])$/)
      .default('user-loras'),
    /** Container and prefix of the shared LoRA library. */
    SHARED_LORA_CONTAINER: z
      .string()
      .regex(/^[a-z0-9](?:[a-z0-9-]{1,61}[a-z0-9])$/)
      .default('emprops-share'),
    SHARED_LORA_PREFIX: z.string().default('models/loras/'),
    /** Lifetime of read-only download SAS URLs. */
    SAS_TTL_SECONDS: positiveInt.max(7 * 24 * 3600).default(900),
    /** Redis for the cross-replica event bus; unset = in-memory. */
    REDIS_URL: z.url({ protocol: /^rediss?$/ }).optional(),
    /** HS256 secret for bearer tokens (≥ 32 chars); unset in development = generated under DATA_DIR. */
    JWT_SECRET: z.string().min(32).optional(),
    /** JWKS URL for production identity providers (RS256/ES256...). */
    JWT_JWKS_URL: z.url().optional(),
    JWT_ISSUER: z.string().min(1).optional(),
    JWT_AUDIENCE: z.string().min(1).optional(),
    /** Retired (HS256 job grants): set, it is a start-up error pointing at GRANT_SIGNING_KEY. */
    GRANT_SECRET: z.string().optional(),
    /**
     * Ed25519 key(s) job grants are signed with: PEM, JWK or JWK Set, the first signs (server/auth/grant-keys.ts).
     * Unset: generated under DATA_DIR outside production; required in production.
     */
    GRANT_SIGNING_KEY: z.string().optional(),
    /** Longest lifetime a job grant may be minted with. */
    GRANT_MAX_TTL_SECONDS: positiveInt.default(24 * 3600),
    QUOTA_DEFAULT_MAX_BYTES: positiveInt.default(10 * GiB),
    QUOTA_DEFAULT_MAX_COUNT: positiveInt.default(100),
    /** Largest accepted LoRA file. */
    MAX_UPLOAD_BYTES: positiveInt.default(2 * GiB),
    /** Serve GraphiQL at GET /graphql; unset = off in production, on otherwise. */
    GRAPHIQL: boolish.optional(),
    /** Browser origins allowed by CORS (comma list, or `*`); unset = none in production, any elsewhere. Never with credentials. */
    CORS_ORIGINS: commaList.pipe(z.array(corsOrigin)).optional(),
    /** Browser origins Blob Storage lets PUT upload blocks (Studio's resumable uploads); unset = none in production, CORS_ORIGINS' value (`*`) otherwise; empty = storage's CORS left alone. */
    STORAGE_CORS_ORIGINS: commaList.pipe(z.array(corsOrigin)).optional(),
    LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    /** Run the background job workers (pg-boss) in this process. */
    JOBS_ENABLED: boolish.default(true),
    /** Uploads (and blobs without a LoRA) older than this are leftovers of a crash. */
    UPLOAD_STALE_SECONDS: positiveInt.default(3 * 3600),
    /** How often idle job workers poll for work (pg-boss's minimum is 0.5). */
    JOBS_POLL_SECONDS: z.coerce.number().min(0.5).max(600).default(2),
    /** Accept only the SDK's trusted documents (by hash) from non-admins. */
    TRUSTED_DOCUMENTS_ONLY: boolish.default(false),
    /** The hash → document map generated with the SDK. */
    TRUSTED_DOCUMENTS_FILE: z.string().min(1).default('sdk/gql/persisted-documents.json'),
    /** Subscriptions (and queries) one WebSocket may run at once; more answer RATE_LIMITED. */
    WS_MAX_SUBSCRIPTIONS_PER_SOCKET: positiveInt.default(32),
    /** The same, per caller (token subject) across its WebSockets on one process. */
    WS_MAX_SUBSCRIPTIONS_PER_PRINCIPAL: positiveInt.default(64),
    /** One execution and serialisation per event for subscribers sharing document, variables and visibility. */
    WS_SHARED_FANOUT: boolish.default(true),
    /** Seconds to wait for in-flight requests on shutdown. */
    SHUTDOWN_GRACE_SECONDS: positiveInt.default(10),
    // Stalled and concurrent uploads, slow clients (README "Configuration"; uploadLimits/httpTimeouts below)
    /** An upload body that sends no byte this long ends UPLOAD_INTERRUPTED; its socket is closed. */
    UPLOAD_IDLE_SECONDS: seconds.default(60),
    /** Uploads one user may run at once (per process); more are refused TOO_MANY_UPLOADS. */
    UPLOAD_CONCURRENCY_PER_USER: positiveInt.default(4),
    /** Uploads one server process runs at once, all users together. */
    UPLOAD_CONCURRENCY_PER_PROCESS: positiveInt.default(64),
    /** A request whose headers take longer than this is cut (slow-header clients). */
    HTTP_HEADERS_TIMEOUT_SECONDS: seconds.default(30),
    /** An idle keep-alive connection is closed after this long. */
    HTTP_KEEPALIVE_TIMEOUT_SECONDS: seconds.default(5),
    // Account deletion and the audit log (issue 13 §4-5; README "Configuration"; retention below)
    /** Days between deleteUserLoraAccount and the purge of the user's blobs and rows (fractions allowed: tests use seconds). */
    ACCOUNT_PURGE_DAYS: z.coerce.number().min(0).max(3650).default(30),
    /** Audit entries older than this many days are deleted by a daily job. */
    AUDIT_RETENTION_DAYS: z.coerce.number().positive().max(36500).default(365),
    // Rate limits (README "Configuration", docs/API.md "Rate limits"; rateLimits below), points/seconds
    /** Uploads one user may start per window. */
    RATE_LIMIT_UPLOADS: rateLimit.default({ points: 200, windowSeconds: 3600 }),
    /** Mutations one user may run per window (every mutation, counted per root field). */
    RATE_LIMIT_USER_MUTATIONS: rateLimit.default({ points: 600, windowSeconds: 60 }),
    /** Mutations one machine may run per window (usage, cache events and stats reports). */
    RATE_LIMIT_MACHINE_MUTATIONS: rateLimit.default({ points: 20_000, windowSeconds: 60 }),
    /** Job grants one service (or admin) may mint per window. */
    RATE_LIMIT_GRANTS: rateLimit.default({ points: 6_000, windowSeconds: 60 }),
    /** Failed authentications from one client IP per window; then its requests with a token are refused 429. */
    RATE_LIMIT_AUTH_FAILURES: rateLimit.default({ points: 100, windowSeconds: 300 }),
    /** WebSocket connections one principal may open per window. */
    RATE_LIMIT_WS_CONNECTIONS: rateLimit.default({ points: 120, windowSeconds: 60 }),
    /** WebSockets one principal may hold open at once on one process. */
    WS_MAX_CONNECTIONS_PER_PRINCIPAL: positiveInt.default(32),
    /** Proxies in front of the server that append to X-Forwarded-For (0 = use the socket's address). */
    TRUST_PROXY_HOPS: z.coerce.number().int().min(0).max(10).default(0),
    // Resumable direct-to-Blob uploads (issue 17; resumable below)
    /** A resumable upload session (and its quota reservation) ends this long after it began. */
    UPLOAD_SESSION_SECONDS: positiveInt.default(24 * 3600),
    /** Days an ended upload session (COMPLETED, FAILED, ABORTED, EXPIRED) is kept before the reconciler deletes it (fractions allowed). */
    UPLOAD_SESSION_RETENTION_DAYS: z.coerce.number().positive().max(3650).default(7),
    /** Lifetime of a session's write-only SAS (renewable while the session lives). */
    UPLOAD_SAS_TTL_SECONDS: positiveInt.default(900),
    /** Block size of resumable uploads (every block but the last has exactly this size). */
    UPLOAD_BLOCK_BYTES: z.coerce
      .number()
      .int()
      .min(256 * 1024)
      .max(100 * 1024 * 1024)
      .default(8 * 1024 * 1024),
    /** Sessions one process validates while their blocks arrive (0 = validate everything at completeLoraUpload). */
    UPLOAD_VALIDATE_AHEAD: z.coerce.number().int().min(0).max(1000).default(8),
    /** How often a session validated ahead is looked at for newly staged blocks. */
    UPLOAD_VALIDATE_AHEAD_POLL_MS: z.coerce.number().int().min(50).max(60_000).default(500),
    /** Of those, at most this many of one user's sessions (the others are validated at completion). */
    UPLOAD_VALIDATE_AHEAD_PER_USER: z.coerce.number().int().min(1).max(1000).default(2),
    // Owners' downloads through the API (issue 17, THREATS row 72; ownerDownloads below)
    /** The API's base URL as clients reach it (owner download links); unset = the listening address. */
    PUBLIC_URL: z
      .url({ protocol: /^https?$/ })
      .refine((u) => !/[?#]/.test(u), 'no query or fragment')
      .transform((u) => u.replace(/\/+$/, ''))
      .optional(),
    /** Owner downloads one holder of links streams at once (per process); more are answered 429. */
    OWNER_DOWNLOADS_PER_USER: positiveInt.default(8),
    /** Owner downloads one server process streams at once, all holders together. */
    OWNER_DOWNLOADS_PER_PROCESS: positiveInt.default(128),
    // Telemetry (README "Observability"; the OTEL_* variables are the OpenTelemetry SDK's own)
    /** Serve Prometheus metrics on GET /metrics. */
    METRICS_ENABLED: boolish.default(true),
    /** A bearer token that may scrape /metrics from any network. */
    METRICS_TOKEN: z.string().min(16).optional(),
    /** Networks (CIDRs) that may scrape /metrics without a token; unset = loopback in production, anyone otherwise. */
    METRICS_ALLOWED_NETWORKS: commaList.pipe(z.array(z.string().refine(isCidr, 'not an address or CIDR (10.0.0.0/8, ::1/128)'))).optional(),
    /** How often the business gauges are measured from the database. */
    BUSINESS_METRICS_INTERVAL_SECONDS: positiveInt.default(60),
    OTEL_SDK_DISABLED: boolish.default(false),
    OTEL_SERVICE_NAME: z.string().min(1).default('lora-vault'),
    OTEL_EXPORTER_OTLP_ENDPOINT: z.url().optional(),
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: z.url().optional(),
    OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: z.url().optional(),
    OTEL_TRACES_EXPORTER: z.string().optional(),
    OTEL_METRICS_EXPORTER: z.string().optional(),
    ...otlpProtocolEnv,
  })
  .superRefine((env, ctx) => {
    if (env.NODE_ENV === 'production' && !env.JWT_SECRET && !env.JWT_JWKS_URL) {
      ctx.addIssue({ code: 'custom', path: ['JWT_SECRET'], message: 'production needs JWT_SECRET or JWT_JWKS_URL' });
    }
    if (env.GRANT_SECRET !== undefined) {
      ctx.addIssue({
        code: 'custom',
        path: ['GRANT_SECRET'],
        message:
          'is retired: job grants are signed with Ed25519 now, so machines can verify them. Remove GRANT_SECRET and set GRANT_SIGNING_KEY (a PEM or JWK Ed25519 private key, or a JWK Set; see README "Job grants")',
      });
    }
    if (env.NODE_ENV === 'production' && env.GRANT_SIGNING_KEY === undefined) {
      ctx.addIssue({
        code: 'custom',
        path: ['GRANT_SIGNING_KEY'],
        message: 'production needs GRANT_SIGNING_KEY (an Ed25519 private key, PEM or JWK) to sign job grants',
      });
    }
    if (env.GRANT_SIGNING_KEY !== undefined) {
      try {
        parseGrantKeys(env.GRANT_SIGNING_KEY);
      } catch (error) {
        if (!(error instanceof GrantKeyError)) throw error;
        ctx.addIssue({ code: 'custom', path: ['GRANT_SIGNING_KEY'], message: error.message });
      }
    }
    if (env.JWT_JWKS_URL && (!env.JWT_ISSUER || !env.JWT_AUDIENCE)) {
      ctx.addIssue({ code: 'custom', path: ['JWT_ISSUER'], message: 'JWT_JWKS_URL needs JWT_ISSUER and JWT_AUDIENCE' });
    }
    if (env.NODE_ENV === 'production' && (!env.DATABASE_URL || !env.AZURE_STORAGE_CONNECTION_STRING)) {
      ctx.addIssue({
        code: 'custom',
        path: ['DATABASE_URL'],
        message: 'production needs DATABASE_URL and AZURE_STORAGE_CONNECTION_STRING (embedded services are for development)',
      });
    }
  });

export type Env = z.infer<typeof envSchema>;

export interface Config {
  env: Env['NODE_ENV'];
  production: boolean;
  port: number;
  host: string;
  dataDir: string;
  databaseUrl: string | undefined;
  storage: {
    connectionString: string | undefined;
    loraContainer: string;
    sharedContainer: string;
    sharedPrefix: string;
    sasTtlSeconds: number;
  };
  redisUrl: string | undefined;
  auth: {
    jwtSecret: string | undefined;
    jwksUrl: string | undefined;
    issuer: string | undefined;
    audience: string | undefined;
    /** GRANT_SIGNING_KEY parsed; undefined = generated under DATA_DIR (runtime.ts), outside production only. */
    grantKeys: GrantKeySet | undefined;
    grantMaxTtlSeconds: number;
  };
  quota: { defaultMaxBytes: number; defaultMaxCount: number };
  maxUploadBytes: number;
  graphiql: boolean;
  /** Origins answered with CORS headers; `['*']` = any. */
  corsOrigins: string[];
  /** Origins the Blob service's upload CORS rule allows (set at start-up); `[]` = storage's CORS left alone. */
  storageCorsOrigins: string[];
  logLevel: Env['LOG_LEVEL'];
  jobsEnabled: boolean;
  jobsPollSeconds: number;
  uploadStaleMs: number;
  shutdownGraceMs: number;
  trustedDocuments: { only: boolean; file: string };
  websocket: { perSocket: number; perPrincipal: number };
  /** WS_SHARED_FANOUT: one execution per event for subscribers sharing document, variables and visibility. */
  wsSharedFanOut: boolean;
  uploadLimits: { idleMs: number; perUser: number; perProcess: number };
  httpTimeouts: { headersMs: number; keepAliveMs: number };
  retention: { accountPurgeDelayMs: number; auditRetentionDays: number };
  rateLimits: RateLimitsConfig;
  telemetry: TelemetryConfig;
  /** retentionMs: UPLOAD_SESSION_RETENTION_DAYS, how long ended sessions (and COMPLETED ones' answers) are kept. */
  resumable: {
    sessionMs: number;
    retentionMs: number;
    sasTtlSeconds: number;
    blockBytes: number;
    validateAhead: { max: number; pollMs: number; perUser: number };
  };
  /** Proxies trusted to append the client's address to X-Forwarded-For. */
  trustProxyHops: number;
  /** publicUrl: PUBLIC_URL without a trailing slash (undefined = the listening address); concurrent owner downloads streamed. */
  ownerDownloads: { publicUrl: string | undefined; perUser: number; perProcess: number };
}

/** One limit: at most `points` per `windowSeconds` per key (user, machine, service, IP, principal). */
export interface RateLimitConfig {
  points: number;
  windowSeconds: number;
}

export interface RateLimitsConfig {
  uploads: RateLimitConfig;
  userMutations: RateLimitConfig;
  machineMutations: RateLimitConfig;
  grants: RateLimitConfig;
  authFailures: RateLimitConfig;
  wsConnections: RateLimitConfig;
  /** Open WebSockets per principal on one process (a count, not a rate). */
  wsOpenPerPrincipal: number;
}

export interface TelemetryConfig {
  serviceName: string;
  disabled: boolean;
  /** OTLP export, when an endpoint is set and the exporter is not `none`. */
  otlp: { traces: boolean; metrics: boolean };
  /** OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL: how spans are encoded (default http/protobuf). */
  tracesProtocol: OtlpProtocol;
  metrics: { enabled: boolean; token: string | undefined; allowedNetworks: string[] | null };
  businessIntervalMs: number;
}

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`Invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

/** Parses the environment (every problem at once) into a typed, frozen Config. */
export function loadConfig(source: Record<string, string | undefined> = process.env): Config {
  const known = Object.fromEntries(Object.keys(envSchema.shape ?? {}).map((key) => [key, emptyToUndefined(source[key])]));
  const parsed = envSchema.safeParse(known);
  if (!parsed.success) {
    throw new ConfigError(parsed.error.issues.map((i) => `${i.path.join('.') || 'env'}: ${i.message}`));
  }
  const env = parsed.data;
  return Object.freeze({
    env: env.NODE_ENV,
    production: env.NODE_ENV === 'production',
    port: env.PORT,
    host: env.HOST,
    dataDir: env.DATA_DIR,
    databaseUrl: env.DATABASE_URL,
    storage: {
      connectionString: env.AZURE_STORAGE_CONNECTION_STRING,
      loraContainer: env.LORA_CONTAINER,
      sharedContainer: env.SHARED_LORA_CONTAINER,
      sharedPrefix: env.SHARED_LORA_PREFIX,
      sasTtlSeconds: env.SAS_TTL_SECONDS,
    },
    redisUrl: env.REDIS_URL,
    auth: {
      jwtSecret: env.JWT_SECRET,
      jwksUrl: env.JWT_JWKS_URL,
      issuer: env.JWT_ISSUER,
      audience: env.JWT_AUDIENCE,
      grantKeys: env.GRANT_SIGNING_KEY === undefined ? undefined : parseGrantKeys(env.GRANT_SIGNING_KEY),
      grantMaxTtlSeconds: env.GRANT_MAX_TTL_SECONDS,
    },
    quota: { defaultMaxBytes: env.QUOTA_DEFAULT_MAX_BYTES, defaultMaxCount: env.QUOTA_DEFAULT_MAX_COUNT },
    maxUploadBytes: env.MAX_UPLOAD_BYTES,
    graphiql: env.GRAPHIQL ?? env.NODE_ENV !== 'production',
    corsOrigins: env.CORS_ORIGINS ?? (env.NODE_ENV === 'production' ? [] : ['*']),
    storageCorsOrigins: env.STORAGE_CORS_ORIGINS ?? defaultStorageCorsOrigins(env),
    logLevel: env.LOG_LEVEL,
    jobsEnabled: env.JOBS_ENABLED,
    jobsPollSeconds: env.JOBS_POLL_SECONDS,
    uploadStaleMs: env.UPLOAD_STALE_SECONDS * 1000,
    shutdownGraceMs: env.SHUTDOWN_GRACE_SECONDS * 1000,
    trustedDocuments: { only: env.TRUSTED_DOCUMENTS_ONLY, file: env.TRUSTED_DOCUMENTS_FILE },
    websocket: { perSocket: env.WS_MAX_SUBSCRIPTIONS_PER_SOCKET, perPrincipal: env.WS_MAX_SUBSCRIPTIONS_PER_PRINCIPAL },
    wsSharedFanOut: env.WS_SHARED_FANOUT,
    uploadLimits: {
      idleMs: env.UPLOAD_IDLE_SECONDS * 1000,
      perUser: env.UPLOAD_CONCURRENCY_PER_USER,
      perProcess: env.UPLOAD_CONCURRENCY_PER_PROCESS,
    },
    httpTimeouts: { headersMs: env.HTTP_HEADERS_TIMEOUT_SECONDS * 1000, keepAliveMs: env.HTTP_KEEPALIVE_TIMEOUT_SECONDS * 1000 },
    retention: { accountPurgeDelayMs: Math.round(env.ACCOUNT_PURGE_DAYS * 86_400_000), auditRetentionDays: env.AUDIT_RETENTION_DAYS },
    rateLimits: {
      uploads: env.RATE_LIMIT_UPLOADS,
      userMutations: env.RATE_LIMIT_USER_MUTATIONS,
      machineMutations: env.RATE_LIMIT_MACHINE_MUTATIONS,
      grants: env.RATE_LIMIT_GRANTS,
      authFailures: env.RATE_LIMIT_AUTH_FAILURES,
      wsConnections: env.RATE_LIMIT_WS_CONNECTIONS,
      wsOpenPerPrincipal: env.WS_MAX_CONNECTIONS_PER_PRINCIPAL,
    },
    trustProxyHops: env.TRUST_PROXY_HOPS,
    resumable: {
      sessionMs: env.UPLOAD_SESSION_SECONDS * 1000,
      retentionMs: Math.round(env.UPLOAD_SESSION_RETENTION_DAYS * 86_400_000),
      sasTtlSeconds: env.UPLOAD_SAS_TTL_SECONDS,
      blockBytes: env.UPLOAD_BLOCK_BYTES,
      validateAhead: {
        max: env.UPLOAD_VALIDATE_AHEAD,
        pollMs: env.UPLOAD_VALIDATE_AHEAD_POLL_MS,
        perUser: env.UPLOAD_VALIDATE_AHEAD_PER_USER,
      },
    },
    telemetry: telemetryConfig(env),
    ownerDownloads: { publicUrl: env.PUBLIC_URL, perUser: env.OWNER_DOWNLOADS_PER_USER, perProcess: env.OWNER_DOWNLOADS_PER_PROCESS },
  });
}

function telemetryConfig(env: Env): TelemetryConfig {
  const exporting = (kind: string | undefined, endpoint: string | undefined) =>
    Boolean(endpoint ?? env.OTEL_EXPORTER_OTLP_ENDPOINT) && (kind ?? 'otlp').split(',').includes('otlp');
  const production = env.NODE_ENV === 'production';
  return {
    serviceName: env.OTEL_SERVICE_NAME,
    disabled: env.OTEL_SDK_DISABLED,
    otlp: {
      traces: exporting(env.OTEL_TRACES_EXPORTER, env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT),
      metrics: exporting(env.OTEL_METRICS_EXPORTER, env.OTEL_EXPORTER_OTLP_METRICS_ENDPOINT),
    },
    tracesProtocol: tracesProtocol(env),
    metrics: {
      enabled: env.METRICS_ENABLED,
      token: env.METRICS_TOKEN,
      // production: loopback unless configured; a token alone then opens nothing else
      allowedNetworks: env.METRICS_ALLOWED_NETWORKS ?? (production ? ['127.0.0.0/8', '::1/128'] : env.METRICS_TOKEN ? [] : null),
    },
    businessIntervalMs: env.BUSINESS_METRICS_INTERVAL_SECONDS * 1000,
  };
}

function emptyToUndefined(value: string | undefined): string | undefined {
  return value === undefined || value.trim() === '' ? undefined : value;
}

/**
 * Where browsers may PUT upload blocks when STORAGE_CORS_ORIGINS is unset: in development anyone
 * (`CORS_ORIGINS`, else `*`); in production the pages that call the API — `CORS_ORIGINS` and the
 * API's own origin (PUBLIC_URL), where Studio is served — so Studio's uploads work once PUBLIC_URL is set.
 */
function defaultStorageCorsOrigins(env: { NODE_ENV?: string; CORS_ORIGINS?: string[]; PUBLIC_URL?: string }): string[] {
  if (env.NODE_ENV !== 'production') return env.CORS_ORIGINS ?? ['*'];
  const origins = [...(env.CORS_ORIGINS ?? []), ...(env.PUBLIC_URL ? [new URL(env.PUBLIC_URL).origin] : [])];
  return [...new Set(origins)];
}
