import { randomUUID } from 'node:crypto';
import pino from 'pino';
import { buildApp } from './app.ts';
import { DEMO_USER_ID } from './auth/dev-identities.ts';
import { signToken } from './auth/tokens.ts';
import { ConfigError, loadConfig } from './config.ts';
import { resolveRuntime } from './runtime.ts';
import { currentTelemetry } from './telemetry/sdk.ts';

/** `npm start`: parse config, decide services (embedded when unset), start, stop on a signal. */

async function main(): Promise<void> {
  let config: ReturnType<typeof loadConfig>;
  try {
    config = loadConfig();
  } catch (error) {
    if (error instanceof ConfigError) {
      console.error(error.message);
      process.exit(1);
    }
    throw error;
  }
  const logger = pino({ level: config.logLevel, base: { service: 'lora-vault' } });
  const runtime = await resolveRuntime(config, logger);
  const app = buildApp(runtime.config, { logger, studioDevTokens: runtime.devSecret });

  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'shutting down');
    await app.stop().catch((error: unknown) => logger.error({ err: error }, 'app stop failed'));
    await runtime.stop();
    await currentTelemetry()?.shutdown(); // flushes spans and metrics to OTLP, if configured
    process.exit(0);
  };
  process.on('SIGINT', () => void shutdown('SIGINT'));
  process.on('SIGTERM', () => void shutdown('SIGTERM'));

  let url: string;
  try {
    url = await app.start();
  } catch (error) {
    logger.fatal({ err: error }, 'start failed');
    await app.stop().catch(() => {});
    await runtime.stop();
    process.exit(1);
  }
  logger.info({ url: `${url}/graphql` }, 'lora-vault listening');
  if (runtime.devSecret && runtime.config.auth.jwtSecret) {
    const secret = runtime.config.auth.jwtSecret;
    const tokens = {
      user: await signToken(secret, { role: 'user', sub: DEMO_USER_ID }),
      admin: await signToken(secret, { role: 'admin', sub: 'dev-admin' }),
      machine: await signToken(secret, { role: 'machine', sub: 'dev-machine', machineId: 'dev-machine' }),
      service: await signToken(secret, { role: 'service', sub: 'dev-dispatcher' }),
    };
    process.stdout.write(
      `${[
        '',
        `  lora-vault is running. GraphiQL: ${url}/graphql`,
        `  Studio (the LoRA library; pick a development user): ${url}/studio/`,
        `  Embedded: PostgreSQL ${runtime.embedded.postgres ? 'yes' : 'no'}, Azurite ${runtime.embedded.azurite ? 'yes' : 'no'} (data in ${runtime.config.dataDir})`,
        '  Development tokens (paste into GraphiQL headers as {"Authorization": "Bearer <token>"}):',
        `    user ${DEMO_USER_ID}: ${tokens.user}`,
        `    admin:   ${tokens.admin}`,
        `    machine: ${tokens.machine}`,
        `    service: ${tokens.service}`,
        `  More: npm run -s token -- --role user --user ${randomUUID()}`,
        '',
      ].join('\n')}\n`,
    );
  }
}

void main();
