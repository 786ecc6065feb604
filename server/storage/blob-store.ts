import {
  BlobSASPermissions,
  BlobServiceClient,
  type BlockBlobClient,
  type ContainerClient,
  RestError,
  StorageRetryPolicyType,
} from '@azure/storage-blob';

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

export type DeleteOutcome = 'deleted' | 'not-found';

export class BlobNotFoundError extends Error {
  override name = 'BlobNotFoundError';
}

/** 'committed-blob': a committed blob is there, left untouched. */
export type DiscardOutcome = 'discarded' | 'committed-blob';

/**
 * Removes the uncommitted (staged) blocks of a blob that was never committed. Azure keeps them
 * for 7 days, and Delete Blob on a blob with only uncommitted blocks may answer 404, so: commit
 * an empty block list with `If-None-Match: *` (which discards every uncommitted block and never
 * replaces a committed blob), then delete that empty blob by its ETag. Put Blob with empty
 * content is no substitute: Azurite 3.37 refuses it with 409 on a blob with staged blocks.
 */
export async function discardStagedBlocks(blob: BlockBlobClient): Promise<DiscardOutcome> {
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

export class BlobStore {
  readonly service: BlobServiceClient;
  readonly loras: ContainerClient;
  readonly shared: ContainerClient;

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
  async loraSas(path: string, ttlSeconds: number, fileName?: string): Promise<SasLink> {
    return this.sas(this.loras, path, ttlSeconds, fileName === undefined ? undefined : `attachment; filename="${fileName}"`);
  }

  /** A read-only SAS URL for one shared-library LoRA. */
  async sharedSas(name: string, ttlSeconds: number): Promise<SasLink> {
    return this.sas(this.shared, this.sharedPath(name), ttlSeconds);
  }

  sharedPath(name: string): string {
    return `${this.options.sharedPrefix}${name}`;
  }

  private async sas(container: ContainerClient, path: string, ttlSeconds: number, contentDisposition?: string): Promise<SasLink> {
    const blob = container.getBlobClient(path);
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
