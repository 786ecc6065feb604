import { BeginLoraUploadDocument, type UploadSessionFieldsFragment } from '../../sdk/index.ts';
import type { App } from '../../server/app.ts';
import { dataOf } from './graphql-assertions.ts';
import { eventually } from './seed.ts';
import type { TestServer } from './server.ts';

/** Resumable uploads driven by hand (tests of the session operations themselves). */

export async function beginSession(
  server: TestServer,
  token: string,
  variables: { fileName?: string; sizeBytes: number; name?: string; sha256?: string },
): Promise<UploadSessionFieldsFragment> {
  const res = await server.request(BeginLoraUploadDocument, { fileName: 'lora.safetensors', ...variables }, { token });
  const begun = dataOf(res).beginLoraUpload;
  if (begun.__typename !== 'LoraUploadSession') throw new Error(`beginLoraUpload: ${JSON.stringify(begun)}`);
  return begun;
}

/** Put Block of `body` under `id` through a session's SAS URL: the HTTP status. */
export async function putBlock(url: string, id: string, body: Buffer): Promise<number> {
  const res = await fetch(`${url}&comp=block&blockid=${encodeURIComponent(id)}`, { method: 'PUT', body: new Uint8Array(body) });
  await res.arrayBuffer();
  return res.status;
}

/** Stages `file` as the session's documented blocks (all of them, or those `which` picks). */
export async function stageFile(
  session: UploadSessionFieldsFragment,
  file: Buffer,
  which: (index: number) => boolean = () => true,
): Promise<void> {
  const url = session.uploadUrl as string;
  for (const [i, id] of session.blockIds.entries()) {
    if (!which(i)) continue;
    const status = await putBlock(url, id, file.subarray(i * session.blockBytes, (i + 1) * session.blockBytes));
    if (status !== 201) throw new Error(`Put Block ${i}: ${status}`);
  }
}

/** The blocks storage holds for a session's blob: staged ones, and those the server committed while validating ahead. */
export async function heldBlocks(app: App, blobPath: string): Promise<{ id: string; size: number }[]> {
  const list = await app.blobs.sessionBlob(blobPath).blockList();
  return [...list.committed, ...list.uncommitted];
}

/**
 * Stages the blocks `which` picks until the server has committed them all (validation ahead). A
 * block staged at the instant of one of the server's commits is dropped by storage (the SDK stages
 * it again when completion names it); here it is staged again as soon as it is seen missing.
 */
export async function stageUntilCommitted(
  app: App,
  session: UploadSessionFieldsFragment,
  file: Buffer,
  which: (i: number) => boolean,
  timeoutMs = 15_000,
): Promise<void> {
  const wanted = session.blockIds.filter((_, i) => which(i));
  await eventually(
    async () => {
      const list = await app.blobs.sessionBlob(`content/${session.id}`).blockList();
      const held = new Set([...list.committed, ...list.uncommitted].map((b) => b.id));
      await stageFile(session, file, (i) => which(i) && !held.has(session.blockIds[i] as string));
      const committed = new Set(list.committed.map((b) => b.id));
      return wanted.every((id) => committed.has(id));
    },
    timeoutMs,
    'the server committing the staged blocks',
  );
}
