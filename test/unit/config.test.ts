import { describe, expect, it } from 'vitest';
import { generateGrantKeyPem } from '../../server/auth/grant-keys.ts';
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
      corsOrigins: ['*'],
    });
  });

  it('turns GraphiQL and CORS off in production unless configured', () => {
    const prod = {
      NODE_ENV: 'production',
      DATABASE_URL: 'postgresql://h/db',
      AZURE_STORAGE_CONNECTION_STRING: 'x',
      JWT_SECRET: 'x'.repeat(32),
      GRANT_SIGNING_KEY: generateGrantKeyPem(),
    };
    expect(loadConfig(prod)).toMatchObject({ graphiql: false, corsOrigins: [], storageCorsOrigins: [] });
    // Studio is served from the API's own origin: its block PUTs to storage need that origin by default
    expect(loadConfig({ ...prod, PUBLIC_URL: 'https://vault.example/lora/' }).storageCorsOrigins).toEqual(['https://vault.example']);
    expect(
      loadConfig({ ...prod, PUBLIC_URL: 'https://vault.example', CORS_ORIGINS: 'https://studio.example.com' }).storageCorsOrigins,
    ).toEqual(['https://studio.example.com', 'https://vault.example']);
    expect(
      loadConfig({ ...prod, PUBLIC_URL: 'https://vault.example', STORAGE_CORS_ORIGINS: 'https://other.example' }).storageCorsOrigins,
    ).toEqual(['https://other.example']);
    expect(loadConfig({ ...prod, GRAPHIQL: 'true', CORS_ORIGINS: 'https://studio.example.com, http://localhost:5173' })).toMatchObject({
      graphiql: true,
      corsOrigins: ['https://studio.example.com', 'http://localhost:5173'],
    });
  });

  it('refuses CORS_ORIGINS entries that are not origins', () => {
    for (const bad of ['studio.example.com', 'https://studio.example.com/app', 'ftp://x.example.com']) {
      expect(() => loadConfig({ CORS_ORIGINS: bad }), bad).toThrow(/CORS_ORIGINS/);
    }
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

  it('bounds stalled and concurrent uploads and slow clients by default (UPLOAD_IDLE_SECONDS, UPLOAD_CONCURRENCY_*, HTTP_*)', () => {
    expect(loadConfig({})).toMatchObject({
      uploadLimits: { idleMs: 60_000, perUser: 4, perProcess: 64 },
      httpTimeouts: { headersMs: 30_000, keepAliveMs: 5_000 },
    });
    expect(loadConfig({ UPLOAD_IDLE_SECONDS: '2.5' }).uploadLimits.idleMs).toBe(2_500);
    expect(() => loadConfig({ UPLOAD_IDLE_SECONDS: '0', UPLOAD_CONCURRENCY_PER_USER: '-1' })).toThrow(
      /UPLOAD_IDLE_SECONDS[\s\S]*UPLOAD_CONCURRENCY_PER_USER/,
    );
  });

  it('treats empty variables as unset', () => {
    expect(loadConfig({ DATABASE_URL: '  ', PORT: '' }).databaseUrl).toBeUndefined();
  });
});

describe('loadConfig: telemetry (issue 15)', () => {
  it('exports nothing without an OTLP endpoint; serves /metrics to anyone in development, loopback only in production', () => {
    const dev = loadConfig({});
    expect(dev.telemetry.otlp).toEqual({ traces: false, metrics: false });
    expect(dev.telemetry.metrics).toEqual({ enabled: true, token: undefined, allowedNetworks: null });
    const prod = loadConfig({
      NODE_ENV: 'production',
      DATABASE_URL: 'postgresql://u:p@db/x',
      AZURE_STORAGE_CONNECTION_STRING: 'UseDevelopmentStorage=true',
      JWT_SECRET: 'x'.repeat(32),
      GRANT_SIGNING_KEY: generateGrantKeyPem(),
    });
    expect(prod.telemetry.metrics.allowedNetworks).toEqual(['127.0.0.0/8', '::1/128']);
  });

  it('OTLP per signal, unless its exporter is none; METRICS_ENABLED=false; a bad network is refused', () => {
    const c = loadConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318', OTEL_METRICS_EXPORTER: 'none', METRICS_ENABLED: 'false' });
    expect(c.telemetry.otlp).toEqual({ traces: true, metrics: false });
    expect(c.telemetry.metrics.enabled).toBe(false);
    expect(() => loadConfig({ METRICS_ALLOWED_NETWORKS: '10.0.0.0/8,300.1.2.3/8' })).toThrow(/METRICS_ALLOWED_NETWORKS/);
    expect(() => loadConfig({ METRICS_ALLOWED_NETWORKS: '10.0.0.0/33' })).toThrow(/METRICS_ALLOWED_NETWORKS/);
    expect(loadConfig({ METRICS_ALLOWED_NETWORKS: '10.0.0.0/8, ::1' }).telemetry.metrics.allowedNetworks).toEqual(['10.0.0.0/8', '::1']);
  });
});

describe('owner downloads through the API', () => {
  it('PUBLIC_URL is unset by default (links point at the listening address); its trailing slash goes; a query, fragment or other scheme is refused', () => {
    expect(loadConfig({}).ownerDownloads).toEqual({ publicUrl: undefined, perUser: 8, perProcess: 128 });
    expect(loadConfig({ PUBLIC_URL: 'https://vault.example/lora/' }).ownerDownloads.publicUrl).toBe('https://vault.example/lora');
    for (const bad of ['vault.example', 'ftp://vault.example', 'https://vault.example/?a=1', 'https://vault.example/#x'])
      expect(() => loadConfig({ PUBLIC_URL: bad }), bad).toThrow(/PUBLIC_URL/);
    expect(() => loadConfig({ OWNER_DOWNLOADS_PER_USER: '0' })).toThrow(/OWNER_DOWNLOADS_PER_USER/);
  });
});
