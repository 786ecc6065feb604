import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestProject } from 'vitest/node';
import { migrate } from '../../server/db/migrate.ts';
import { startAzurite } from '../../server/embedded/azurite.ts';
import { startEmbeddedPostgres } from '../../server/embedded/postgres.ts';

/**
 * Starts the real services the suites share, once per run: PostgreSQL (embedded, or
 * TEST_DATABASE_URL) and Azurite (or TEST_AZURE_STORAGE_CONNECTION_STRING), on free ports in a
 * temp dir, migrated. Each test file builds its own server and users on top (testkit/server.ts).
 */

declare module 'vitest' {
  export interface ProvidedContext {
    databaseUrl: string;
    storageConnectionString: string;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const dir = await mkdtemp(join(tmpdir(), 'lora-vault-test-'));
  await chmod(dir, 0o755); // as root, embedded PostgreSQL runs as the 'postgres' user and must reach its data dir
  const stops: (() => Promise<void>)[] = [];
  let databaseUrl = process.env.TEST_DATABASE_URL;
  let storage = process.env.TEST_AZURE_STORAGE_CONNECTION_STRING;
  const [pgResult, azuriteResult] = await Promise.allSettled([
    databaseUrl ? undefined : startEmbeddedPostgres({ dataDir: join(dir, 'postgres') }),
    storage ? undefined : startAzurite({ dataDir: join(dir, 'azurite') }),
  ]);
  for (const result of [pgResult, azuriteResult]) if (result.status === 'fulfilled' && result.value) stops.push(result.value.stop);
  const failed = [pgResult, azuriteResult].find((r) => r.status === 'rejected');
  if (failed) {
    for (const stop of stops) await stop().catch(() => {});
    throw failed.reason;
  }
  if (pgResult.status === 'fulfilled' && pgResult.value) databaseUrl = pgResult.value.url;
  if (azuriteResult.status === 'fulfilled' && azuriteResult.value) storage = azuriteResult.value.connectionString;
  if (!databaseUrl || !storage) throw new Error('test services did not start');
  await migrate(databaseUrl);
  project.provide('databaseUrl', databaseUrl);
  project.provide('storageConnectionString', storage);
  return async () => {
    for (const stop of stops) await stop();
    await rm(dir, { recursive: true, force: true });
  };
}
