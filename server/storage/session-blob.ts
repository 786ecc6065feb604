import { type BlockBlobClient, RestError } from '@azure/storage-blob';
import { BlobChangedError, StagedBlocksLostError } from './blob-store.ts';

/**
 * The blob of a resumable upload session as the server handles it while the client may still
 * stage blocks into it (issue 17, validation ahead of completion: server/uploads/validation-ahead.ts).
 * Every write is conditional on the ETag of the server's own previous commit, so a commit the
 * client makes through its write SAS, or another replica's, is seen (BlobChangedError) and never
 * overwritten unnoticed.
 */

export interface BlockListView {
  committed: { id: string; size: number }[];
  uncommitted: { id: string; size: number }[];
}

/** `If-Match` an ETag, or `If-None-Match: *` (no commit yet). */
export type CommitCondition = { ifMatch: string } | { ifNoneMatch: '*' } | 'unconditional';

export interface SessionBlob {
  /** Both block lists (empty when the blob does not exist). */
  blockList(): Promise<BlockListView>;
  /**
   * Commits `keep` as their *committed* versions (what the server already read; a block the client
   * staged again under one of those ids is ignored), then `latest` (the staged version if there is
   * one, else the committed one), in that order. → the new ETag. BlobChangedError when the
   * condition fails; StagedBlocksLostError when a listed block is not there. Uncommitted blocks not
   * listed are discarded by storage: callers list every block that is staged.
   */
  commit(keep: string[], latest: string[], condition: CommitCondition): Promise<string>;
  /**
   * The committed block list as storage holds it now (or in `snapshot`), with the blob's ETag at
   * that moment: what a commit actually stored (a block staged again between a look and a commit
   * is committed at whatever it then is).
   */
  committedBlocks(snapshot?: string): Promise<{ etag: string; blocks: { id: string; size: number }[] }>;
  /** Bytes [offset, offset + count) while the blob's ETag is `etag` (BlobChangedError otherwise). */
  readRange(offset: number, count: number, etag: string, signal?: AbortSignal): Promise<NodeJS.ReadableStream>;
}

/** The generated REST operation behind BlockBlobClient.commitBlockList, which only sends <Latest>. */
interface BlockListOperation {
  commitBlockList(
    blocks: { committed?: string[]; latest?: string[] },
    options: { blobHttpHeaders?: { blobContentType?: string }; modifiedAccessConditions?: { ifMatch?: string; ifNoneMatch?: string } },
  ): Promise<{ etag?: string }>;
}

export function sessionBlob(blob: BlockBlobClient, contentType: string): SessionBlob {
  const path = blob.name;
  const operation = (blob as unknown as { blockBlobContext?: BlockListOperation }).blockBlobContext;
  return {
    async blockList() {
      try {
        const list = await blob.getBlockList('all');
        const view = (blocks: { name: string; size: number }[] | undefined) => (blocks ?? []).map((b) => ({ id: b.name, size: b.size }));
        return { committed: view(list.committedBlocks), uncommitted: view(list.uncommittedBlocks) };
      } catch (error) {
        if (error instanceof RestError && error.statusCode === 404) return { committed: [], uncommitted: [] };
        throw error;
      }
    },
    async committedBlocks(snapshot) {
      const list = await (snapshot ? blob.withSnapshot(snapshot) : blob).getBlockList('committed');
      return { etag: list.etag ?? '', blocks: (list.committedBlocks ?? []).map((b) => ({ id: b.name, size: b.size })) };
    },
    async commit(keep, latest, condition) {
      // @azure/storage-blob 12 sends every id as <Latest>; <Committed> needs its generated operation
      if (keep.length > 0 && !operation) throw new Error('this @azure/storage-blob cannot commit committed blocks');
      const conditions = condition === 'unconditional' ? {} : condition;
      try {
        const done = operation
          ? await operation.commitBlockList(
              { ...(keep.length ? { committed: keep } : {}), latest },
              { blobHttpHeaders: { blobContentType: contentType }, modifiedAccessConditions: conditions },
            )
          : await blob.commitBlockList(latest, { conditions, blobHTTPHeaders: { blobContentType: contentType } });
        return done.etag ?? '';
      } catch (error) {
        if (!(error instanceof RestError)) throw error;
        if (error.statusCode === 412 || error.code === 'BlobAlreadyExists') throw new BlobChangedError(path);
        if (error.code === 'InvalidBlockList') throw new StagedBlocksLostError(path);
        throw error;
      }
    },
    async readRange(offset, count, etag, signal) {
      try {
        const res = await blob.download(offset, count, {
          conditions: { ifMatch: etag },
          maxRetryRequests: 5,
          ...(signal ? { abortSignal: signal } : {}),
        });
        if (!res.readableStreamBody) throw new Error(`no body for ${path}`);
        return res.readableStreamBody;
      } catch (error) {
        if (error instanceof RestError && error.statusCode === 412) throw new BlobChangedError(path);
        throw error;
      }
    },
  };
}
