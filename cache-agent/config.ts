import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { resolve } from 'node:path';
import { z } from 'zod';
import { type OtlpProtocol, otlpProtocolEnv, tracesProtocol } from './otlp-protocol.ts';

/**
 * The agent's configuration: the only reader of `process.env` in the agent. Parsed once; every
 * problem is reported together (`AgentConfigError`). Defaults are documented in README.md.
 *
 * The cache settings (`lora_cache_max_gb`, `lora_max_age_days`, `lora_eviction_enabled`,
 * `min_free_space_gb`) live in `model_cache.db`'s `settings` table like the Python nodes expect; an
 * environment value here overrides the table (and is written back to it, when the agent starts, so
 * both sides agree).
 */

const boolish = z.enum(['true', 'false', '1', '0', 'yes', 'no']).transform((v) => v === 'true' || v === '1' || v === 'yes');
const positiveInt = z.coerce.number().int().positive();
const nonNegative = z.coerce.number().nonnegative();

const envSchema = z
  .object({
    /** The API's GraphQL endpoint, e.g. https://lora-vault.example.com/graphql. Needed to download. */
    LORA_VAULT_URL: z.url({ protocol: /^https?$/ }).optional(),
    /** A `machine` bearer token (or LORA_VAULT_TOKEN_FILE, read once at start). */
    LORA_VAULT_TOKEN: z.string().min(1).optional(),
    LORA_VAULT_TOKEN_FILE: z.string().min(1).optional(),
    /** Identifies this machine in logs and events. @default the host name */
    MACHINE_ID: z.string().min(1).max(200).optional(),
    /** ComfyUI's installation folder. @default the working directory */
    COMFYUI_DIR: z.string().min(1).default('.'),
    /** ComfyUI's LoRA folder: shared LoRAs at `{LORA_DIR}/{name}` (where the fleet keeps them). @default COMFYUI_DIR/models/loras */
    LORA_DIR: z.string().min(1).optional(),
    /**
     * User LoRAs, outside every folder ComfyUI lists for `loras` (refused at start-up when it nests
     * with LORA_DIR or COMFYUI_DIR/output/loras). @default COMFYUI_DIR/models/lora-vault-users
     */
    USER_LORA_DIR: z.string().min(1).optional(),
    /** The index shared with the Python nodes. @default COMFYUI_DIR/custom_nodes/emprops_comfy_nodes/db/model_cache.db */
    MODEL_CACHE_DB: z.string().min(1).optional(),
    /**
     * `false`: when model_cache.db does not exist, `start` waits for the EmProps nodes' init_db()
     * to create it (never creating another package's folder). `true`: create it (machines without
     * the Python nodes). @default false
     */
    MODEL_CACHE_DB_CREATE: boolish.default(false),
    /** Overrides of the `settings` table. */
    LORA_CACHE_MAX_GB: nonNegative.optional(),
    LORA_MAX_AGE_DAYS: nonNegative.optional(),
    LORA_EVICTION_ENABLED: boolish.optional(),
    MIN_FREE_SPACE_GB: nonNegative.optional(),
    /** Override of the agent's own hard floor (`lora_min_free_hard_gb`, not seeded; 0 when unset): a download never leaves less free. */
    LORA_MIN_FREE_HARD_GB: nonNegative.optional(),
    /** Local interface: TCP on 127.0.0.1:7433 unless AGENT_SOCKET (a unix socket path) is set. */
    AGENT_HOST: z.string().min(1).default('127.0.0.1'),
    AGENT_PORT: z.coerce.number().int().min(0).max(65535).default(7433),
    AGENT_SOCKET: z.string().min(1).optional(),
    /**
     * More names TCP callers may send as `Host` (comma-separated), beside 127.0.0.1, localhost, [::1]
     * and AGENT_HOST itself; any other Host is refused (DNS rebinding). @default none
     */
    AGENT_ALLOWED_HOSTS: z.string().default(''),
    /** Parallel range requests per download, and size of each range. */
    DOWNLOAD_CONCURRENCY: positiveInt.max(32).default(4),
    DOWNLOAD_PART_MB: positiveInt.max(1024).default(16),
    /** Further attempts per download failure kind before DOWNLOAD_FAILED. */
    DOWNLOAD_RETRIES: z.coerce.number().int().min(0).max(20).default(5),
    /** LoRAs of one workflow downloaded at once by prefetch. */
    PREFETCH_CONCURRENCY: positiveInt.max(16).default(3),
    /** How long a lease protects a file when the caller does not say. */
    LEASE_TTL_SECONDS: positiveInt.default(3600),
    /** The longest lease: one ends at min(now + this, the job grant's exp), whatever is asked. @default 21600 (6 h) */
    LEASE_MAX_SECONDS: positiveInt.default(21_600),
    /** How often stats are reported to the API (0 = never). */
    STATS_INTERVAL_SECONDS: z.coerce.number().int().min(0).default(60),
    /** When age-based eviction runs (cron, local time); it also runs at start-up. */
    AGE_EVICTION_CRON: z.string().min(1).default('0 3 * * *'),
    /**
     * How long an index write keeps retrying while the Python nodes hold model_cache.db's lock
     * (in 50 ms tries; the event loop is free between them), then INDEX_BUSY. Hits are buffered
     * and written every second, so they never wait.
     */
    DB_BUSY_TIMEOUT_MS: positiveInt.default(5000),
    /** pino's level. @default info for the daemon, warn for one-shot commands (their logs go to stderr) */
    LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).optional(),
    /** Least seconds between two fetches of the API's grant keys (a grant naming an unknown kid asks again). @default 30 */
    GRANT_KEYS_MIN_REFRESH_SECONDS: z.coerce.number().min(0).max(3600).default(30),
    /** Cached grant keys older than this are refreshed in the background (hits keep using them). @default 900 */
    GRANT_KEYS_MAX_AGE_SECONDS: positiveInt.max(86_400).default(900),
    /** The job grant `lora-cache ensure` / `prefetch` use when no --grant is given. @default none */
    LORA_GRANT: z.string().optional(),
    // Telemetry (README "Observability"): Prometheus text on the local interface's GET /metrics, OTLP when an endpoint is set
    METRICS_ENABLED: boolish.default(true),
    OTEL_SDK_DISABLED: boolish.default(false),
    OTEL_SERVICE_NAME: z.string().min(1).default('lora-cache'),
    OTEL_EXPORTER_OTLP_ENDPOINT: z.url().optional(),
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: z.url().optional(),
    OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: z.url().optional(),
    OTEL_TRACES_EXPORTER: z.string().optional(),
    OTEL_METRICS_EXPORTER: z.string().optional(),
    ...otlpProtocolEnv,
  })
  .refine((e) => e.LEASE_TTL_SECONDS <= e.LEASE_MAX_SECONDS, {
    path: ['LEASE_TTL_SECONDS'],
    message: 'must not exceed LEASE_MAX_SECONDS',
  });

/** OTLP export only with an endpoint, and unless OTEL_*_EXPORTER leaves out `otlp` (e.g. `none`). */
const otlpExport = (exporter: string | undefined, endpoint: string | undefined) =>
  Boolean(endpoint) && (exporter ?? 'otlp').split(',').includes('otlp');

const LOOPBACK_HOSTS = ['127.0.0.1', 'localhost', '[::1]'];

/** Host names (lowercase, IPv6 in brackets, no port) TCP callers may use. A wildcard AGENT_HOST adds nothing. */
function allowedHosts(agentHost: string, extra: string): string[] {
  const hostName = (h: string) => (h.includes(':') && !h.startsWith('[') ? `[${h}]` : h).toLowerCase();
  const names = [
    ...LOOPBACK_HOSTS,
    ...extra
      .split(',')
      .map((h) => h.trim())
      .filter(Boolean),
  ];
  if (!['0.0.0.0', '::', '[::]'].includes(agentHost)) names.push(agentHost);
  return [...new Set(names.map(hostName))];
}

export interface SettingOverrides {
  maxCacheGb?: number;
  maxAgeDays?: number;
  evictionEnabled?: boolean;
  minFreeSpaceGb?: number;
  minFreeHardGb?: number;
}

export interface AgentConfig {
  api: { url: string | null; token: string | null };
  machineId: string;
  /** COMFYUI_DIR, absolute (symlinks are resolved when the agent is built). */
  comfyDir: string;
  loraDir: string;
  usersDir: string;
  dbPath: string;
  /** Create model_cache.db when missing instead of waiting for the Python nodes. */
  createDb: boolean;
  overrides: SettingOverrides;
  listen: { host: string; port: number } | { socket: string };
  /** `Host` names accepted on TCP (the unix socket checks none). */
  allowedHosts: string[];
  download: { concurrency: number; partBytes: number; retries: number };
  prefetchConcurrency: number;
  leaseTtlSeconds: number;
  leaseMaxSeconds: number;
  statsIntervalSeconds: number;
  ageEvictionCron: string;
  dbBusyTimeoutMs: number;
  logLevel: LogLevel;
  /** One-shot CLI commands: LOG_LEVEL when set, else `warn`. */
  commandLogLevel: LogLevel;
  /** How the API's grant keys are cached (grant-verifier.ts). */
  grantKeys: { minRefreshMs: number; maxAgeMs: number };
  /** LORA_GRANT: the CLI's job grant when no --grant is given. */
  defaultGrant: string | null;
  telemetry: {
    serviceName: string;
    disabled: boolean;
    metricsEnabled: boolean;
    otlp: { traces: boolean; metrics: boolean };
    /** OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL: how spans are encoded (default http/protobuf). */
    tracesProtocol?: OtlpProtocol;
  };
}

type LogLevel = NonNullable<z.infer<typeof envSchema>['LOG_LEVEL']>;

export class AgentConfigError extends Error {
  override readonly name = 'AgentConfigError';
  constructor(readonly problems: string[]) {
    super(`invalid cache-agent configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
  }
}

/** Reads `env` (process.env unless a test passes its own) and the token file, once. */
export function loadAgentConfig(
  env: Record<string, string | undefined> = process.env,
  readFile: ((path: string) => string) | undefined = (path) => readFileSync(path, 'utf8'),
): AgentConfig {
  const parsed = envSchema.safeParse(env);
  if (!parsed.success) {
    throw new AgentConfigError(parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`));
  }
  const e = parsed.data;
  let token = e.LORA_VAULT_TOKEN ?? null;
  if (!token && e.LORA_VAULT_TOKEN_FILE) {
    if (!readFile) throw new AgentConfigError(['LORA_VAULT_TOKEN_FILE: cannot be read here']);
    try {
      token = readFile(e.LORA_VAULT_TOKEN_FILE).trim();
    } catch (error) {
      throw new AgentConfigError([`LORA_VAULT_TOKEN_FILE: ${(error as Error).message}`]);
    }
  }
  const comfy = resolve(e.COMFYUI_DIR);
  const overrides: SettingOverrides = {};
  if (e.LORA_CACHE_MAX_GB !== undefined) overrides.maxCacheGb = e.LORA_CACHE_MAX_GB;
  if (e.LORA_MAX_AGE_DAYS !== undefined) overrides.maxAgeDays = e.LORA_MAX_AGE_DAYS;
  if (e.LORA_EVICTION_ENABLED !== undefined) overrides.evictionEnabled = e.LORA_EVICTION_ENABLED;
  if (e.MIN_FREE_SPACE_GB !== undefined) overrides.minFreeSpaceGb = e.MIN_FREE_SPACE_GB;
  if (e.LORA_MIN_FREE_HARD_GB !== undefined) overrides.minFreeHardGb = e.LORA_MIN_FREE_HARD_GB;
  return {
    api: { url: e.LORA_VAULT_URL ?? null, token },
    machineId: e.MACHINE_ID ?? hostname(),
    comfyDir: comfy,
    loraDir: resolve(e.LORA_DIR ?? resolve(comfy, 'models/loras')),
    usersDir: resolve(e.USER_LORA_DIR ?? resolve(comfy, 'models/lora-vault-users')),
    dbPath: resolve(e.MODEL_CACHE_DB ?? resolve(comfy, 'custom_nodes/emprops_comfy_nodes/db/model_cache.db')),
    createDb: e.MODEL_CACHE_DB_CREATE,
    overrides,
    listen: e.AGENT_SOCKET ? { socket: resolve(e.AGENT_SOCKET) } : { host: e.AGENT_HOST, port: e.AGENT_PORT },
    allowedHosts: allowedHosts(e.AGENT_HOST, e.AGENT_ALLOWED_HOSTS),
    download: { concurrency: e.DOWNLOAD_CONCURRENCY, partBytes: e.DOWNLOAD_PART_MB * 1024 * 1024, retries: e.DOWNLOAD_RETRIES },
    prefetchConcurrency: e.PREFETCH_CONCURRENCY,
    leaseTtlSeconds: e.LEASE_TTL_SECONDS,
    leaseMaxSeconds: e.LEASE_MAX_SECONDS,
    statsIntervalSeconds: e.STATS_INTERVAL_SECONDS,
    ageEvictionCron: e.AGE_EVICTION_CRON,
    dbBusyTimeoutMs: e.DB_BUSY_TIMEOUT_MS,
    logLevel: e.LOG_LEVEL ?? 'info',
    commandLogLevel: e.LOG_LEVEL ?? 'warn',
    grantKeys: { minRefreshMs: e.GRANT_KEYS_MIN_REFRESH_SECONDS * 1000, maxAgeMs: e.GRANT_KEYS_MAX_AGE_SECONDS * 1000 },
    defaultGrant: e.LORA_GRANT ?? null,
    telemetry: {
      serviceName: e.OTEL_SERVICE_NAME,
      disabled: e.OTEL_SDK_DISABLED,
      metricsEnabled: e.METRICS_ENABLED,
      otlp: {
        traces: otlpExport(e.OTEL_TRACES_EXPORTER, e.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT ?? e.OTEL_EXPORTER_OTLP_ENDPOINT),
        metrics: otlpExport(e.OTEL_METRICS_EXPORTER, e.OTEL_EXPORTER_OTLP_METRICS_ENDPOINT ?? e.OTEL_EXPORTER_OTLP_ENDPOINT),
      },
      tracesProtocol: tracesProtocol(e),
    },
  };
}
