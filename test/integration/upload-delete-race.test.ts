import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { holdUpload } from '../testkit/held-upload.ts';
import { blobsOf, invariantViolations } from '../testkit/invariants.ts';
import {
  deleteJobsFor,
  deleteLora as deleteLoraResult,
  isolatedDatabase,
  listLoras,
  setUserLoraQuota,
  sleep,
} from '../testkit/library-helpers.ts';
import { sdxlLora } from '../testkit/lora-files.ts';
import { type MultipartResponse, postMultipart } from '../testkit/multipart.ts';
import { makeSafetensors, smallSd15Lora } from '../testkit/safetensors.ts';
import { eventually, newUser } from '../testkit/seed.ts';
import { startTestServer, type TestServer } from '../testkit/server.ts';

/**
 * THREATS row 29 (issue 10, point 1): `deleteLora` racing the same LoRA's upload. An upload in
 * flight is not a LoRA yet: deleting its id answers LORA_NOT_FOUND and changes nothing; once
 * READY it is deleted like any other. Every outcome is typed, and whatever interleaving happens
 * the invariants hold: READY ⇒ not deleted ⇒ blob committed, quota = sum of READY rows.
 * Runs on its own database and container: the race ends with a reconciler run whose short
 * staleness window must not touch other suites' uploads.
 */

const STALE_SECONDS = 3;
let server: TestServer;
let db: Awaited<ReturnType<typeof isolatedDatabase>>;
beforeAll(async () => {
  db = await isolatedDatabase();
  server = await startTestServer({
    DATABASE_URL: db.url,
    LORA_CONTAINER: `race-${randomUUID().slice(0, 8)}`,
    UPLOAD_STALE_SECONDS: String(STALE_SECONDS),
    // 50 uploads of one user at once: the per-user cap (default 4) is not what this race is about
    UPLOAD_CONCURRENCY_PER_USER: '64',
  });
});
afterAll(async () => {
  await server?.stop();
  await server?.app.blobs.clientsForTests().loras.deleteIfExists();
  await db?.drop();
});

const user = () => newUser(server);

async function deleteLora(token: string, id: string) {
  return deleteLoraResult(server, token, id);
}

/** The typed result of an upload; fails the test on a thrown (untyped) error. */
function uploadResult(res: MultipartResponse): { __typename: string; code?: string; lora?: { id: string } } {
  expect(res.body?.errors, res.text).toBeUndefined();
  const result = res.body?.data?.uploadLora;
  expect(result?.__typename, res.text).toBeDefined();
  return result;
}

async function uploadingRowOf(userId: string): Promise<string> {
  return eventually(
    async () => {
      const row = await server.app.db.lora.findFirst({ where: { user_id: userId, status: 'UPLOADING' }, select: { file_id: true } });
      return row?.file_id.toString();
    },
    15_000,
    'the upload to reserve its row',
  );
}

async function readyIds(userId: string): Promise<string[]> {
  const rows = await server.app.db.lora.findMany({ where: { user_id: userId, status: 'READY' }, select: { file_id: true } });
  return rows.map((r) => r.file_id.toString());
}

/** Waits until every blob-deletion job of `ids` is done, so READY ⇒ blob can be judged. */
async function deleteJobsSettled(ids: Iterable<string>): Promise<void> {
  for (const id of ids) {
    await eventually(
      async () =>
        (await deleteJobsFor(server, id)).every((j) => j.state === 'completed' || j.state === 'cancelled' || j.state === 'failed'),
      20_000,
      `delete job of ${id}`,
    );
  }
}

describe('deleteLora racing uploadLora', () => {
  it('deleting an upload still in flight answers LORA_NOT_FOUND; the upload then completes READY with its blob', async () => {
    const { id, token } = await user();
    const file = sdxlLora();
    const held = holdUpload({ url: server.graphqlUrl, token, fileSize: file.length });
    await held.send(file.subarray(0, 4096));
    const loraId = await uploadingRowOf(id);

    expect(await deleteLora(token, loraId)).toMatchObject({ __typename: 'NotFoundError', code: 'LORA_NOT_FOUND' });
    const row = await server.app.db.lora.findUniqueOrThrow({ where: { file_id: BigInt(loraId) } });
    expect(row).toMatchObject({ status: 'UPLOADING', deleted_at: null });

    await held.send(file.subarray(4096));
    held.finish();
    const result = uploadResult(await held.response);
    expect(result).toMatchObject({ __typename: 'UploadLoraSuccess', lora: { id: loraId } });
    expect((await listLoras(server, token)).loras.map((l) => l.id)).toEqual([loraId]);
    expect(await invariantViolations(server.app, id)).toEqual([]);

    // Now it is a LoRA: the delete applies.
    expect(await deleteLora(token, loraId)).toMatchObject({ __typename: 'DeleteLoraSuccess' });
    await deleteJobsSettled(await readyIds(id));
    expect(await invariantViolations(server.app, id)).toEqual([]);
  });

  it('a delete and a finalize both waiting on the quota row lock end in one consistent state', async () => {
    const { id, token } = await user();
    await server.app.db.user_lora_quota.create({ data: { user_id: id } });
    const holder = new pg.Client({ connectionString: db.url });
    await holder.connect();
    try {
      await holder.query('BEGIN');
      await holder.query('SELECT 1 FROM user_lora_quota WHERE user_id = $1 FOR UPDATE', [id]);
      const holderPid = (await holder.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]?.pid;
      const blockedBy = async (pid: number) =>
        (await holder.query<{ pid: number }>('SELECT pid FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))', [pid])).rows;

      const uploading = postMultipart({ url: server.graphqlUrl, token, file: sdxlLora() });
      // finalize is waiting for the quota row (the blob is committed by now)
      const [finalizer] = await eventually(
        async () => {
          const rows = await blockedBy(holderPid ?? 0);
          return rows.length ? rows : undefined;
        },
        15_000,
        'finalize to wait on the quota row',
      );
      const loraId = await uploadingRowOf(id);
      let deleteSettled = false;
      const deleting = deleteLora(token, loraId).finally(() => {
        deleteSettled = true;
      });
      // the delete either answers at once or waits behind the finalize
      await eventually(async () => deleteSettled || (await blockedBy(finalizer?.pid ?? 0)).length > 0, 15_000, 'the delete to land');
      await holder.query('COMMIT');

      const [uploaded, deleted] = await Promise.all([uploading, deleting]);
      expect(uploadResult(uploaded)).toMatchObject({ __typename: 'UploadLoraSuccess', lora: { id: loraId } });
      expect(['DeleteLoraSuccess', 'NotFoundError']).toContain(deleted.__typename);
      const row = await server.app.db.lora.findUniqueOrThrow({ where: { file_id: BigInt(loraId) } });
      // delete success ⇔ the LoRA is gone; not found ⇔ it stays READY
      expect(row.status).toBe(deleted.__typename === 'DeleteLoraSuccess' ? 'DELETED' : 'READY');
      await deleteJobsSettled(await readyIds(id));
      expect(await invariantViolations(server.app, id)).toEqual([]);
    } finally {
      await holder.end();
    }
  });

  it('50 concurrent uploads while their ids are deleted as they appear, 3 rounds: every outcome typed, the invariants hold', async () => {
    const { id, token } = await user();
    await setUserLoraQuota(server, { userId: id, maxLoraCount: 1000 });
    const seen = new Map<string, number>(); // id → order of appearance
    const deletes: Promise<{ __typename: string }>[] = [];
    const deleting = new Set<string>(); // one delete per id at a time, repeated while it is seen
    // a failing upload that has staged a block (> 8 MiB) before it fails
    const big = makeSafetensors([{ name: 'w', shape: [5 * 1024 * 1024], dtype: 'F16' }]);
    const bigInvalid = big.subarray(0, 9 * 1024 * 1024); // offsets past the end of the file

    // the test's own connection: the server's pool is the server's
    const watcher = new pg.Client({ connectionString: db.url });
    await watcher.connect();
    for (let round = 0; round < 3; round++) {
      let running = true;
      const hunter = (async () => {
        while (running) {
          const { rows } = await watcher.query<{ id: string }>(
            `SELECT file_id::text AS id FROM lora WHERE user_id = $1 AND status IN ('UPLOADING', 'READY')`,
            [id],
          );
          for (const r of rows) {
            const key = r.id;
            if (!seen.has(key)) seen.set(key, seen.size);
            // every second id: deleted again and again while it uploads, and once READY
            if ((seen.get(key) ?? 0) % 2 !== 0 || deleting.has(key)) continue;
            deleting.add(key);
            deletes.push(deleteLora(token, key).finally(() => deleting.delete(key)));
          }
          await sleep(10);
        }
      })();
      const uploads = [
        ...Array.from({ length: 50 }, (_, i) =>
          postMultipart({ url: server.graphqlUrl, token, file: smallSd15Lora({ ss_output_name: `r${round}-${i}` }) }),
        ),
        // one failing upload with a staged block per round: invalid, or cut mid-stream
        round % 2 === 0
          ? postMultipart({ url: server.graphqlUrl, token, file: bigInvalid })
          : postMultipart({ url: server.graphqlUrl, token, file: big, abortAfterBytes: 8.5 * 1024 * 1024 }),
      ];
      const results = await Promise.all(uploads);
      running = false;
      await hunter;
      const typed = results.slice(0, 50).map((r) => uploadResult(r).__typename);
      // an in-flight upload is not deletable, so each succeeds (UPLOAD_INTERRUPTED only if the
      // scheduled reconciler, with this file's 3 s window, happened to run mid-round)
      for (const t of typed) expect(['UploadLoraSuccess', 'UploadInterruptedError']).toContain(t);
      const failing = results[50];
      if (round % 2 === 0) expect(failing && uploadResult(failing).__typename).toBe('InvalidFileError');
      else expect(failing?.aborted).toBe(true);
    }
    await watcher.end();
    for (const d of await Promise.all(deletes)) expect(['DeleteLoraSuccess', 'NotFoundError']).toContain(d.__typename);
    await deleteJobsSettled(await readyIds(id)); // only a job naming a READY row could break READY ⇒ blob
    expect(await invariantViolations(server.app, id)).toEqual([]);
    const ready = await server.app.db.lora.count({ where: { user_id: id, status: 'READY' } });
    expect(ready).toBeGreaterThanOrEqual(60); // the odd ones were never deleted

    // No staged blocks anywhere once the window has passed and the reconciler ran.
    await sleep(STALE_SECONDS * 1000 + 500);
    await server.app.jobs.reconcileNow();
    const blobs = await blobsOf(server.app, id);
    expect(blobs.filter((b) => !b.committed || b.uncommittedBlocks > 0)).toEqual([]);
    // every READY LoRA's stored content, and nothing else (deleted ones' bases went with their last reference)
    const readyPaths = await server.app.db.lora.findMany({ where: { user_id: id, status: 'READY' }, select: { blob_path: true } });
    await eventually(
      async () => (await blobsOf(server.app, id)).length === new Set(readyPaths.map((r) => r.blob_path)).size,
      20_000,
      'bases of deleted LoRAs removed',
    );
    expect(await invariantViolations(server.app, id)).toEqual([]);
  }, 120_000);
});
