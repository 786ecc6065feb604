import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrate } from '../../server/db/migrate.ts';
import { planReconcile } from '../../server/jobs/reconciler.ts';
import { holdUpload } from '../testkit/held-upload.ts';
import { blobsOf, invariantViolations } from '../testkit/invariants.ts';
import { isolatedDatabase, listLoras, sleep } from '../testkit/library-helpers.ts';
import { sdxlLora } from '../testkit/lora-files.ts';
import { postMultipart } from '../testkit/multipart.ts';
import { makeSafetensors, smallSd15Lora } from '../testkit/safetensors.ts';
import { eventually, newUserId, seedLora } from '../testkit/seed.ts';
import { startTestServer, type TestServer } from '../testkit/server.ts';

/**
 * THREATS row 14: a server killed between committing the blob and marking the row READY (or
 * whose database write failed after the commit) leaves an UPLOADING row and a committed blob;
 * the reconciler removes both, and orphan blobs no row names. Row 31: staged blocks no live
 * upload owns are discarded past the window. Row 29: broken storage invariants (READY but
 * deleted, READY without blob, quota drift) are found and repaired. Runs on its own database
 * and container so its short staleness window cannot touch other suites' uploads.
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
  await server?.app.blobs.clientsForTests().loras.deleteIfExists();
  await db?.drop();
});

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
    expect(plan.stagedLeftovers).toEqual([]);

    expect(await server.app.db.flat_file.findUnique({ where: { id: fileId } })).toBeNull();
    const remaining = (await blobsOf(server.app, userId)).map((b) => b.name).sort();
    const rows = await server.app.db.lora.findMany({ where: { file_id: { in: [BigInt(keptId), BigInt(seeded.id)] } } });
    expect(remaining).toEqual([...new Set(rows.map((r) => r.blob_path))].sort());
    expect((await listLoras(server, token)).total).toBe(2);

    // Nothing left to do: a second run plans nothing.
    expect(await server.app.jobs.reconcileNow()).toMatchObject({
      staleUploads: [],
      orphanBlobs: [],
      stagedLeftovers: [],
      invariants: { deletedButReady: [], readyWithoutBlob: [], quotaDrift: [] },
    });
  });

  it('discards staged blocks no upload owns once past the window; a live upload is untouched before it, and typed after', async () => {
    const userId = newUserId();
    const token = await server.tokens.user(userId);
    // Staged blocks of an upload whose own cleanup never ran (its rows are gone).
    const leftover = `users/${userId}/loras/888888888.safetensors`;
    await server.app.blobs
      .clientsForTests()
      .loras.getBlockBlobClient(leftover)
      .stageBlock(Buffer.from('00000000').toString('base64'), Buffer.alloc(4096, 1), 4096);
    // An upload in flight with a staged 8 MiB block.
    const file = makeSafetensors([{ name: 'w', shape: [4.5 * 1024 * 1024], dtype: 'F16' }]);
    const held = holdUpload({ url: server.graphqlUrl, token, fileSize: file.length });
    await held.send(file.subarray(0, 8.5 * 1024 * 1024));
    const live = await eventually(async () => (await blobsOf(server.app, userId)).find((b) => b.name !== leftover), 15_000, 'staged block');
    expect(live).toMatchObject({ committed: false, uncommittedBlocks: 1 });

    // Before the window: nothing of either is planned.
    const early = await planReconcile(server.app.db, server.app.blobs, { staleAfterMs: 3_600_000 });
    const paths = [...early.stagedLeftovers.map((l) => l.path), ...early.orphanBlobs, ...early.staleUploads.map((u) => u.blobPath)];
    expect(paths.filter((p) => p === leftover || p === live.name)).toEqual([]);

    // Past the window (1 s here): the leftover's blocks are discarded, and the upload, stale now, is removed.
    await sleep(1500);
    const plan = await server.app.jobs.reconcileNow();
    expect(plan.stagedLeftovers).toEqual([{ path: leftover, bytes: 4096 }]);
    expect(plan.staleUploads.map((u) => u.blobPath)).toEqual([live.name]);
    expect(await blobsOf(server.app, userId)).toEqual([]);
    // The upload that outlived the window ends typed, and leaves nothing either.
    await held.send(file.subarray(8.5 * 1024 * 1024));
    held.finish();
    const res = await held.response;
    expect(res.body?.data?.uploadLora, res.text).toMatchObject({ __typename: 'UploadInterruptedError', code: 'UPLOAD_INTERRUPTED' });
    expect(await blobsOf(server.app, userId)).toEqual([]);
    expect(await server.app.db.lora.count({ where: { user_id: userId } })).toBe(0);
  });

  it('repairs broken invariants: READY but deleted, READY without its blob, drifted quota counters', async () => {
    const [userA, userB, userC] = [newUserId(), newUserId(), newUserId()];
    const zombie = await seedLora(server.app, userA, { name: 'deleted, then readied' });
    const survivor = await seedLora(server.app, userA, { name: 'survivor' });
    await server.app.db.lora.update({ where: { file_id: BigInt(zombie.id) }, data: { deleted_at: new Date() } });
    // its own content (identical bytes would share one stored blob with the others)
    const blobless = await seedLora(server.app, userB, {
      name: 'blob gone',
      bytes: Buffer.concat([smallSd15Lora(), Buffer.from(randomUUID())]),
    });
    const bloblessRow = await server.app.db.lora.findUniqueOrThrow({ where: { file_id: BigInt(blobless.id) } });
    await server.app.blobs.delete(bloblessRow.blob_path);
    const fine = await seedLora(server.app, userC, { name: 'fine' });
    await server.app.db.user_lora_quota.update({
      where: { user_id: userC },
      data: { used_bytes: { increment: 123 }, lora_count: { increment: 1 } },
    });
    for (const u of [userA, userB, userC]) expect(await invariantViolations(server.app, u)).not.toEqual([]);

    const plan = await server.app.jobs.reconcileNow();
    expect(plan.invariants.deletedButReady).toEqual([{ fileId: BigInt(zombie.id), userId: userA }]);
    expect(plan.invariants.readyWithoutBlob).toEqual([{ fileId: BigInt(blobless.id), userId: userB, blobPath: bloblessRow.blob_path }]);
    expect(plan.invariants.quotaDrift).toEqual([
      { userId: userC, usedBytes: fine.sizeBytes + 123, loraCount: 2, readyBytes: fine.sizeBytes, readyCount: 1 },
    ]);

    for (const u of [userA, userB, userC]) expect(await invariantViolations(server.app, u)).toEqual([]);
    const tokenA = await server.tokens.user(userA);
    const listedA = await listLoras(server, tokenA);
    expect({ total: listedA.total, ids: listedA.loras.map((l) => l.id) }).toEqual({ total: 1, ids: [survivor.id] });
    expect(await server.app.db.user_lora_quota.findUnique({ where: { user_id: userB } })).toMatchObject({ used_bytes: 0n, lora_count: 0 });
    const repairs = await server.app.db.audit_log.findMany({ where: { action: 'lora.repair' }, orderBy: { id: 'asc' } });
    expect(repairs.map((r) => [r.lora_id, (r.details as { reason: string }).reason])).toEqual([
      [BigInt(zombie.id), 'deleted-but-ready'],
      [BigInt(blobless.id), 'blob-missing'],
    ]);
    expect((await server.app.jobs.reconcileNow()).invariants).toMatchObject({ deletedButReady: [], readyWithoutBlob: [], quotaDrift: [] });
  });
});
