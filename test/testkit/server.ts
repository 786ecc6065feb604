import type { Logger } from 'pino';
import { inject } from 'vitest';
import { type App, buildApp, type RuntimeConfig } from '../../server/app.ts';
import { signToken } from '../../server/auth/tokens.ts';
import { loadConfig } from '../../server/config.ts';

/** A real API server on a free port, over the shared test PostgreSQL and Azurite. */

export const TEST_JWT_SECRET = 'test-secret-test-secret-test-secret-0123456789';

export interface GqlResponse<T = Record<string, unknown>> {
  status: number;
  headers: Headers;
  body: { data?: T | null; errors?: { message: string; path?: string[]; extensions?: Record<string, unknown> }[] };
}

export interface TestServer {
  app: App;
  url: string;
  graphqlUrl: string;
  gql<T = Record<string, any>>(
    query: string,
    variables?: Record<string, unknown>,
    options?: { token?: string | null; headers?: Record<string, string> },
  ): Promise<GqlResponse<T>>;
  tokens: {
    admin(): Promise<string>;
    service(): Promise<string>;
    machine(machineId?: string): Promise<string>;
    user(userId: string): Promise<string>;
  };
  stop(): Promise<void>;
}

export function testConfig(env: Record<string, string> = {}): RuntimeConfig {
  const config = loadConfig({
    NODE_ENV: 'test',
    PORT: '0',
    HOST: '127.0.0.1',
    DATABASE_URL: inject('databaseUrl'),
    AZURE_STORAGE_CONNECTION_STRING: inject('storageConnectionString'),
    JWT_SECRET: TEST_JWT_SECRET,
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent',
    JOBS_POLL_SECONDS: '0.5',
    ...env,
  });
  if (!config.databaseUrl || !config.storage.connectionString) throw new Error('test services missing');
  return {
    ...config,
    databaseUrl: config.databaseUrl,
    storage: { ...config.storage, connectionString: config.storage.connectionString },
    auth: { ...config.auth, grantSecret: config.auth.grantSecret ?? TEST_JWT_SECRET },
  };
}

export async function startTestServer(env: Record<string, string> = {}, options: { logger?: Logger } = {}): Promise<TestServer> {
  const config = testConfig(env);
  const app = buildApp(config, options);
  const url = await app.start();
  const graphqlUrl = `${url}/graphql`;
  const secret = config.auth.jwtSecret ?? TEST_JWT_SECRET;
  return {
    app,
    url,
    graphqlUrl,
    async gql(query, variables, options = {}) {
      const headers: Record<string, string> = { 'content-type': 'application/json', ...options.headers };
      if (options.token) headers.authorization = `Bearer ${options.token}`;
      const res = await fetch(graphqlUrl, { method: 'POST', headers, body: JSON.stringify({ query, variables }) });
      const text = await res.text();
      let body: GqlResponse['body'];
      try {
        body = JSON.parse(text);
      } catch {
        body = { errors: [{ message: text }] };
      }
      return { status: res.status, headers: res.headers, body } as GqlResponse<any>;
    },
    tokens: {
      admin: () => signToken(secret, { role: 'admin', sub: 'test-admin' }),
      service: () => signToken(secret, { role: 'service', sub: 'test-dispatcher' }),
      machine: (machineId = 'test-machine') => signToken(secret, { role: 'machine', sub: machineId, machineId }),
      user: (userId) => signToken(secret, { role: 'user', sub: userId }),
    },
    stop: () => app.stop(),
  };
}
