import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import type { BlobStore } from '../server/storage/blob-store.ts';
import { log } from './harness.ts';

/** What the upload benchmarks share: big safetensors files on disk, and emptying the storage. */

const MiB = 1024 * 1024;
const mb = (bytes: number): string => (bytes / 1e6).toFixed(1);

export interface BenchFile {
  path: string;
  size: number;
  sha256: string;
}

/**
 * 8-byte length + JSON header (padded with spaces, as the reference writer does) for `totalBytes`
 * of file: F16 tensors of 64 MiB ([4096, 8192]) and one smaller for the rest, with kohya metadata.
 */
export function safetensorsHeader(totalBytes: number): Buffer {
  if (totalBytes % 8 !== 0) throw new Error('file size must be a multiple of 8');
  const build = (dataBytes: number): Buffer => {
    const header: Record<string, unknown> = {
      __metadata__: { ss_network_dim: '64', ss_network_alpha: '32', ss_base_model_version: 'sdxl_base_v1-0', ss_output_name: 'bench' },
    };
    const perTensor = 4096 * 8192;
    let elements = dataBytes / 2;
    let offset = 0;
    for (let i = 0; elements > 0; i++) {
      const n = Math.min(perTensor, elements);
      header[`lora_unet_bench_block_${i}.lora_up.weight`] = {
        dtype: 'F16',
        shape: n === perTensor ? [4096, 8192] : [n],
        data_offsets: [offset, offset + 2 * n],
      };
      offset += 2 * n;
      elements -= n;
    }
    return Buffer.from(JSON.stringify(header), 'utf8');
  };
  // The header's length barely depends on the data size: fix it (a multiple of 8, with room) first.
  const headerBytes = Math.ceil((build(totalBytes - 8).length + 64) / 8) * 8;
  const json = build(totalBytes - 8 - headerBytes);
  if (json.length > headerBytes) throw new Error('safetensors header grew unexpectedly');
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(headerBytes));
  return Buffer.concat([prefix, json, Buffer.alloc(headerBytes - json.length, 0x20)]);
}

/** Writes the file in 4 MiB chunks of a pseudo-random pattern, hashing as it goes. */
export async function writeSafetensorsFile(path: string, totalBytes: number): Promise<BenchFile> {
  const pattern = Buffer.alloc(4 * MiB);
  let x = 0x9e3779b9;
  for (let i = 0; i < pattern.length; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    pattern.writeUInt32LE(x >>> 0, i);
  }
  const hash = createHash('sha256');
  const handle = await open(path, 'wx', 0o600);
  try {
    const put = async (chunk: Buffer) => {
      hash.update(chunk);
      const { bytesWritten } = await handle.write(chunk);
      if (bytesWritten !== chunk.length) throw new Error(`short write to ${path}`);
    };
    const header = safetensorsHeader(totalBytes);
    await put(header);
    for (let left = totalBytes - header.length; left > 0; ) {
      const n = Math.min(left, pattern.length);
      await put(pattern.subarray(0, n));
      left -= n;
    }
  } finally {
    await handle.close();
  }
  return { path, size: totalBytes, sha256: hash.digest('hex') };
}

export async function deleteAllBlobs(store: BlobStore): Promise<void> {
  let count = 0;
  let bytes = 0;
  try {
    await store.clientsForTests().service.getProperties();
  } catch (error) {
    if (!/ECONNREFUSED/.test(String((error as Error).message))) throw error;
    // Ctrl-C reaches the whole process group: Azurite may have shut down on its own already
    log('Azurite has already stopped: its blobs go with its data dir, in the temp dir');
    return;
  }
  const { loras, shared } = store.clientsForTests();
  for (const container of [loras, shared]) {
    if (!(await container.exists())) continue;
    for await (const b of container.listBlobsFlat({ includeUncommitedBlobs: true })) {
      await container.deleteBlob(b.name, { deleteSnapshots: 'include' }).catch((error: { statusCode?: number }) => {
        if (error.statusCode !== 404) throw error;
      });
      count++;
      bytes += b.properties.contentLength ?? 0;
    }
  }
  log(`deleted ${count} blobs (${mb(bytes)} MB)`);
}
