import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrate } from '../../server/db/migrate.ts';
import { isolatedDatabase } from '../testkit/library-helpers.ts';
import { sdxlLora } from '../testkit/lora-files.ts';
import { postMultipart } from '../testkit/multipart.ts';
import { newUserId, seedLora } from '../testkit/seed.ts';
import { startTestServer, type TestServer } from '../testkit/server.ts';

/**
 * THREATS row 14: a server killed between committing the blob and marking the row READY (or
 * whose database write failed after the commit) leaves an UPLOADING row and a committed blob;
 * the reconciler removes both, and orphan blobs no row names. Runs on its own database and
 * container so its short staleness window cannot touch other suites' uploads.
 */

let server: TestServer;
let db: Awaited<ReturnType<typeof isolatedDatabase>>;
beforeAll(async () => {
  db = await isolatedDatabase();
  await migrate(db.url);
  server = await startTestServer({
    DATABASE_URL: db.url,
    LORA_CONTAINER: `reconcile-${randomUUID().slice(0, 8)}`,
    UPLOAD_STALE_SECONDS: '1',
  });
});
afterAll(async () => {
  await server?.stop();
  await server?.app.blobs.loras.deleteIfExists();
  await db?.drop();
});

async function blobNames(prefix: string): Promise<string[]> {
  const names: string[] = [];
  for await (const b of server.app.blobs.loras.listBlobsFlat({ prefix })) names.push(b.name);
  return names.sort();
}

describe('upload reconciler', () => {
  it('removes half-made uploads and orphan blobs, and keeps every READY LoRA', async () => {
    const userId = newUserId();
    const token = await server.tokens.user(userId);
    // A LoRA that made it: must survive.
    const kept = await postMultipart({ url: server.graphqlUrl, token, file: sdxlLora() });
    const keptId = kept.body.data.uploadLora.lora.id as string;
    const seeded = await seedLora(server.app, userId);
    // The crash: rows reserved, blob committed, never READY.
    const { fileId, blobPath } = await server.app.services.registry.begin({
      userId,
      name: 'half-made',
      fileName: 'half.safetensors',
      format: 'SAFETENSORS',
      tags: [],
    });
    await server.app.blobs.put(blobPath, sdxlLora());
    // A blob no row names (e.g. its rows were rolled back after the commit).
    const orphan = `users/${userId}/loras/999999999.safetensors`;
    await server.app.blobs.put(orphan, Buffer.from('orphan'));

    await new Promise((r) => setTimeout(r, 1500)); // older than UPLOAD_STALE_SECONDS
    const plan = await server.app.jobs.reconcileNow();
    expect(plan.staleUploads.map((u) => u.fileId)).toEqual([fileId]);
    expect(plan.orphanBlobs).toEqual([orphan]);

    expect(await server.app.db.flat_file.findUnique({ where: { id: fileId } })).toBeNull();
    const remaining = await blobNames(`users/${userId}/`);
    expect(remaining).toEqual([`users/${userId}/loras/${keptId}.safetensors`, `users/${userId}/loras/${seeded.id}.safetensors`].sort());
    const listed = await server.gql('{ loras { total } }', {}, { token });
    expect(listed.body.data?.loras.total).toBe(2);

    // Nothing left to do: a second run plans nothing.
    expect(await server.app.jobs.reconcileNow()).toEqual({ staleUploads: [], orphanBlobs: [] });
  });
});
