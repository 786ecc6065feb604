import { RestError } from '@azure/storage-blob';
import { BlobChangedError, type BlobStore } from './blob-store.ts';

/**
 * Touches a LoRA-container blob: Set Blob Metadata with the metadata it has (none: the product
 * sets none), only while its ETag is `ifMatch` when given. The bytes stay; Last-Modified becomes
 * now and the ETag a new one, which is returned. BlobChangedError on 412.
 *
 * A snapshot copies its base's system properties (Last-Modified, ETag, x-ms-creation-time), so a
 * snapshot taken right after a touch shows the touch's time and ETag (content-store.ts). This is a
 * storage call outside blob-store.ts only because that file was being changed in parallel (issue 17):
 * it belongs there as `BlobStore.touch`.
 */
export async function touchBlob(blobs: BlobStore, path: string, ifMatch?: string): Promise<string> {
  try {
    const done = await blobs
      .clientsForTests()
      .loras.getBlockBlobClient(path)
      .setMetadata({}, ifMatch ? { conditions: { ifMatch } } : {});
    if (!done.etag) throw new Error(`storage returned no ETag touching ${path}`);
    return done.etag;
  } catch (error) {
    if (error instanceof RestError && error.statusCode === 412) throw new BlobChangedError(path);
    throw error;
  }
}
