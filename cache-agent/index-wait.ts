import { existsSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';

/**
 * `lora-cache start` before the Python nodes made model_cache.db. The EmProps nodes' init_db()
 * creates it (and its folder, `custom_nodes/emprops_comfy_nodes/db/`) when ComfyUI loads them, and
 * seeds its static models (protected) only when it creates the file itself. So the agent waits:
 * creating the file would leave those models unprotected, and creating the folder makes a later
 * `git clone` of the package into it fail. MODEL_CACHE_DB_CREATE=true (machines without the Python
 * nodes) creates it instead.
 */
export async function waitForIndex(
  config: { dbPath: string; createDb: boolean },
  logger: Logger,
  options: { pollMs?: number; remindMs?: number; signal?: AbortSignal } = {},
): Promise<void> {
  if (config.createDb || existsSync(config.dbPath)) return;
  const pollMs = options.pollMs ?? 1000;
  const remindMs = options.remindMs ?? 60_000;
  const message =
    "waiting for model_cache.db: the EmProps nodes' init_db() creates it when ComfyUI starts; the agent never creates another package's folder " +
    '(set MODEL_CACHE_DB_CREATE=true on a machine without the Python nodes)';
  logger.warn({ db: config.dbPath }, message);
  let reminded = Date.now();
  while (!existsSync(config.dbPath)) {
    await sleep(pollMs, undefined, options.signal ? { signal: options.signal } : {});
    if (Date.now() - reminded >= remindMs) {
      reminded = Date.now();
      logger.warn({ db: config.dbPath }, message);
    }
  }
  logger.info({ db: config.dbPath }, 'model_cache.db is there; starting');
}
