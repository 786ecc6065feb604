import type { Logger } from 'pino';
import { countAheadBreak } from '../telemetry/upload-telemetry.ts';

/**
 * Why a validation ahead of completion (validation-ahead.ts) stopped: a bounded set, so it can be
 * a metric label. The completion of such a session reads the whole file instead (only speed is
 * lost), so a break is said once — a log line with the session id, the reason and storage's
 * message, and `lora_vault.upload.validation_ahead.breaks{reason}` — rather than kept in memory only.
 */
export const AheadBreak = {
  /** Someone else committed the blob (the client through its SAS, another replica): the server's conditional commit or read was refused. */
  BLOB_CHANGED: 'blob_changed',
  /** A look at storage or a read failed otherwise (network, storage error, the tail read at completion). */
  STORAGE_ERROR: 'storage_error',
  /** What the server's commit stored is not what its look saw (a block staged again meanwhile with other bytes), or a read came short. */
  BLOCK_CHANGED: 'block_changed',
  /** The session is no longer OPEN (being completed, maybe by another replica, or ended): nothing more is committed. */
  NOT_OPEN: 'not_open',
  /** A validation a completion had taken was not taken back by the watch (its limits, or the session is watched already). */
  NOT_RESUMED: 'not_resumed',
  /** Completion came before the server's first commit of the session: nothing validated yet. */
  NOT_STARTED: 'not_started',
  /** The session was aborted or failed. */
  ABORTED: 'aborted',
  /** The session expired while watched. */
  EXPIRED: 'expired',
  /** No block arrived for a while (AheadWatch's idle limit): a client gone. */
  IDLE: 'idle',
  /** The server is stopping. */
  STOPPING: 'stopping',
} as const;
export type AheadBreak = (typeof AheadBreak)[keyof typeof AheadBreak];

/** Breaks that say something went wrong (warn); the others are the session's ordinary ends (info). */
const UNEXPECTED: ReadonlySet<AheadBreak> = new Set([AheadBreak.BLOB_CHANGED, AheadBreak.BLOCK_CHANGED, AheadBreak.STORAGE_ERROR]);

/** What a ValidationAhead calls, once, when it breaks. */
export type AheadBreakReport = (reason: AheadBreak, detail: string, validatedBytes: number) => void;

/** Logs and counts the break of one session's validation ahead. */
export function aheadBreakReporter(logger: Logger | undefined, sessionId: string): AheadBreakReport {
  return (reason, detail, validatedBytes) => {
    countAheadBreak(reason);
    const level = UNEXPECTED.has(reason) ? 'warn' : 'info';
    logger?.[level](
      { sessionId, reason, detail, validatedBytes },
      'validation ahead of completion broke; a completion of this session reads the whole file',
    );
  };
}
