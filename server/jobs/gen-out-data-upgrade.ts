import type { Logger } from 'pino';
import type { Db } from '../db/client.ts';
import { lockLoraRowsAfter } from '../db/lora-reads.ts';
import { currentGenOutData } from '../services/gen-out-data.ts';

/**
 * Rewrites the `gen_out_data` of LoRA rows written before docs/flat-file.md into the seed's
 * shape, while the server serves. Registered by a migration (`data_upgrade` row), run in the
 * background at start-up by every replica with JOBS_ENABLED:
 * - one short transaction per batch: lock the progress row, lock the next `batchSize` LoRAs'
 *   flat_file rows after `cursor` (id order), write the shape built by the same code as
 *   finalize (only where it differs), move `cursor`; a crash loses at most the open batch;
 * - replicas take turns on the progress row, so no batch is done twice and none is skipped;
 * - a pass that finds no row after `cursor` marks the upgrade finished (later starts do nothing);
 * - idempotent: a row already in the shape is not written again.
 */

export const GEN_OUT_DATA_UPGRADE = 'flat_file.gen_out_data.seed_shape';

export interface UpgradeOptions {
  /** LoRA rows per transaction. @default 500 */
  batchSize?: number;
  /** Pause between batches, leaving room for serving traffic. @default 10 ms */
  pauseMs?: number;
  /** Stop after this many batches (progress kept; the next run resumes). @default unlimited */
  maxBatches?: number;
  /** Stops between batches when aborted (server shutdown). */
  signal?: AbortSignal;
  logger?: Logger;
}

export interface UpgradeResult {
  batches: number;
  /** Rows whose gen_out_data changed in this run. */
  rewritten: number;
  finished: boolean;
}

interface Progress {
  cursor: bigint;
  finished_at: Date | null;
}

export async function upgradeGenOutData(db: Db, options: UpgradeOptions = {}): Promise<UpgradeResult> {
  const batchSize = options.batchSize ?? 500;
  const result: UpgradeResult = { batches: 0, rewritten: 0, finished: false };
  while (!options.signal?.aborted && (options.maxBatches === undefined || result.batches < options.maxBatches)) {
    const step = await db.$transaction(async (tx) => {
      const [progress] = await tx.$queryRaw<Progress[]>`
        SELECT cursor, finished_at FROM data_upgrade WHERE name = ${GEN_OUT_DATA_UPGRADE} FOR UPDATE`;
      if (!progress || progress.finished_at) return { finished: true, rewritten: 0 };
      const rows = await lockLoraRowsAfter(tx, progress.cursor, batchSize);
      const last = rows.at(-1);
      if (!last) {
        await tx.$executeRaw`UPDATE data_upgrade SET finished_at = now(), updated_at = now() WHERE name = ${GEN_OUT_DATA_UPGRADE}`;
        return { finished: true, rewritten: 0 };
      }
      const shaped = rows.flatMap((row) => {
        const data = currentGenOutData(row);
        return data ? [{ id: String(row.file_id), data }] : [];
      });
      const rewritten = shaped.length
        ? await tx.$executeRaw`
            UPDATE flat_file AS f SET gen_out_data = v.data
            FROM jsonb_to_recordset(${JSON.stringify(shaped)}::jsonb) AS v(id bigint, data jsonb)
            WHERE f.id = v.id AND f.gen_out_data IS DISTINCT FROM v.data`
        : 0;
      await tx.$executeRaw`
        UPDATE data_upgrade
        SET cursor = ${BigInt(last.file_id)}, rows_rewritten = rows_rewritten + ${rewritten},
            started_at = coalesce(started_at, now()), updated_at = now()
        WHERE name = ${GEN_OUT_DATA_UPGRADE}`;
      return { finished: false, rewritten };
    });
    if (step.finished) {
      result.finished = true;
      break;
    }
    result.batches++;
    result.rewritten += step.rewritten;
    if (options.pauseMs !== 0) await new Promise((resolve) => setTimeout(resolve, options.pauseMs ?? 10));
  }
  if (result.batches > 0) options.logger?.info({ upgrade: GEN_OUT_DATA_UPGRADE, ...result }, 'rewrote flat_file.gen_out_data of LoRA rows');
  return result;
}

/** Runs the upgrade in the background; `stop()` ends it after the current batch. */
export function startGenOutDataUpgrade(db: Db, logger: Logger, options: Omit<UpgradeOptions, 'signal' | 'logger'> = {}) {
  const controller = new AbortController();
  const running = upgradeGenOutData(db, { ...options, signal: controller.signal, logger }).catch((error: unknown) => {
    logger.error({ err: error, upgrade: GEN_OUT_DATA_UPGRADE }, 'gen_out_data upgrade stopped; the next start resumes it');
  });
  return {
    done: running,
    async stop(): Promise<void> {
      controller.abort();
      await running;
    },
  };
}
