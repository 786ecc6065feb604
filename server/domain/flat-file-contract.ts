import { resolutionFromMetadata } from '../formats/lora-metadata.ts';
import type { LoraView } from './lora.ts';

/**
 * The platform's contract for LoRA rows of `flat_file` (docs/flat-file.md): what `gen_out_data`
 * holds, in the seed's shape, so services of the platform that read the table with the seed's
 * queries find every fact where the seed put it. Pure: the upload, the metadata edit and the
 * upgrade of old rows all build the object here, from what the API shows of the LoRA.
 */

/** Where an upload came from (`gen_out_data.upload_source`). */
export const UploadSource = {
  /** EmProps Studio, as the client says through the SDK (`uploadSource: EMPROPS_STUDIO`). */
  EMPROPS_STUDIO: 'emprops_studio',
  /** Any other client of the GraphQL API (the default). */
  API: 'api',
  /** A direct-to-storage (resumable) upload whose client named no source (beginLoraUpload's default); never claimed by a client. */
  RESUMABLE: 'resumable',
} as const;
export type UploadSource = (typeof UploadSource)[keyof typeof UploadSource];

/** The sources a client may name on `uploadLora` and `beginLoraUpload`. */
export const CLIENT_UPLOAD_SOURCES = [UploadSource.EMPROPS_STUDIO, UploadSource.API] as const;

const KNOWN_SOURCES: readonly string[] = Object.values(UploadSource);

/**
 * `gen_out_data.validation_status`. Only files that passed every check are ever stored: a
 * refused upload leaves no row (docs/decisions.md), so `safe` is the one value written today.
 */
export const ValidationStatus = {
  /** Format validated by content, safetensors header rules or the static pickle scan passed. */
  SAFE: 'safe',
} as const;
export type ValidationStatus = (typeof ValidationStatus)[keyof typeof ValidationStatus];

export interface LoraGenOutData {
  /** The file's size in bytes (what the seed's storage query sums). */
  size_bytes: number;
  /** `sha256:` + the whole file's SHA-256, lower-case hex. */
  file_hash: string;
  file_format: 'safetensors' | 'pt';
  /** Civitai's AutoV2: the first 10 hex characters of the file's SHA-256. */
  civitai_autov2_hash: string;
  /** Civitai's AutoV3: SHA-256 of a safetensors file's data after its header (null for .pt). */
  civitai_autov3_hash: string | null;
  lora_metadata: {
    base_model: string | null;
    rank: number | null;
    trigger_words: string[];
    training_epochs: number | null;
    training_images: number | null;
    alpha: number | null;
    network_module: string | null;
    /** `WIDTHxHEIGHT` the LoRA was trained at, from its metadata. */
    resolution: string | null;
  };
  upload_source: UploadSource;
  validation_status: ValidationStatus;
}

/** What the builder reads of a LoRA: the API's own view, so the platform sees what users see. */
export type GenOutDataSource = Pick<LoraView, 'sizeBytes' | 'sha256' | 'format' | 'autoV3'> & {
  metadata: Pick<
    LoraView['metadata'],
    'baseModel' | 'rank' | 'alpha' | 'networkModule' | 'triggerWords' | 'trainingEpochs' | 'trainingImages' | 'raw'
  >;
};

export function loraGenOutData(
  lora: GenOutDataSource,
  stored: { uploadSource: UploadSource; validationStatus: ValidationStatus },
): LoraGenOutData {
  if (!/^[0-9a-fA-F]{64}$/.test(lora.sha256)) throw new TypeError('gen_out_data needs a 64-character hex sha256');
  if (!Number.isSafeInteger(lora.sizeBytes) || lora.sizeBytes < 0)
    throw new TypeError(`gen_out_data needs a byte size, got ${lora.sizeBytes}`);
  const sha256 = lora.sha256.toLowerCase();
  const m = lora.metadata;
  return {
    size_bytes: lora.sizeBytes,
    file_hash: `sha256:${sha256}`,
    file_format: lora.format === 'SAFETENSORS' ? 'safetensors' : 'pt',
    civitai_autov2_hash: sha256.slice(0, 10),
    civitai_autov3_hash: lora.autoV3?.toLowerCase() ?? null,
    lora_metadata: {
      base_model: m.baseModel,
      rank: m.rank,
      trigger_words: [...m.triggerWords],
      training_epochs: m.trainingEpochs,
      training_images: m.trainingImages,
      alpha: m.alpha,
      network_module: m.networkModule,
      resolution: m.raw ? resolutionFromMetadata(m.raw) : null,
    },
    upload_source: stored.uploadSource,
    validation_status: stored.validationStatus,
  };
}

/**
 * The source recorded in an existing row's `upload_source`. Rows written before this contract
 * say `graphql-upload` (any API client, Studio included, indistinguishable): they read as `api`,
 * as does anything else outside the vocabulary.
 */
export function storedUploadSource(value: unknown): UploadSource {
  return typeof value === 'string' && KNOWN_SOURCES.includes(value) ? (value as UploadSource) : UploadSource.API;
}

/** The `upload_source` of an existing `gen_out_data` (any JSON), see storedUploadSource. */
export function uploadSourceOf(genOutData: unknown): UploadSource {
  const value = typeof genOutData === 'object' && genOutData !== null ? (genOutData as Record<string, unknown>).upload_source : undefined;
  return storedUploadSource(value);
}
