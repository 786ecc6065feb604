import type { Logger } from 'pino';
import type { Db } from '../db/client.ts';

/**
 * UPLOAD_SESSION_RETENTION_DAYS: resumable upload sessions that ended (COMPLETED, FAILED, ABORTED,
 * EXPIRED) longer ago than that are deleted by the reconciler, 1,000 per statement (each short).
 * Until then a COMPLETED session still answers `loraUploadSession` with its LoRA id: an SDK run
 * that crashed after completing learns its result from it instead of uploading again. An ended
 * session holds no reservation and keeps no blob (the orphan sweep ignores it), so only the row goes.
 * OPEN and COMPLETING sessions are live whatever their age: they end (EXPIRED) first.
 */

const BATCH = 1_000;

export async function purgeEndedSessions(db: Db, endedBefore: Date, logger: Logger): Promise<number> {
  let deleted = 0;
  for (;;) {
    const n = await db.$executeRaw`
      DELETE FROM upload_session WHERE id IN (
        SELECT id FROM upload_session
        WHERE state IN ('COMPLETED', 'FAILED', 'ABORTED', 'EXPIRED') AND updated_at < ${endedBefore}
        LIMIT ${BATCH})`;
    deleted += n;
    if (n < BATCH) break;
  }
  if (deleted > 0) logger.info({ deleted, endedBefore }, 'reconciler: ended upload sessions past their retention deleted');
  return deleted;
}
