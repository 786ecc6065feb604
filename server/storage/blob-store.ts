import {
  BlobSASPermissions,
  BlobServiceClient,
  type BlockBlobClient,
  type ContainerClient,
  RestError,
  StorageRetryPolicyType,
} from '@azure/storage-blob';
import { type SessionBlob, sessionBlob } from './session-blob.ts';

/**
 * Azure Blob Storage (Azurite locally) behind the few verbs the product needs. User LoRAs live
 * in one container at `users/{user_id}/loras/{file_id}.{ext}`; the shared library is read-only
 * at `{sharedContainer}/{sharedPrefix}{name}`. Transient failures (503, timeouts) are retried by
 * the SDK with exponential backoff, bounded by `retry`.
 */

export interface BlobStoreOptions {
  connectionString: string;
  loraContainer: string;
  sharedContainer: string;
  sharedPrefix: string;
  /** @default 4 tries, 0.5 s first delay, 8 s max delay, 60 s per try */
  retry?: { maxTries?: number; retryDelayMs?: number; maxRetryDelayMs?: number; tryTimeoutMs?: number };
}

export interface SasLink {
  url: string;
  expiresAt: Date;
  etag: string;
  sizeBytes: number;
}

/** What an owner download may tell of a stored object: its own size, ETag and time. */
export interface StoredObject {
  sizeBytes: number;
  etag: string;
  lastModified: Date;
}

export type DeleteOutcome = 'deleted' | 'not-found';

export class BlobNotFoundError extends Error {
  override name = 'BlobNotFoundError';
}

/** 'committed-blob': a committed blob is there, left untouched. */
export type DiscardOutcome = 'discarded' | 'committed-blob';

/** The staged blocks of an upload are gone (discarded as stale) or another blob took the path. */
export class StagedBlocksLostError extends Error {
  override name = 'StagedBlocksLostError';
}

/** One listed blob of the LoRA container. */
export interface ListedBlob {
  name: string;
  lastModified: Date | undefined;
  /** 0 for a blob holding only staged blocks. */
  sizeBytes: number;
}

/** A block blob being written block by block (see BlockStager); nothing is visible before `commit`. */
export interface StagedBlob {
  stageBlock(id: string, body: Buffer): Promise<void>;
  /** Commits exactly `ids` with `If-None-Match: *` (→ the new ETag); StagedBlocksLostError when they are gone or the path is taken. */
  commit(ids: string[], contentType: string): Promise<string>;
  /** Discards the staged blocks; a committed blob is left alone. */
  discard(): Promise<DiscardOutcome>;
}

/**
 * Removes the uncommitted (staged) blocks of a blob that was never committed. Azure keeps them
 * for 7 days, and Delete Blob on a blob with only uncommitted blocks may answer 404, so: commit
 * an empty block list with `If-None-Match: *` (which discards every uncommitted block and never
 * replaces a committed blob), then delete that empty blob by its ETag. Put Blob with empty
 * content is no substitute: Azurite 3.37 refuses it with 409 on a blob with staged blocks.
 */
async function discardStagedBlocks(blob: BlockBlobClient): Promise<DiscardOutcome> {
  let etag: string | undefined;
  try {
    etag = (await blob.commitBlockList([], { conditions: { ifNoneMatch: '*' } })).etag;
  } catch (error) {
    if (error instanceof RestError && (error.statusCode === 409 || error.statusCode === 412)) return 'committed-blob';
    throw error;
  }
  try {
    await blob.delete({ conditions: { ifMatch: etag } });
  } catch (error) {
    if (!(error instanceof RestError && (error.statusCode === 404 || error.statusCode === 412))) throw error;
  }
  return 'discarded';
}

export function loraBlobPath(userId: string, fileId: bigint | string, ext: string): string {
  return `users/${userId}/loras/${fileId}.${ext}`;
}

/** Where content is stored from issue 17 on: a neutral name (no user, no hash), shared by every LoRA of that content. */
export const CONTENT_PREFIX = 'content/';
export function contentBlobPath(id: string, ext?: string): string {
  return `${CONTENT_PREFIX}${id}${ext ? `.${ext}` : ''}`;
}

/** The base blob changed since the ETag we hold (412). */
export class BlobChangedError extends Error {
  override name = 'BlobChangedError';
}

/**
 * The Azure clients stay inside: services, jobs and the upload stager call the named operations
 * below, so every storage call the product makes is listed in this file.
 */
export class BlobStore {
  private readonly service: BlobServiceClient;
  private readonly loras: ContainerClient;
  private readonly shared: ContainerClient;

  constructor(private readonly options: BlobStoreOptions) {
    const retry = options.retry ?? {};
    this.service = BlobServiceClient.fromConnectionString(options.connectionString, {
      retryOptions: {
        retryPolicyType: StorageRetryPolicyType.EXPONENTIAL,
        maxTries: retry.maxTries ?? 4,
        retryDelayInMs: retry.retryDelayMs ?? 500,
        maxRetryDelayInMs: retry.maxRetryDelayMs ?? 8000,
        tryTimeoutInMs: retry.tryTimeoutMs ?? 60_000,
      },
    });
    this.loras = this.service.getContainerClient(options.loraContainer);
    this.shared = this.service.getContainerClient(options.sharedContainer);
  }

  /** The LoRA container's name (stored content is per container). */
  get container(): string {
    return this.options.loraContainer;
  }

  /** Creates the containers when missing (dev and tests; production may pre-create them). */
  async ensureContainers(): Promise<void> {
    await this.loras.createIfNotExists();
    await this.shared.createIfNotExists();
  }

  /** Readiness probe: the account answers and the LoRA container exists. */
  async ping(): Promise<void> {
    await this.loras.getProperties();
  }

  async put(path: string, body: Buffer, contentType = 'application/octet-stream'): Promise<void> {
    await this.loras.getBlockBlobClient(path).uploadData(body, {
      blobHTTPHeaders: { blobContentType: contentType },
      conditions: { ifNoneMatch: '*' },
    });
  }

  async putShared(name: string, body: Buffer): Promise<void> {
    await this.shared.getBlockBlobClient(this.sharedPath(name)).uploadData(body);
  }

  async exists(path: string): Promise<boolean> {
    return this.loras.getBlobClient(path).exists();
  }

  /** The blob's URL without a signature (what `flat_file.url` records; not readable without a SAS). */
  url(path: string): string {
    return this.loras.getBlobClient(path).url;
  }

  /** The LoRA container's blobs under `prefix`; `includeUncommitted` adds blobs of staged blocks only. */
  async *list(prefix: string, options: { includeUncommitted?: boolean } = {}): AsyncIterable<ListedBlob> {
    for await (const blob of this.loras.listBlobsFlat({ prefix, includeUncommitedBlobs: options.includeUncommitted ?? false })) {
      yield { name: blob.name, lastModified: blob.properties.lastModified, sizeBytes: blob.properties.contentLength ?? 0 };
    }
  }

  /** The whole blob (tests and checks of small files; downloads go through SAS URLs). */
  async read(path: string): Promise<Buffer> {
    return this.loras.getBlobClient(path).downloadToBuffer();
  }

  /** A blob to write block by block (the upload path's BlockStager). */
  stagedBlob(path: string): StagedBlob {
    const blob = this.loras.getBlockBlobClient(path);
    return {
      stageBlock: async (id, body) => {
        await blob.stageBlock(id, body, body.length);
      },
      commit: async (ids, contentType) => {
        try {
          const done = await blob.commitBlockList(ids, {
            conditions: { ifNoneMatch: '*' },
            blobHTTPHeaders: { blobContentType: contentType },
          });
          return done.etag ?? '';
        } catch (error) {
          const code = error instanceof RestError ? error.code : undefined;
          if (code === 'InvalidBlockList' || code === 'BlobAlreadyExists') throw new StagedBlocksLostError(path);
          throw error;
        }
      },
      discard: () => discardStagedBlocks(blob),
    };
  }

  /** A resumable upload session's blob, written only on the condition of the server's last ETag (session-blob.ts). */
  sessionBlob(path: string): SessionBlob {
    return sessionBlob(this.loras.getBlockBlobClient(path), 'application/octet-stream');
  }

  /** Discards a blob's staged blocks (see discardStagedBlocks); a committed blob is left alone. */
  async discardStaged(path: string): Promise<DiscardOutcome> {
    return discardStagedBlocks(this.loras.getBlockBlobClient(path));
  }

  /**
   * The block list of one blob: committed blocks (0 for a blob written by one Put Blob) and the
   * uncommitted (staged) ones with their bytes; undefined when it is gone or not a block blob.
   */
  async blocks(path: string): Promise<{ committedBlocks: number; stagedBlocks: number; stagedBytes: number } | undefined> {
    try {
      const list = await this.loras.getBlockBlobClient(path).getBlockList('all');
      const staged = list.uncommittedBlocks ?? [];
      return {
        committedBlocks: list.committedBlocks?.length ?? 0,
        stagedBlocks: staged.length,
        stagedBytes: staged.reduce((sum, b) => sum + b.size, 0),
      };
    } catch {
      return undefined;
    }
  }

  /**
   * A SAS for one blob that may create and write it (Put Block, Put Block List) and nothing else:
   * no read, no list, no delete, no other blob. Resumable uploads hand it to the client.
   */
  async uploadSas(path: string, ttlSeconds: number): Promise<{ url: string; expiresAt: Date }> {
    const expiresOn = new Date(Date.now() + ttlSeconds * 1000);
    const url = await this.loras.getBlockBlobClient(path).generateSasUrl({
      permissions: BlobSASPermissions.parse('cw'),
      startsOn: new Date(Date.now() - 60_000),
      expiresOn,
    });
    return { url, expiresAt: expiresOn };
  }

  /** Snapshots the blob (only while its ETag is `ifMatch`, when given): the snapshot's id and the base's ETag. BlobChangedError on 412. */
  async snapshot(path: string, ifMatch?: string): Promise<{ snapshot: string; etag: string }> {
    try {
      const made = await this.loras.getBlockBlobClient(path).createSnapshot(ifMatch ? { conditions: { ifMatch } } : {});
      if (!made.snapshot) throw new Error(`storage returned no snapshot id for ${path}`);
      return { snapshot: made.snapshot, etag: made.etag ?? '' };
    } catch (error) {
      if (error instanceof RestError && error.statusCode === 412) throw new BlobChangedError(path);
      throw error;
    }
  }

  /**
   * Touches a blob: Set Blob Metadata with the metadata it has (none: the product sets none), only
   * while its ETag is `ifMatch` when given. The bytes stay; Last-Modified becomes now and the ETag a
   * new one, which is returned. BlobChangedError on 412. A snapshot copies its base's system
   * properties (Last-Modified, ETag, x-ms-creation-time), so a snapshot taken right after a touch
   * shows the touch's time and ETag (content-store.ts: each LoRA's own time on shared content).
   */
  async touch(path: string, ifMatch?: string): Promise<string> {
    try {
      const done = await this.loras.getBlockBlobClient(path).setMetadata({}, ifMatch ? { conditions: { ifMatch } } : {});
      if (!done.etag) throw new Error(`storage returned no ETag touching ${path}`);
      return done.etag;
    } catch (error) {
      if (error instanceof RestError && error.statusCode === 412) throw new BlobChangedError(path);
      throw error;
    }
  }

  /** Streams one snapshot (immutable) from `offset` on: what a resumable upload's validation reads. */
  async readSnapshot(path: string, snapshot: string, signal?: AbortSignal, offset = 0): Promise<NodeJS.ReadableStream> {
    const res = await this.loras
      .getBlobClient(path)
      .withSnapshot(snapshot)
      .download(offset, undefined, { maxRetryRequests: 5, ...(signal ? { abortSignal: signal } : {}) });
    if (!res.readableStreamBody) throw new Error(`no body for ${path}`);
    return res.readableStreamBody;
  }

  /**
   * A LoRA's stored object (its snapshot; the blob itself for LoRAs older than issue 17): size,
   * ETag and Last-Modified (the snapshot's own, see `touch`); null when it is gone. Owner downloads
   * through the API (server/http/owner-download-route.ts) answer with these and nothing else of storage's.
   */
  async objectProperties(path: string, snapshot: string | null): Promise<StoredObject | null> {
    try {
      const props = await this.objectClient(path, snapshot).getProperties();
      return { sizeBytes: props.contentLength ?? 0, etag: props.etag ?? '', lastModified: props.lastModified ?? new Date(0) };
    } catch (error) {
      if (error instanceof RestError && error.statusCode === 404) return null;
      throw error;
    }
  }

  /**
   * Streams `count` bytes from `offset` of that object while its ETag is `etag`: a stream with
   * backpressure (nothing is buffered beyond the stream's high-water mark), which `signal` (or
   * destroying it) ends, closing the storage connection. BlobNotFoundError when it is gone or changed.
   */
  async readObject(
    path: string,
    snapshot: string | null,
    range: { offset: number; count: number; etag: string },
    signal: AbortSignal,
  ): Promise<NodeJS.ReadableStream> {
    try {
      const res = await this.objectClient(path, snapshot).download(range.offset, range.count, {
        abortSignal: signal,
        conditions: { ifMatch: range.etag },
        maxRetryRequests: 5,
      });
      if (!res.readableStreamBody) throw new Error(`no body for ${path}`);
      return res.readableStreamBody;
    } catch (error) {
      if (error instanceof RestError && (error.statusCode === 404 || error.statusCode === 412)) throw new BlobNotFoundError(path);
      throw error;
    }
  }

  private objectClient(path: string, snapshot: string | null) {
    const blob = this.loras.getBlobClient(path);
    return snapshot ? blob.withSnapshot(snapshot) : blob;
  }

  /** Deletes one snapshot (a LoRA's own view of a shared base); 404 = 'not-found'. */
  async deleteSnapshot(path: string, snapshot: string, signal?: AbortSignal): Promise<DeleteOutcome> {
    try {
      await this.loras
        .getBlobClient(path)
        .withSnapshot(snapshot)
        .delete(signal ? { abortSignal: signal } : {});
      return 'deleted';
    } catch (error) {
      if (error instanceof RestError && error.statusCode === 404) return 'not-found';
      throw error;
    }
  }

  /** The unsigned URL of a snapshot (what `flat_file.url` records for LoRAs with one). */
  snapshotUrl(path: string, snapshot: string): string {
    return this.loras.getBlobClient(path).withSnapshot(snapshot).url;
  }

  /**
   * Tests and benchmarks only: the raw Azure clients, to plant what the product never writes
   * (staged blocks of a vanished upload), drop a run's containers, or upload through the SDK as a
   * baseline. Nothing under server/ calls this.
   */
  clientsForTests(): { service: BlobServiceClient; loras: ContainerClient; shared: ContainerClient } {
    return { service: this.service, loras: this.loras, shared: this.shared };
  }

  /** Idempotent: a blob that is already gone counts as deleted ('not-found'). `signal` ends the tries early. */
  async delete(path: string, signal?: AbortSignal): Promise<DeleteOutcome> {
    try {
      await this.loras.getBlobClient(path).delete({ deleteSnapshots: 'include', ...(signal ? { abortSignal: signal } : {}) });
      return 'deleted';
    } catch (error) {
      if (error instanceof RestError && error.statusCode === 404) return 'not-found';
      throw error;
    }
  }

  /** Removes a blob whether it was committed or holds only staged blocks (404 = 'not-found'). */
  async purge(path: string): Promise<DeleteOutcome> {
    const discarded = await discardStagedBlocks(this.loras.getBlockBlobClient(path));
    return discarded === 'discarded' ? 'deleted' : this.delete(path);
  }

  /**
   * A read-only SAS URL for one user LoRA blob. `fileName` (safe ASCII, see downloadFileName) is
   * signed into the URL as the response's `Content-Disposition: attachment; filename="…"`.
   */
  async loraSas(path: string, ttlSeconds: number, fileName?: string, snapshot?: string | null): Promise<SasLink> {
    return this.sas(
      this.loras,
      path,
      ttlSeconds,
      fileName === undefined ? undefined : `attachment; filename="${fileName}"`,
      snapshot ?? undefined,
    );
  }

  /** A read-only SAS URL for one shared-library LoRA. */
  async sharedSas(name: string, ttlSeconds: number): Promise<SasLink> {
    return this.sas(this.shared, this.sharedPath(name), ttlSeconds);
  }

  sharedPath(name: string): string {
    return `${this.options.sharedPrefix}${name}`;
  }

  private async sas(
    container: ContainerClient,
    path: string,
    ttlSeconds: number,
    contentDisposition?: string,
    snapshot?: string,
  ): Promise<SasLink> {
    const blob = snapshot ? container.getBlobClient(path).withSnapshot(snapshot) : container.getBlobClient(path);
    let props: Awaited<ReturnType<typeof blob.getProperties>>;
    try {
      props = await blob.getProperties();
    } catch (error) {
      if (error instanceof RestError && error.statusCode === 404) throw new BlobNotFoundError(path);
      throw error;
    }
    const startsOn = new Date(Date.now() - 60_000); // tolerate clock skew between us and storage
    const expiresOn = new Date(Date.now() + ttlSeconds * 1000);
    const url = await blob.generateSasUrl({
      permissions: BlobSASPermissions.parse('r'),
      startsOn,
      expiresOn,
      ...(contentDisposition === undefined ? {} : { contentDisposition }),
    });
    return { url, expiresAt: expiresOn, etag: props.etag ?? '', sizeBytes: props.contentLength ?? 0 };
  }
}
