import type { InMemorySpanExporter } from '@opentelemetry/sdk-trace-base';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CreateLoraDownloadDocument } from '../../sdk/index.ts';
import { loraDownload, mintGrant } from '../testkit/grants.ts';
import { dataOf, member } from '../testkit/graphql-assertions.ts';
import { deleteLora, setUserLoraQuota } from '../testkit/library-helpers.ts';
import { BAD_SAFETENSORS, sdxlLora } from '../testkit/lora-files.ts';
import { postMultipart } from '../testkit/multipart.ts';
import { newUserId, seedLora } from '../testkit/seed.ts';
import { startTestServer, type TestServer } from '../testkit/server.ts';
import { sample, scrape, spanTree, startTestTelemetry } from '../testkit/telemetry.ts';
import { collect, wsClient } from '../testkit/ws.ts';

/** Issue 15 on the server: real operations move /metrics; the upload's trace; no secret in a span. */

let spans: InMemorySpanExporter;
let server: TestServer;
beforeAll(async () => {
  spans = startTestTelemetry();
  server = await startTestServer({ BUSINESS_METRICS_INTERVAL_SECONDS: '1' });
});
afterAll(() => server?.stop());

const metricsUrl = () => `${server.url}/metrics`;

async function user() {
  const id = newUserId();
  return { id, token: await server.tokens.user(id) };
}

describe('/metrics after real operations', () => {
  it('counts an upload, a refused upload (by error code), a quota refusal and a delete', async () => {
    const before = await scrape(metricsUrl());
    const { id, token } = await user();
    const ok = await postMultipart({ url: server.graphqlUrl, token, file: sdxlLora('kohya'), filename: 'a.safetensors' });
    expect(ok.body.data.uploadLora.__typename).toBe('UploadLoraSuccess');
    const bad = await postMultipart({ url: server.graphqlUrl, token, file: BAD_SAFETENSORS[0]!.bytes, filename: 'b.safetensors' });
    expect(bad.body.data.uploadLora.code).toBe('INVALID_FILE_FORMAT');
    await setUserLoraQuota(server, { userId: id, maxLoraCount: 1 });
    const full = await postMultipart({ url: server.graphqlUrl, token, file: sdxlLora('kohya'), filename: 'c.safetensors' });
    expect(full.body.data.uploadLora.code).toBe('QUOTA_EXCEEDED');
    const deleted = await deleteLora(server, token, ok.body.data.uploadLora.lora.id);
    expect(deleted.__typename).toBe('DeleteLoraSuccess');

    const after = await scrape(metricsUrl());
    const moved = (name: string, labels: Record<string, string> = {}) => sample(after, name, labels) - sample(before, name, labels);
    expect(moved('lora_vault_uploads_total', { outcome: 'success' })).toBe(1);
    expect(moved('lora_vault_uploads_total', { outcome: 'failure', error_code: 'INVALID_FILE_FORMAT' })).toBe(1);
    expect(moved('lora_vault_uploads_total', { outcome: 'failure', error_code: 'QUOTA_EXCEEDED' })).toBe(1);
    expect(moved('lora_vault_quota_refusals_total')).toBe(1);
    expect(moved('lora_vault_upload_size_count', { lora_format: 'SAFETENSORS' })).toBe(1);
    expect(moved('lora_vault_upload_duration_count')).toBe(3);
    expect(moved('lora_vault_graphql_operation_duration_count', { graphql_operation_name: 'UploadLora' })).toBe(3);
    expect(moved('lora_vault_graphql_operation_duration_count', { graphql_operation_name: 'DeleteLora' })).toBe(1);
    expect(moved('lora_vault_events_published_total', { messaging_destination_name: 'cache-events' })).toBeGreaterThanOrEqual(1);
    expect(
      moved('lora_vault_blob_deletions_total', { outcome: 'done' }) + sample(after, 'lora_vault_blob_deletions_pending'),
    ).toBeGreaterThanOrEqual(0);
    // the pg pools' connections (instrumentation-pg) and the HTTP server's requests are there too
    expect(sample(after, 'db_client_connection_count')).toBeGreaterThan(0);
    // no label carries a user id, a LoRA id or a path
    for (const key of after.keys()) {
      expect(key).not.toContain(id);
      expect(key).not.toMatch(/users\/|loras\//);
    }
  });

  it('exports the business gauges from the database, and admins read them through businessMetrics', async () => {
    const { token } = await user();
    await postMultipart({ url: server.graphqlUrl, token, file: sdxlLora('kohya'), filename: 'g.safetensors' });
    const admin = await server.gql(
      '{ businessMetrics { usersWithLoras loraCount storageBytes lorasPerUser queueDepth { queue jobs } } }',
      {},
      {
        token: await server.tokens.admin(),
      },
    );
    const figures = admin.body.data?.businessMetrics;
    expect(figures.usersWithLoras).toBeGreaterThanOrEqual(1);
    expect(Number(figures.storageBytes)).toBeGreaterThan(0);
    const refused = await server.gql('{ businessMetrics { loraCount } }', {}, { token });
    expect(refused.body.errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
    await expect
      .poll(async () => sample(await scrape(metricsUrl()), 'lora_vault_loras'), { timeout: 10_000, interval: 300 })
      .toBeGreaterThanOrEqual(figures.loraCount);
  });
});

describe('events and sockets', () => {
  it('a subscription counts as an open WebSocket and an active subscription; a delete is published once and delivered to it', async () => {
    const { id, token } = await user();
    const lora = await seedLora(server.app, id);
    const admin = wsClient(server.graphqlUrl, await server.tokens.admin());
    const before = await scrape(metricsUrl());
    const seen = collect(admin, 'subscription { cacheEvents { type loraId } }', {}, (v) => v.some((e) => e.cacheEvents.loraId === lora.id));
    await expect
      .poll(async () => sample(await scrape(metricsUrl()), 'lora_vault_subscriptions_active', { graphql_field: 'cacheEvents' }), {
        timeout: 10_000,
        interval: 200,
      })
      .toBe(sample(before, 'lora_vault_subscriptions_active', { graphql_field: 'cacheEvents' }) + 1);
    const during = await scrape(metricsUrl());
    expect(sample(during, 'lora_vault_websocket_connections') - sample(before, 'lora_vault_websocket_connections')).toBe(1);
    expect((await deleteLora(server, token, lora.id)).__typename).toBe('DeleteLoraSuccess');
    expect((await seen).errors).toEqual([]);
    await admin.dispose();
    await expect
      .poll(
        async () => {
          const after = await scrape(metricsUrl());
          return [
            sample(after, 'lora_vault_events_published_total', { messaging_destination_name: 'cache-events' }) -
              sample(before, 'lora_vault_events_published_total', { messaging_destination_name: 'cache-events' }),
            sample(after, 'lora_vault_events_delivered_total', { graphql_field: 'cacheEvents' }) -
              sample(before, 'lora_vault_events_delivered_total', { graphql_field: 'cacheEvents' }),
            sample(after, 'lora_vault_subscriptions_active', { graphql_field: 'cacheEvents' }) -
              sample(before, 'lora_vault_subscriptions_active', { graphql_field: 'cacheEvents' }),
            sample(after, 'lora_vault_websocket_connections') - sample(before, 'lora_vault_websocket_connections'),
          ];
        },
        { timeout: 10_000, interval: 200 },
      )
      .toEqual([1, 1, 0, 0]);
  });
});

describe('traces', () => {
  it('an upload is one trace: HTTP server span → GraphQL → lora.upload with its phases, SQL and blob spans', async () => {
    spans.reset();
    const { token } = await user();
    const res = await postMultipart({ url: server.graphqlUrl, token, file: sdxlLora('kohya'), filename: 'trace.safetensors' });
    expect(res.body.data.uploadLora.__typename).toBe('UploadLoraSuccess');
    const upload = spans.getFinishedSpans().find((s) => s.name === 'lora.upload');
    expect(
      upload,
      spans
        .getFinishedSpans()
        .map((s) => s.name)
        .join(', '),
    ).toBeDefined();
    const tree = spanTree(spans.getFinishedSpans(), upload!.spanContext().traceId);
    for (const phase of ['receive', 'validate', 'commit', 'finalize', 'stage'])
      expect(tree.parentOf(`lora.upload.${phase}`)).toBe('lora.upload');
    expect(upload!.attributes['lora.format']).toBe('SAFETENSORS');
    expect(upload!.attributes['lora.upload.bytes']).toBe(sdxlLora('kohya').length);
    expect(tree.names).toContain('graphql.parse');
    expect(tree.names).toContain('graphql.validate');
    expect(tree.names).toContain('graphql.resolve Mutation.uploadLora');
    expect(tree.names.some((n) => n.startsWith('POST'))).toBe(true); // the HTTP server span
    expect(tree.names.some((n) => n.startsWith('prisma:'))).toBe(true); // Prisma's SQL spans
    expect(tree.names.some((n) => /^pg\./.test(n))).toBe(true); // instrumentation-pg
    expect(tree.names.some((n) => /BlockBlobClient|BlobClient|ContainerClient/.test(n))).toBe(true); // the Azure SDK's own spans
  });

  it('no token, grant, SAS URL or download link appears in any exported span attribute', async () => {
    const { id, token } = await user();
    const ok = await postMultipart({ url: server.graphqlUrl, token, file: sdxlLora('kohya'), filename: 's.safetensors' });
    const loraId = ok.body.data.uploadLora.lora.id;
    const service = await server.tokens.service();
    const machine = await server.tokens.machine('gpu-secret-test');
    const grant = await mintGrant(server, id);
    const download = await loraDownload(server, machine, loraId, grant);
    const url = download.__typename === 'LoraDownload' ? download.url : '';
    expect(url).toContain('sig=');
    // an owner's download link carries its capability in the path (GET /downloads/loras/<token>)
    const link = member(
      dataOf(await server.request(CreateLoraDownloadDocument, { id: loraId }, { token })).createLoraDownload,
      'LoraDownloadLink',
    );
    const before = await scrape(metricsUrl());
    const fetched = await fetch(link.url);
    expect(fetched.status).toBe(200);
    const size = (await fetched.arrayBuffer()).byteLength;
    expect((await fetch(link.url.replace(/[^/]+$/, 'not-a-token'))).status).toBe(404);
    const after = await scrape(metricsUrl());
    const moved = (name: string, labels: Record<string, string> = {}) => sample(after, name, labels) - sample(before, name, labels);
    expect(moved('lora_vault_owner_downloads_total', { outcome: 'full' })).toBe(1); // each fetch counted (the audit is per link)
    expect(moved('lora_vault_owner_downloads_total', { outcome: 'not_found' })).toBe(1);
    expect(moved('lora_vault_owner_download_bytes_total')).toBe(size);
    expect(sample(after, 'lora_vault_owner_downloads_active')).toBe(0);
    const capability = link.url.split('/').pop() as string;
    await new Promise((r) => setTimeout(r, 200)); // the server span ends with the response
    const exported = JSON.stringify(spans.getFinishedSpans().map((s) => ({ name: s.name, attributes: s.attributes, events: s.events })));
    expect(exported).toContain('/downloads/loras/{token}'); // the route is traced, its token not
    for (const secret of [token, service, machine, grant, new URL(url).searchParams.get('sig') as string, url, capability]) {
      expect(exported).not.toContain(secret);
    }
  });
});

describe('/metrics access', () => {
  it('METRICS_ENABLED=false: no endpoint', async () => {
    const off = await startTestServer({ METRICS_ENABLED: 'false' });
    try {
      expect((await fetch(`${off.url}/metrics`)).status).toBe(404);
    } finally {
      await off.stop();
    }
  });

  it('with a token and networks that exclude the caller: the token is required', async () => {
    const closed = await startTestServer({ METRICS_TOKEN: 'scrape-token-0123456789', METRICS_ALLOWED_NETWORKS: '10.0.0.0/8' });
    try {
      expect((await fetch(`${closed.url}/metrics`)).status).toBe(401);
      expect((await fetch(`${closed.url}/metrics`, { headers: { authorization: 'Bearer wrong-token-0123456789' } })).status).toBe(401);
      const res = await fetch(`${closed.url}/metrics`, { headers: { authorization: 'Bearer scrape-token-0123456789' } });
      expect(res.status).toBe(200);
      expect(await res.text()).toContain('lora_vault_');
    } finally {
      await closed.stop();
    }
  });

  it('an allowed network scrapes without a token', async () => {
    const open = await startTestServer({ METRICS_ALLOWED_NETWORKS: '127.0.0.0/8,::1/128' });
    try {
      expect((await fetch(`${open.url}/metrics`)).status).toBe(200);
    } finally {
      await open.stop();
    }
  });
});
