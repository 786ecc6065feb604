import type { UserMetadata } from './validation.ts';

/** What the API shows of a LoRA: a `flat_file` row tagged 'lora' joined with its `lora` facts. */

export type LoraFormat = 'SAFETENSORS' | 'PT';
/** SUSPENDED: hidden by an account deletion, blob kept until the purge (server/services/accounts.ts). */
export type LoraStatus = 'UPLOADING' | 'READY' | 'FAILED' | 'DELETED' | 'SUSPENDED';
export const LORA_TAG = 'lora';

/** Facts extracted from the file (stored in `lora.metadata`). Base model, rank, alpha are columns. */
export interface ExtractedMetadata {
  /** What detection found, kept so clearing a user override can restore it. */
  detectedBaseModel?: string | null;
  detectedBaseModelSource?: string | null;
  networkModule?: string | null;
  triggerWords?: string[];
  description?: string | null;
  title?: string | null;
  trainingEpochs?: number | null;
  trainingImages?: number | null;
  tensorCount?: number | null;
  raw?: Record<string, string> | null;
  /** sha256 of the bytes after the safetensors header (survives metadata edits). */
  autoV3?: string | null;
}

export interface LoraMetadataView {
  baseModel: string | null;
  baseModelSource: string | null;
  rank: number | null;
  alpha: number | null;
  networkModule: string | null;
  triggerWords: string[];
  description: string | null;
  title: string | null;
  trainingEpochs: number | null;
  trainingImages: number | null;
  tensorCount: number | null;
  raw: Record<string, string> | null;
}

export interface LoraView {
  id: string;
  userId: string;
  name: string;
  fileName: string;
  format: LoraFormat;
  sizeBytes: number;
  sha256: string;
  status: LoraStatus;
  tags: string[];
  createdAt: Date;
  updatedAt: Date;
  usageCount: number;
  lastUsedAt: Date | null;
  metadata: LoraMetadataView;
  /** The hashes the ecosystem looks LoRAs up by: AutoV2 = first 10 hex of sha256; AutoV3 (safetensors). */
  autoV2: string;
  autoV3: string | null;
}

/** The row shape every LoRA query selects (see db/lora-reads.ts). */
export interface LoraRow {
  /** bigint from Prisma, string from node-postgres (int8) */
  file_id: bigint | string;
  user_id: string;
  name: string;
  file_name: string;
  format: LoraFormat;
  size_bytes: bigint | string;
  sha256: string;
  status: LoraStatus;
  tags: string[] | null;
  created_at: Date;
  updated_at: Date;
  usage_count: number;
  last_used_at: Date | null;
  base_model: string | null;
  base_model_source: string | null;
  rank: number | null;
  alpha: number | null;
  metadata: unknown;
  user_metadata: unknown;
}

export function toLoraView(row: LoraRow): LoraView {
  const extracted = (row.metadata ?? {}) as ExtractedMetadata;
  const user = (row.user_metadata ?? {}) as UserMetadata;
  return {
    id: String(row.file_id),
    userId: row.user_id,
    name: row.name,
    fileName: row.file_name,
    format: row.format,
    sizeBytes: Number(row.size_bytes),
    sha256: row.sha256.trim(),
    status: row.status,
    tags: userVisibleTags(row.tags ?? []),
    createdAt: row.created_at,
    updatedAt: row.updated_at,
    usageCount: row.usage_count,
    lastUsedAt: row.last_used_at,
    autoV2: row.sha256.trim().slice(0, 10),
    autoV3: extracted.autoV3 ?? null,
    metadata: {
      baseModel: row.base_model,
      baseModelSource: row.base_model_source,
      rank: row.rank,
      alpha: row.alpha,
      networkModule: extracted.networkModule ?? null,
      triggerWords: user.triggerWords ?? extracted.triggerWords ?? [],
      description: user.description !== undefined ? user.description : (extracted.description ?? null),
      title: user.title !== undefined ? user.title : (extracted.title ?? null),
      trainingEpochs: extracted.trainingEpochs ?? null,
      trainingImages: extracted.trainingImages ?? null,
      tensorCount: extracted.tensorCount ?? null,
      raw: extracted.raw ?? null,
    },
  };
}

/** flat_file.tags holds the implicit 'lora' tag; the API shows user tags only. */
export function userVisibleTags(tags: string[]): string[] {
  return tags.filter((t) => t !== LORA_TAG);
}

export function storedTags(userTags: string[]): string[] {
  return [LORA_TAG, ...userTags];
}

export function formatExtension(format: LoraFormat): string {
  return format === 'SAFETENSORS' ? 'safetensors' : 'pt';
}

/**
 * The name a LoRA's bytes are handed out under (download `fileName`, `Content-Disposition`): the
 * uploaded name's stem in safe ASCII plus the extension of the DETECTED format, never the user's —
 * a safetensors file uploaded as `x.pt` is `x.safetensors`, so no loader picks a pickle path for it.
 */
export function downloadFileName(fileName: string, format: LoraFormat): string {
  const stem = fileName
    .replace(/\.[A-Za-z0-9]{1,12}$/, '')
    .normalize('NFKD')
    .replace(/[^A-Za-z0-9._-]+/g, '-')
    .replace(/^[.-]+|[.-]+$/g, '')
    .slice(0, 100);
  return `${stem || 'lora'}.${formatExtension(format)}`;
}
