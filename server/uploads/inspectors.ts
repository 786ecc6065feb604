import { createHash, randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { createWriteStream, type WriteStream } from 'node:fs';
import { mkdir, open, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { InvalidFileError } from '../domain/errors.ts';
import type { ExtractedMetadata, LoraFormat } from '../domain/lora.ts';
import { autoV3Range, extractLoraMetadata } from '../formats/lora-metadata.ts';
import { checkPtFile } from '../formats/pt.ts';
import { assertCompleteSize, type SafetensorsHeader, SafetensorsHeaderReader } from '../formats/safetensors.ts';
import { SNIFF_BYTES, sniffFormat } from '../formats/sniff.ts';
import { fileReader } from '../formats/zip-inspect.ts';

export { SNIFF_BYTES };

/**
 * Format-specific work on an upload stream, chosen from its first bytes: safetensors headers are
 * validated as they arrive; .pt files are spooled to a temp file and scanned after the last byte.
 */

export interface Inspection {
  format: LoraFormat;
  baseModel: string | null;
  baseModelSource: string | null;
  rank: number | null;
  alpha: number | null;
  metadata: ExtractedMetadata;
  /** Extra facts for flat_file.gen_out_data (hashes the ecosystem looks LoRAs up by). */
  hashes: { autoV3: string | null };
}

export interface Inspector {
  readonly format: LoraFormat;
  push(chunk: Buffer): Promise<void>;
  /** Full-file checks once every byte is in; `totalBytes` as counted by the pipeline. */
  finish(totalBytes: number): Promise<Inspection>;
  /** Releases temp files; safe to call in every outcome, more than once. */
  dispose(): Promise<void>;
}

export function createInspector(head: Buffer, spoolDir: string): Inspector {
  const sniffed = sniffFormat(head.subarray(0, SNIFF_BYTES));
  switch (sniffed.kind) {
    case 'safetensors':
      return new SafetensorsInspector();
    case 'pt-zip':
    case 'pt-pickle':
      return new PtInspector(sniffed.kind, spoolDir);
    default:
      throw new InvalidFileError(sniffed.detected, 'not a safetensors or PyTorch file (decided by content, not the file name)');
  }
}

class SafetensorsInspector implements Inspector {
  readonly format = 'SAFETENSORS' as const;
  private readonly reader = new SafetensorsHeaderReader();
  private header: SafetensorsHeader | undefined;
  private offset = 0;
  private readonly dataHash = createHash('sha256');

  async push(chunk: Buffer): Promise<void> {
    const start = this.offset;
    this.offset += chunk.length;
    if (!this.header) {
      this.header = this.reader.push(chunk);
      if (!this.header) return;
    }
    // AutoV3: sha256 of everything after the header
    const dataStart = autoV3Range(this.header).start;
    if (this.offset > dataStart) this.dataHash.update(chunk.subarray(Math.max(0, dataStart - start)));
  }

  async finish(totalBytes: number): Promise<Inspection> {
    this.header ??= this.reader.finish();
    assertCompleteSize(this.header, totalBytes);
    const m = extractLoraMetadata(this.header);
    return {
      format: 'SAFETENSORS',
      baseModel: m.baseModel,
      baseModelSource: m.baseModelSource,
      rank: m.rank,
      alpha: m.alpha,
      metadata: {
        networkModule: m.networkModule,
        triggerWords: m.triggerWords,
        description: m.description,
        title: m.title,
        trainingEpochs: m.trainingEpochs,
        trainingImages: m.trainingImages,
        tensorCount: m.tensorCount,
        raw: m.raw,
      },
      hashes: { autoV3: this.dataHash.digest('hex') },
    };
  }

  async dispose(): Promise<void> {}
}

class PtInspector implements Inspector {
  readonly format = 'PT' as const;
  private readonly path: string;
  private out: WriteStream | undefined;
  private ready: Promise<void>;

  constructor(
    private readonly kind: 'pt-zip' | 'pt-pickle',
    spoolDir: string,
  ) {
    this.path = join(spoolDir, `upload-${randomUUID()}.pt`);
    this.ready = mkdir(spoolDir, { recursive: true }).then(() => {
      this.out = createWriteStream(this.path, { flags: 'wx', mode: 0o600 });
    });
  }

  async push(chunk: Buffer): Promise<void> {
    await this.ready;
    const out = this.out as WriteStream;
    if (!out.write(chunk)) await once(out, 'drain'); // rejects (and cleans up) on a write error
  }

  async finish(totalBytes: number): Promise<Inspection> {
    await this.ready;
    await new Promise<void>((resolve, reject) =>
      (this.out as WriteStream).end((error?: Error | null) => (error ? reject(error) : resolve())),
    );
    const handle = await open(this.path, 'r');
    try {
      const scan = await checkPtFile(fileReader(handle, totalBytes), this.kind);
      return {
        format: 'PT',
        baseModel: 'UNKNOWN',
        baseModelSource: null,
        rank: null,
        alpha: null,
        metadata: { tensorCount: scan.tensors ?? null, raw: null, triggerWords: [] },
        hashes: { autoV3: null },
      };
    } finally {
      await handle.close();
    }
  }

  async dispose(): Promise<void> {
    await this.ready.catch(() => {});
    this.out?.destroy();
    await rm(this.path, { force: true });
  }
}
