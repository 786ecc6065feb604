import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BlobServiceClient } from '@azure/storage-blob';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type AzuriteHandle, startAzurite } from '../../server/embedded/azurite.ts';
import { applyUploadCors } from '../../server/storage/blob-cors.ts';

/**
 * The Blob service's CORS rule for browsers' Put Blocks (STORAGE_CORS_ORIGINS), against an Azurite
 * of its own (the shared one's service properties are every test file's): preflights from the
 * configured origin pass only after the rule is set, others and other methods stay refused, the
 * account's other rules are kept, and a second start-up writes nothing.
 */

let azurite: AzuriteHandle;
let dir: string;
let service: BlobServiceClient;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'storage-cors-'));
  azurite = await startAzurite({ dataDir: join(dir, 'azurite') });
  service = BlobServiceClient.fromConnectionString(azurite.connectionString);
  await service.getContainerClient('loras').createIfNotExists();
}, 60_000);
afterAll(async () => {
  await azurite?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** A browser's preflight for a Put Block from `origin`: the status and the allowed origin. */
async function preflight(origin: string, method = 'PUT'): Promise<{ status: number; allowOrigin: string | null }> {
  const url = `${service.getContainerClient('loras').getBlockBlobClient('content/x').url}?comp=block&blockid=QQ%3D%3D`;
  const res = await fetch(url, {
    method: 'OPTIONS',
    headers: { origin, 'access-control-request-method': method, 'access-control-request-headers': 'content-type' },
  });
  await res.arrayBuffer();
  return { status: res.status, allowOrigin: res.headers.get('access-control-allow-origin') };
}

describe('storage CORS for browser uploads', () => {
  it('lets the configured origin PUT blocks, and nobody else nor any other method', async () => {
    const studio = 'http://studio.example:8080';
    expect((await preflight(studio)).status).toBe(403); // without the rule a browser cannot upload
    expect(await applyUploadCors(azurite.connectionString, [studio])).toBe('set');
    expect(await preflight(studio)).toEqual({ status: 200, allowOrigin: studio });
    expect((await preflight('http://elsewhere.example')).status).toBe(403);
    expect((await preflight(studio, 'DELETE')).status).toBe(403);
  });

  it("keeps the account's other rules, writes nothing when already set, and an empty list removes only its own rule", async () => {
    const reads = {
      allowedOrigins: 'https://viewer.example',
      allowedMethods: 'GET',
      allowedHeaders: '*',
      exposedHeaders: '*',
      maxAgeInSeconds: 60,
    };
    const current = (await service.getProperties()).cors ?? [];
    await service.setProperties({ cors: [...current.filter((r) => r.allowedMethods !== 'GET'), reads] });
    expect(await applyUploadCors(azurite.connectionString, ['*'])).toBe('set');
    expect(await applyUploadCors(azurite.connectionString, ['*'])).toBe('unchanged'); // every replica's start-up
    let rules = (await service.getProperties()).cors ?? [];
    expect(rules).toContainEqual(reads);
    expect(rules.filter((r) => r.allowedMethods === 'PUT').map((r) => r.allowedOrigins)).toEqual(['*']);
    const any = await preflight('http://any.example');
    expect(any.status).toBe(200);
    expect(['*', 'http://any.example']).toContain(any.allowOrigin); // Azure answers `*`, Azurite echoes the origin

    expect(await applyUploadCors(azurite.connectionString, [])).toBe('set');
    rules = (await service.getProperties()).cors ?? [];
    expect(rules).toEqual([reads]);
    expect((await preflight('http://any.example')).status).toBe(403);
  });
});
