import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { holdUpload } from '../testkit/held-upload.ts';
import { blobsOf, type StoredBlob } from '../testkit/invariants.ts';
import { setUserLoraQuota } from '../testkit/library-helpers.ts';
import { postMultipart } from '../testkit/multipart.ts';
import { makeSafetensors } from '../testkit/safetensors.ts';
import { eventually, newUser } from '../testkit/seed.ts';
import { startTestServer, type TestServer } from '../testkit/server.ts';

/**
 * THREATS row 31 (issue 10, point 4): a failed or cut upload leaves no staged (uncommitted)
 * blocks behind. Every file here is over one 8 MiB block, so blocks are staged before the
 * failure; Azurite's block list (listing with uncommitted blobs) must show nothing afterwards.
 */

const MiB = 1024 * 1024;
const MAX_UPLOAD = 9.5 * MiB;
let server: TestServer;
beforeAll(async () => {
  server = await startTestServer({ MAX_UPLOAD_BYTES: String(MAX_UPLOAD) });
});
afterAll(() => server?.stop());

const user = () => newUser(server);

/** A valid safetensors file of about `mib` MiB. */
function bigLora(mib: number): Buffer {
  return makeSafetensors([{ name: 'w', shape: [(mib * MiB) / 2], dtype: 'F16' }]);
}

async function expectNoBlocksLeft(userId: string): Promise<void> {
  await eventually(async () => (await server.app.db.lora.count({ where: { user_id: userId } })) === 0, 10_000, 'rows removed');
  // the cleanup runs as the request fails; give it a moment, then nothing may remain
  let left: StoredBlob[] = [];
  await eventually(async () => {
    left = await blobsOf(server.app, userId);
    return left.length === 0;
  }, 10_000).catch(() => {});
  expect(left).toEqual([]);
}

describe('failed uploads leave no staged blocks', () => {
  it('an invalid file (tensor data past the end of the file, found after 8 MiB were staged)', async () => {
    const { id, token } = await user();
    const truncated = bigLora(9).subarray(0, 9 * MiB);
    const res = await postMultipart({ url: server.graphqlUrl, token, file: truncated });
    expect(res.body?.data?.uploadLora, res.text).toMatchObject({ __typename: 'InvalidFileError', code: 'INVALID_FILE_FORMAT' });
    await expectNoBlocksLeft(id);
  });

  it('a file over MAX_UPLOAD_BYTES (counted after a block was staged)', async () => {
    const { id, token } = await user();
    const res = await postMultipart({ url: server.graphqlUrl, token, file: bigLora(10) });
    expect(res.body?.data?.uploadLora, res.text).toMatchObject({ __typename: 'FileTooLargeError' });
    await expectNoBlocksLeft(id);
  });

  it('over the quota at the final check (committed, then refused)', async () => {
    const { id, token } = await user();
    await setUserLoraQuota(server, { userId: id, maxStorageBytes: MiB });
    const res = await postMultipart({ url: server.graphqlUrl, token, file: bigLora(9) });
    expect(res.body?.data?.uploadLora, res.text).toMatchObject({ __typename: 'QuotaExceededError', code: 'QUOTA_EXCEEDED' });
    await expectNoBlocksLeft(id);
  });

  it('a client that goes away mid-stream, after blocks were staged', async () => {
    const { id, token } = await user();
    const file = bigLora(9);
    const held = holdUpload({ url: server.graphqlUrl, token, fileSize: file.length });
    await held.send(file.subarray(0, 8.5 * MiB));
    // the first block is staged, uncommitted: this is what must not outlive the upload
    const staged = await eventually(
      async () => {
        const blobs = await blobsOf(server.app, id);
        return blobs.find((b) => !b.committed && b.uncommittedBlocks > 0);
      },
      15_000,
      'a staged block',
    );
    expect(staged.name).toMatch(/^content\/[0-9a-f-]{36}\.safetensors$/);
    held.cut();
    expect((await held.response).aborted).toBe(true);
    await expectNoBlocksLeft(id);
  });
});
