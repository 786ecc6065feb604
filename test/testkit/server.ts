import { randomUUID } from 'node:crypto';
import type { TypedDocumentNode } from '@graphql-typed-document-node/core';
import { type DocumentNode, print } from 'graphql';
import { inject } from 'vitest';
import { type App, type BuildOptions, buildApp, type RuntimeConfig } from '../../server/app.ts';
import { parseGrantKeys } from '../../server/auth/grant-keys.ts';
import { signToken } from '../../server/auth/tokens.ts';
import { loadConfig } from '../../server/config.ts';

/** A real API server on a free port, over the shared test PostgreSQL and Azurite. */

export const TEST_JWT_SECRET = 'test-secret-test-secret-test-secret-0123456789';

/** The Ed25519 key test servers sign job grants with (GRANT_SIGNING_KEY), unless a test passes its own. */
export const TEST_GRANT_KEY_PEM = `-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIDOb028a5LYBR/y/0eW8OoEv6RJqRliDfNGJOA70HBUi
-----END PRIVATE KEY-----
`;

export interface GqlResponse<T = Record<string, unknown>> {
  status: number;
  headers: Headers;
  body: { data?: T | null; errors?: { message: string; path?: string[]; extensions?: Record<string, unknown> }[] };
}

export interface RequestOptions {
  token?: string | null;
  headers?: Record<string, string>;
}

export interface TestServer {
  app: App;
  url: string;
  graphqlUrl: string;
  /**
   * One of the SDK's generated documents (`LorasDocument`, `DeleteLoraDocument`, … from
   * `sdk/index.ts`) over HTTP, sent as the SDK sends it (the printed text and its persisted hash):
   * variables and data are typed, so a schema change breaks the test at compile time. The
   * response is returned whole (status, errors) for tests about refusals.
   */
  request<TData, TVariables extends Record<string, unknown>>(
    document: TypedDocumentNode<TData, TVariables>,
    variables: TVariables,
    options?: RequestOptions,
  ): Promise<GqlResponse<TData>>;
  /**
   * A hand-written document: for tests about the document itself (selections per role, limits,
   * malformed or foreign queries) and operations the SDK does not have.
   */
  gql<T = Record<string, any>>(query: string, variables?: Record<string, unknown>, options?: RequestOptions): Promise<GqlResponse<T>>;
  tokens: {
    admin(): Promise<string>;
    service(): Promise<string>;
    machine(machineId?: string): Promise<string>;
    user(userId: string): Promise<string>;
  };
  stop(): Promise<void>;
}

/**
 * The LoRA container of every server this test file starts (unless it names one): blobs are
 * stored at neutral names (`content/{uuid}`, issue 17), so a file finds what it left by its own
 * container, not by a user's prefix.
 */
export const FILE_CONTAINER = `loras-${randomUUID().slice(0, 8)}`;

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
    GRANT_SIGNING_KEY: TEST_GRANT_KEY_PEM,
    LORA_CONTAINER: FILE_CONTAINER,
    ...env,
  });
  if (!config.databaseUrl || !config.storage.connectionString) throw new Error('test services missing');
  return {
    ...config,
    databaseUrl: config.databaseUrl,
    storage: { ...config.storage, connectionString: config.storage.connectionString },
    auth: { ...config.auth, grantKeys: config.auth.grantKeys ?? parseGrantKeys(TEST_GRANT_KEY_PEM) },
  };
}

/** The persisted hash codegen attaches to each SDK document, as the SDK sends it. */
function persistedHashOf(document: DocumentNode): string | undefined {
  return (document as { __meta__?: { hash?: string } }).__meta__?.hash?.replace(/^sha256:/, '');
}

async function post(graphqlUrl: string, body: unknown, options: RequestOptions): Promise<GqlResponse<any>> {
  const headers: Record<string, string> = { 'content-type': 'application/json', ...options.headers };
  if (options.token) headers.authorization = `Bearer ${options.token}`;
  const res = await fetch(graphqlUrl, { method: 'POST', headers, body: JSON.stringify(body) });
  const text = await res.text();
  let parsed: GqlResponse['body'];
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = { errors: [{ message: text }] };
  }
  return { status: res.status, headers: res.headers, body: parsed };
}

export async function startTestServer(env: Record<string, string> = {}, options: BuildOptions = {}): Promise<TestServer> {
  const config = testConfig(env);
  const app = buildApp(config, options);
  const url = await app.start();
  const graphqlUrl = `${url}/graphql`;
  const secret = config.auth.jwtSecret ?? TEST_JWT_SECRET;
  return {
    app,
    url,
    graphqlUrl,
    request(document, variables, options = {}) {
      const hash = persistedHashOf(document);
      const extensions = hash ? { persistedQuery: { version: 1, sha256Hash: hash } } : undefined;
      return post(graphqlUrl, { query: print(document), variables, extensions }, options);
    },
    gql: (query, variables, options = {}) => post(graphqlUrl, { query, variables }, options),
    tokens: {
      admin: () => signToken(secret, { role: 'admin', sub: 'test-admin' }),
      service: () => signToken(secret, { role: 'service', sub: 'test-dispatcher' }),
      machine: (machineId = 'test-machine') => signToken(secret, { role: 'machine', sub: machineId, machineId }),
      user: (userId) => signToken(secret, { role: 'user', sub: userId }),
    },
    stop: () => app.stop(),
  };
}
