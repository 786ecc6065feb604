import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../server/config.ts';

describe('loadConfig', () => {
  it('runs on documented defaults with an empty environment', () => {
    const c = loadConfig({});
    expect(c).toMatchObject({
      env: 'development',
      port: 4000,
      host: '127.0.0.1',
      dataDir: './.data',
      databaseUrl: undefined,
      quota: { defaultMaxBytes: 10 * 1024 ** 3, defaultMaxCount: 100 },
      maxUploadBytes: 2 * 1024 ** 3,
      storage: { loraContainer: 'user-loras', sharedContainer: 'emprops-share', sharedPrefix: 'models/loras/', sasTtlSeconds: 900 },
      graphiql: true,
      websocket: { perSocket: 32, perPrincipal: 64 },
    });
  });

  it('reports every problem at once', () => {
    let error: unknown;
    try {
      loadConfig({ PORT: 'eighty', JWT_SECRET: 'short', SAS_TTL_SECONDS: '-1', LOG_LEVEL: 'loud' });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const problems = (error as ConfigError).problems.join('\n');
    for (const key of ['PORT', 'JWT_SECRET', 'SAS_TTL_SECONDS', 'LOG_LEVEL']) expect(problems).toContain(key);
  });

  it('refuses production without real services and a secret', () => {
    expect(() => loadConfig({ NODE_ENV: 'production' })).toThrow(/JWT_SECRET or JWT_JWKS_URL[\s\S]*DATABASE_URL/);
  });

  it('treats empty variables as unset', () => {
    expect(loadConfig({ DATABASE_URL: '  ', PORT: '' }).databaseUrl).toBeUndefined();
  });
});
