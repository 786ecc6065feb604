import { existsSync } from 'node:fs';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { buildAgent } from '../../cache-agent/app.ts';
import { loadAgentConfig } from '../../cache-agent/config.ts';

/**
 * The wiring (cache-agent/app.ts): building an agent touches nothing on disk — the index is
 * opened, and the environment's setting overrides written, by `start()` — so one-shot commands
 * and tests may build freely. Cache-only mode (no API): the real SQLite index and folders.
 */

const dirs: string[] = [];
afterEach(async () => {
  for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
});

async function config(env: Record<string, string> = {}) {
  const comfy = await mkdtemp(join(tmpdir(), 'lora-wiring-'));
  dirs.push(comfy);
  // no Python nodes here to create model_cache.db: the agent may (MODEL_CACHE_DB_CREATE)
  return loadAgentConfig({ COMFYUI_DIR: comfy, LOG_LEVEL: 'silent', STATS_INTERVAL_SECONDS: '0', MODEL_CACHE_DB_CREATE: 'true', ...env });
}

describe('buildAgent', () => {
  it('creates no index, folder or setting until start(), which opens the index and applies the overrides', async () => {
    const cfg = await config({ LORA_CACHE_MAX_GB: '2', LORA_MAX_AGE_DAYS: '3' });
    const comfy = cfg.loraDir.replace(/\/models\/loras$/, '');
    const agent = buildAgent(cfg);
    expect(existsSync(cfg.dbPath)).toBe(false);
    expect(await readdir(comfy)).toEqual([]);
    expect(() => agent.store).toThrow(/not started/);

    await agent.start({ listen: false, subscribe: false, schedule: false, maintain: false });
    try {
      expect(existsSync(cfg.dbPath)).toBe(true);
      expect(agent.store.settings()).toMatchObject({ maxCacheBytes: 2 * 1024 ** 3, maxAgeDays: 3 });
      expect(agent.health()).toMatchObject({ ok: true, api: 'none', reconciliations: 0 });
    } finally {
      await agent.stop();
    }
  });

  it('stops cleanly when it was never started', async () => {
    const cfg = await config();
    const agent = buildAgent(cfg);
    await agent.stop();
    expect(existsSync(cfg.dbPath)).toBe(false);
  });
});
