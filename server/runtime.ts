import { mkdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { Logger } from 'pino';
import type { RuntimeConfig } from './app.ts';
import { readOrCreateDevSecret } from './auth/dev-secret.ts';
import { readOrCreateDevGrantKey } from './auth/grant-keys.ts';
import type { Config } from './config.ts';
import { startAzurite } from './embedded/azurite.ts';
import { startEmbeddedPostgres } from './embedded/postgres.ts';

/**
 * Decides the external services: what the environment names, else embedded PostgreSQL and
 * Azurite under DATA_DIR (the zero-setup default), and the signing secret and grant key.
 */

export interface Runtime {
  config: RuntimeConfig;
  /** Which services were started here (and are stopped by `stop`). */
  embedded: { postgres: boolean; azurite: boolean };
  /** True when tokens are signed with the generated development secret. */
  devSecret: boolean;
  stop(): Promise<void>;
}

export async function resolveRuntime(config: Config, logger: Logger): Promise<Runtime> {
  const dataDir = resolve(config.dataDir);
  await mkdir(dataDir, { recursive: true });
  const stops: (() => Promise<void>)[] = [];
  const stop = async () => {
    for (const s of stops.reverse()) await s().catch((error: unknown) => logger.warn({ err: error }, 'stop failed'));
  };
  try {
    const devSecret = !config.auth.jwtSecret && !config.auth.jwksUrl;
    const jwtSecret = config.auth.jwtSecret ?? (devSecret ? await readOrCreateDevSecret(dataDir) : undefined);
    // loadConfig refuses production without GRANT_SIGNING_KEY; elsewhere a key is generated once.
    const grantKeys = config.auth.grantKeys ?? (config.production ? undefined : await readOrCreateDevGrantKey(dataDir));
    if (!grantKeys) throw new Error('no key to sign job grants with (set GRANT_SIGNING_KEY)');

    let databaseUrl = config.databaseUrl;
    if (!databaseUrl) {
      logger.info('DATABASE_URL not set: starting embedded PostgreSQL');
      const pg = await startEmbeddedPostgres({ dataDir: join(dataDir, 'postgres'), log: (m) => logger.debug(m) });
      stops.push(pg.stop);
      databaseUrl = pg.url;
    }
    let connectionString = config.storage.connectionString;
    if (!connectionString) {
      logger.info('AZURE_STORAGE_CONNECTION_STRING not set: starting Azurite');
      const azurite = await startAzurite({ dataDir: join(dataDir, 'azurite'), log: (m) => logger.debug(m) });
      stops.push(azurite.stop);
      connectionString = azurite.connectionString;
    }
    return {
      config: {
        ...config,
        dataDir,
        databaseUrl,
        storage: { ...config.storage, connectionString },
        auth: { ...config.auth, jwtSecret, grantKeys },
      },
      embedded: { postgres: !config.databaseUrl, azurite: !config.storage.connectionString },
      devSecret,
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}
