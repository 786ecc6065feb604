/**
 * Every failure the agent reports carries one of these codes, over HTTP, in the CLI and in logs.
 * Callers branch on `code` and `retryable`, never on messages.
 */

export const AgentErrorCode = {
  /** The request is malformed (bad JSON, missing fields, unknown source). HTTP 400. */
  INVALID_REQUEST: 'INVALID_REQUEST',
  /** The workflow JSON is neither the API format nor the node-list format. HTTP 400. */
  INVALID_WORKFLOW: 'INVALID_WORKFLOW',
  /** The API does not know this LoRA for this grant's user (or it was deleted). HTTP 404. */
  LORA_NOT_FOUND: 'LORA_NOT_FOUND',
  /** The job grant is missing, expired, or for another user. HTTP 403. */
  INVALID_GRANT: 'INVALID_GRANT',
  /** Retries ran out (network, storage errors, size or sha256 mismatch). HTTP 502. */
  DOWNLOAD_FAILED: 'DOWNLOAD_FAILED',
  /** The disk filled up during a download; the temp file was removed. HTTP 507. */
  DISK_FULL: 'DISK_FULL',
  /** Eviction cannot make room (the rest is protected, ignored or leased). HTTP 507. */
  CACHE_FULL: 'CACHE_FULL',
  /** The API could not be reached or answered with a server error. HTTP 503. */
  API_UNAVAILABLE: 'API_UNAVAILABLE',
  /** No such lease (released already, or expired). HTTP 404. */
  LEASE_NOT_FOUND: 'LEASE_NOT_FOUND',
  /** The agent is stopping. HTTP 503. */
  SHUTTING_DOWN: 'SHUTTING_DOWN',
  /** model_cache.db stayed locked by another process (the Python nodes) through every retry. HTTP 503. */
  INDEX_BUSY: 'INDEX_BUSY',
  /** TCP requests must name the agent by a loopback Host (or AGENT_HOST / AGENT_ALLOWED_HOSTS): DNS rebinding. HTTP 403. */
  FORBIDDEN_HOST: 'FORBIDDEN_HOST',
  /** A browser request (an Origin header, or Sec-Fetch-Site other than `none`). HTTP 403. */
  FORBIDDEN_ORIGIN: 'FORBIDDEN_ORIGIN',
  /** No live job registered (`POST /jobs`) for the ComfyUI prompt asking for a user LoRA, or it ended / expired. HTTP 404. */
  JOB_NOT_FOUND: 'JOB_NOT_FOUND',
} as const;
export type AgentErrorCode = (typeof AgentErrorCode)[keyof typeof AgentErrorCode];

export const HTTP_STATUS: Record<AgentErrorCode, number> = {
  INVALID_REQUEST: 400,
  INVALID_WORKFLOW: 400,
  LORA_NOT_FOUND: 404,
  INVALID_GRANT: 403,
  DOWNLOAD_FAILED: 502,
  DISK_FULL: 507,
  CACHE_FULL: 507,
  API_UNAVAILABLE: 503,
  LEASE_NOT_FOUND: 404,
  SHUTTING_DOWN: 503,
  INDEX_BUSY: 503,
  FORBIDDEN_HOST: 403,
  FORBIDDEN_ORIGIN: 403,
  JOB_NOT_FOUND: 404,
};

export interface AgentErrorOptions {
  /** Whether the same call may succeed later without any change. @default false */
  retryable?: boolean;
  /** Extra facts for the caller (e.g. attempts, expected and actual sha256). */
  details?: Record<string, unknown>;
  cause?: unknown;
}

export class AgentError extends Error {
  override readonly name = 'AgentError';
  readonly code: AgentErrorCode;
  readonly retryable: boolean;
  readonly details: Record<string, unknown>;

  constructor(code: AgentErrorCode, message: string, options: AgentErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.retryable = options.retryable ?? false;
    this.details = options.details ?? {};
  }

  toJSON(): { code: AgentErrorCode; message: string; retryable: boolean; details: Record<string, unknown> } {
    return { code: this.code, message: this.message, retryable: this.retryable, details: this.details };
  }
}
