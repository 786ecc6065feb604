import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CancelUserLoraAccountDeletionDocument,
  CreateJobGrantDocument,
  CreateLoraDownloadDocument,
  DeleteLoraDocument,
  DeleteUserLoraAccountDocument,
  RecordLoraUsageDocument,
  SetUserLoraQuotaDocument,
  UpdateLoraDocument,
} from '../../sdk/index.ts';
import { userClient } from '../testkit/agent.ts';
import { mintGrant } from '../testkit/grants.ts';
import { dataOf, member } from '../testkit/graphql-assertions.ts';
import { smallSd15Lora } from '../testkit/safetensors.ts';
import { newUserId, seedLora } from '../testkit/seed.ts';
import { startTestServer, type TestServer } from '../testkit/server.ts';

/**
 * Every mutation that changes data or grants access writes exactly one audit entry, in the
 * transaction of its change: rows written by one PostgreSQL transaction carry the same `xmin`
 * (its transaction id), so the entry's `xmin` is compared with the changed row's.
 */

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer();
});
afterAll(async () => {
  await server?.stop();
});

interface EntryRow {
  id: bigint;
  action: string;
  user_id: string | null;
  lora_id: bigint | null;
  actor_role: string;
  actor_id: string | null;
  request_id: string | null;
  xmin: string;
}

async function lastId(): Promise<bigint> {
  const [row] = await server.app.db.$queryRaw<{ id: bigint | null }[]>`SELECT max(id) AS id FROM audit_log`;
  return row?.id ?? 0n;
}

/** Entries written after `since` that concern `userId` (tests run concurrently with others' writes). */
async function entriesAfter(since: bigint, userId: string): Promise<EntryRow[]> {
  return server.app.db.$queryRaw<EntryRow[]>`
    SELECT id, action, user_id::text AS user_id, lora_id, actor_role, actor_id, request_id, xmin::text AS xmin
    FROM audit_log WHERE id > ${since} AND user_id = ${userId}::uuid ORDER BY id`;
}

async function loraXmin(fileId: string): Promise<string> {
  const [row] = await server.app.db.$queryRaw<{ xmin: string }[]>`SELECT xmin::text AS xmin FROM lora WHERE file_id = ${BigInt(fileId)}`;
  return row?.xmin ?? 'missing';
}

async function quotaXmin(userId: string): Promise<string> {
  const [row] = await server.app.db.$queryRaw<{ xmin: string }[]>`
    SELECT xmin::text AS xmin FROM user_lora_quota WHERE user_id = ${userId}::uuid`;
  return row?.xmin ?? 'missing';
}

/** Runs `change` and returns the one entry it wrote for `userId` (fails on none or several). */
async function oneEntry(userId: string, change: () => Promise<unknown>): Promise<EntryRow> {
  const since = await lastId();
  await change();
  const entries = await entriesAfter(since, userId);
  expect(entries.map((e) => e.action)).toHaveLength(1);
  return entries[0] as EntryRow;
}

describe('one audit entry per change, in its transaction', () => {
  it('uploadLora, updateLora, deleteLora: the entry shares the LoRA row’s transaction, with the request id', async () => {
    const userId = newUserId();
    const token = await server.tokens.user(userId);
    const sdk = await userClient(server, userId);
    let loraId = '';
    const upload = await oneEntry(userId, async () => {
      loraId = (await sdk.uploadLora({ file: new Blob([new Uint8Array(smallSd15Lora())]) })).lora.id;
    });
    expect(upload).toMatchObject({ action: 'lora.upload', actor_role: 'user', actor_id: userId, lora_id: BigInt(loraId) });
    expect(upload.xmin).toBe(await loraXmin(loraId));
    expect(upload.request_id).toMatch(/^[0-9a-f-]{36}$/);

    const update = await oneEntry(userId, async () => {
      const res = await server.request(
        UpdateLoraDocument,
        { id: loraId, name: 'Renamed' },
        { token, headers: { 'x-request-id': 'req-update-1' } },
      );
      member(dataOf(res).updateLora, 'Lora');
    });
    expect(update).toMatchObject({ action: 'lora.update', request_id: 'req-update-1' });
    expect(update.xmin).toBe(await loraXmin(loraId));

    const del = await oneEntry(userId, async () => {
      member(dataOf(await server.request(DeleteLoraDocument, { id: loraId }, { token })).deleteLora, 'DeleteLoraSuccess');
    });
    expect(del.action).toBe('lora.delete');
    expect(del.xmin).toBe(await loraXmin(loraId));
    expect(del.xmin).toBe(await quotaXmin(userId));

    // a repeated delete changes nothing and writes nothing
    const since = await lastId();
    member(dataOf(await server.request(DeleteLoraDocument, { id: loraId }, { token })).deleteLora, 'DeleteLoraSuccess');
    expect(await entriesAfter(since, userId)).toEqual([]);
    await sdk.close();
  });

  it('setUserLoraQuota and createJobGrant: one entry each', async () => {
    const userId = newUserId();
    const quota = await oneEntry(userId, async () => {
      dataOf(await server.request(SetUserLoraQuotaDocument, { userId, maxLoraCount: 7 }, { token: await server.tokens.admin() }));
    });
    expect(quota).toMatchObject({ action: 'quota.set', actor_role: 'admin' });
    expect(quota.xmin).toBe(await quotaXmin(userId));

    const grant = await oneEntry(userId, async () => {
      const variables = { userId, jobId: 'job-audit-1', ttlSeconds: 60 };
      dataOf(await server.request(CreateJobGrantDocument, variables, { token: await server.tokens.service() }));
    });
    expect(grant).toMatchObject({ action: 'grant.create', actor_role: 'service' });
  });

  it('recordLoraUsage: one entry in the transaction that counts the uses', async () => {
    const userId = newUserId();
    const lora = await seedLora(server.app, userId);
    const grant = await mintGrant(server, userId);
    const machine = await server.tokens.machine('audit-machine');
    const entry = await oneEntry(userId, async () => {
      const res = await server.request(RecordLoraUsageDocument, { grant, loraIds: [lora.id], workflowId: 'wf-1' }, { token: machine });
      expect(member(dataOf(res).recordLoraUsage, 'RecordLoraUsageSuccess').recorded).toBe(1);
    });
    expect(entry).toMatchObject({ action: 'lora.usage-recorded', actor_role: 'machine', actor_id: 'audit-machine' });
    expect(entry.xmin).toBe(await loraXmin(lora.id));
  });

  it('createLoraDownload, deleteUserLoraAccount and its cancel: one entry each, in the transaction of the change', async () => {
    const userId = newUserId();
    const lora = await seedLora(server.app, userId);
    const download = await oneEntry(userId, async () => {
      const res = await server.request(CreateLoraDownloadDocument, { id: lora.id }, { token: await server.tokens.user(userId) });
      member(dataOf(res).createLoraDownload, 'LoraDownloadLink');
    });
    expect(download).toMatchObject({ action: 'lora.owner-download', actor_id: userId, lora_id: BigInt(lora.id) });

    const deletion = await oneEntry(userId, async () => {
      dataOf(await server.request(DeleteUserLoraAccountDocument, { userId }, { token: await server.tokens.service() }));
    });
    expect(deletion).toMatchObject({ action: 'account.delete', actor_role: 'service' });
    expect(deletion.xmin).toBe(await loraXmin(lora.id));
    expect(deletion.xmin).toBe(await quotaXmin(userId));

    const cancel = await oneEntry(userId, async () => {
      const res = await server.request(CancelUserLoraAccountDeletionDocument, { userId }, { token: await server.tokens.admin() });
      member(dataOf(res).cancelUserLoraAccountDeletion, 'LoraAccountDeletion');
    });
    expect(cancel).toMatchObject({ action: 'account.delete-cancel', actor_role: 'admin' });
    expect(cancel.xmin).toBe(await loraXmin(lora.id));
    expect(cancel.xmin).toBe(await quotaXmin(userId));
  });
});
