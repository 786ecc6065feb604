import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import { GraphQLError } from 'graphql';
import { DomainError, FileTooLargeError, UploadInterruptedError } from '../domain/errors.ts';
import type { LoraFormat } from '../domain/lora.ts';
import type { UploadPhase } from '../events/bus.ts';
import type { BlockStager } from './block-stager.ts';
import { createInspector, type Inspection, SNIFF_BYTES } from './inspectors.ts';

/**
 * One pass over an upload stream: count bytes (our own limit — the multipart library's
 * truncates silently), hash, decide the format from the first bytes, validate as the bytes
 * arrive, stage blocks to storage, report progress; then the full-file checks. Memory stays
 * bounded by the stager's blocks in flight, whatever the file size.
 */

/** Where the pipeline sends the bytes it has checked (a BlockStager; nothing when the bytes are already stored). */
export interface ChunkSink {
  write(chunk: Buffer): Promise<void>;
}

export interface PipelineOptions<S extends ChunkSink = BlockStager> {
  stream: Readable | NodeJS.ReadableStream;
  maxBytes: number;
  /** Called once the format is known (from the first bytes): where to stage the blob. */
  openStager(format: LoraFormat): Promise<S>;
  /** Where .pt uploads are spooled for random access (removed in every outcome). */
  spoolDir: string;
  onProgress(phase: UploadPhase, bytesReceived: number): void;
}

export interface PipelineResult<S extends ChunkSink = BlockStager> extends Inspection {
  sizeBytes: number;
  sha256: string;
  /** Holds the staged (uncommitted) blocks; the caller commits. */
  stager: S;
}

export async function runUploadPipeline<S extends ChunkSink = BlockStager>(options: PipelineOptions<S>): Promise<PipelineResult<S>> {
  const { stream, maxBytes, onProgress } = options;
  let stager: S | undefined;
  const sha = createHash('sha256');
  let total = 0;
  let head: Buffer[] = [];
  let headBytes = 0;
  let inspector: ReturnType<typeof createInspector> | undefined;
  try {
    try {
      for await (const raw of stream) {
        const chunk = raw as Buffer;
        total += chunk.length;
        if (total > maxBytes) throw new FileTooLargeError(maxBytes);
        sha.update(chunk);
        if (!inspector) {
          head.push(chunk);
          headBytes += chunk.length;
          if (headBytes < SNIFF_BYTES) continue;
          const first = Buffer.concat(head, headBytes);
          head = [];
          inspector = createInspector(first, options.spoolDir);
          await inspector.push(first);
          stager = await options.openStager(inspector.format);
          await stager.write(first);
        } else {
          await inspector.push(chunk);
          await stager?.write(chunk);
        }
        onProgress('RECEIVING', total);
      }
    } catch (error) {
      // typed outcomes and malformed-request errors (multipart-parser.ts) keep their meaning
      if (error instanceof DomainError || error instanceof GraphQLError) throw error;
      throw new UploadInterruptedError((error as Error)?.message ?? 'the upload stream failed');
    }
    if ((stream as { truncated?: boolean }).truncated) throw new FileTooLargeError(maxBytes);
    if (!inspector) {
      const first = Buffer.concat(head, headBytes);
      inspector = createInspector(first, options.spoolDir);
      await inspector.push(first);
      stager = await options.openStager(inspector.format);
      await stager.write(first);
    }
    onProgress('VALIDATING', total);
    const inspection = await inspector.finish(total);
    return { ...inspection, sizeBytes: total, sha256: sha.digest('hex'), stager: stager as S };
  } finally {
    await inspector?.dispose();
  }
}
