import type { Logger } from 'pino';
import type { EvictionPlan } from './eviction.ts';
import type { Layout } from './layout.ts';
import { diskFreeBytes, executeEviction, planForAge, planForSpace } from './maintenance.ts';
import type { Reporter } from './reporter.ts';
import type { CacheStore } from './store.ts';

/**
 * Eviction on demand, as opposed to the space eviction a download makes for itself (ensure.ts):
 * by age (at start-up and on AGE_EVICTION_CRON), and the `lora-cache evict` command (the age plan
 * and the over-the-cap plan; executed unless it is a dry run). Plans come from maintenance.ts.
 */

export interface EvictReport {
  dryRun: boolean;
  age: { victims: string[]; bytesFreed: number };
  overCap: { victims: string[]; bytesFreed: number; fits: boolean };
}

export interface EvictDeps {
  store: CacheStore;
  layout: Layout;
  logger: Logger;
  reporter: Reporter;
  now: () => Date;
}

/** Evicts what has not been used for `lora_max_age_days` (nothing when eviction is disabled). */
export async function evictByAge({ store, logger, reporter, now }: EvictDeps): Promise<number> {
  const settings = store.settings();
  if (!settings.evictionEnabled) return 0;
  const t = now();
  const plan = planForAge(store, settings, t);
  const result = await executeEviction(plan, `unused for ${settings.maxAgeDays} days`, {
    store,
    logger,
    now: t,
    onEvicted: (_r, e) => reporter.evicted(e, 'age'),
  });
  return result.evicted.length;
}

/** The `evict` command: the plan by age and down to the cap, executed unless `dryRun`. */
export async function evictNow({ store, layout, logger, reporter, now }: EvictDeps, dryRun: boolean): Promise<EvictReport> {
  const settings = store.settings();
  const t = now();
  const age = planForAge(store, settings, t);
  const overCap: EvictionPlan = planForSpace(
    store,
    settings,
    { neededBytes: 0, reservedBytes: 0, diskFree: await diskFreeBytes(layout.usersDir) },
    t,
  );
  const report: EvictReport = {
    dryRun,
    age: { victims: age.victims.map((v) => v.path), bytesFreed: age.bytesFreed },
    overCap: { victims: overCap.victims.map((v) => v.path), bytesFreed: overCap.bytesFreed, fits: overCap.fits },
  };
  if (!dryRun) {
    await executeEviction(age, 'age (manual)', { store, logger, now: t, onEvicted: (_r, e) => reporter.evicted(e, 'age') });
    await executeEviction(
      planForSpace(store, settings, { neededBytes: 0, reservedBytes: 0, diskFree: await diskFreeBytes(layout.usersDir) }, t),
      'over the cap (manual)',
      {
        store,
        logger,
        now: t,
        onEvicted: (_r, e) => reporter.evicted(e, 'space'),
      },
    );
  }
  return report;
}
