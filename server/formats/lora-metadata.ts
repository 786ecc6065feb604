/**
 * What a user wants to know about an uploaded LoRA, read from its validated safetensors header:
 * kohya `ss_*` and `modelspec.*` metadata, and tensor names/shapes when the metadata is silent.
 * Every kept string and list is bounded; nothing here throws on odd metadata. Pure: no I/O.
 */
import {
  type BaseModel,
  type BaseModelSource,
  baseModelFromMetadata,
  baseModelFromTensors,
  DOWN_WEIGHT,
  metaValue,
} from './lora-base-model.ts';
import type { SafetensorsHeader } from './safetensors-rules.ts';

export type { BaseModel, BaseModelSource } from './lora-base-model.ts';

/** Longest string kept from metadata (UTF-16 code units). */
export const MAX_METADATA_STRING = 5_000;
/** Most metadata entries kept in `raw`. */
export const MAX_RAW_ENTRIES = 500;
/** Most trigger words kept. */
export const MAX_TRIGGER_WORDS = 50;
/** Trigger words taken from `ss_tag_frequency` when no trigger phrase is given. */
export const TOP_TAGS = 10;
const MAX_TAG_LENGTH = 200;
const MAX_TAG_FREQUENCY_JSON = 10_000_000;

export interface LoraMetadata {
  baseModel: BaseModel;
  baseModelSource: BaseModelSource | null;
  rank: number | null;
  alpha: number | null;
  networkModule: string | null;
  triggerWords: string[];
  description: string | null;
  title: string | null;
  trainingEpochs: number | null;
  trainingImages: number | null;
  tensorCount: number;
  raw: Record<string, string>;
}

/** Cuts `s` to `max` code units without splitting a surrogate pair. */
export function bound(s: string, max = MAX_METADATA_STRING): string {
  if (s.length <= max) return s;
  const code = s.charCodeAt(max - 1);
  return s.slice(0, code >= 0xd800 && code <= 0xdbff ? max - 1 : max);
}

function text(metadata: Record<string, string>, key: string): string | null {
  const value = metaValue(metadata, key)?.trim();
  return value ? bound(value) : null;
}

function count(metadata: Record<string, string>, key: string): number | null {
  const value = metaValue(metadata, key)?.trim();
  if (!value || !/^[0-9]{1,15}$/.test(value)) return null;
  return Number(value);
}

function decimal(metadata: Record<string, string>, key: string): number | null {
  const value = metaValue(metadata, key)?.trim();
  if (!value || !/^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$/.test(value)) return null;
  const n = Number(value);
  return Number.isFinite(n) ? n : null;
}

/** Tags of `ss_tag_frequency` ({dataset: {tag: count}}) summed over datasets; empty when unreadable. */
function tagCounts(json: string | undefined): Map<string, number> {
  const counts = new Map<string, number>();
  if (!json || json.length > MAX_TAG_FREQUENCY_JSON) return counts;
  let parsed: unknown;
  try {
    parsed = JSON.parse(json);
  } catch {
    return counts;
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return counts;
  for (const dataset of Object.values(parsed)) {
    if (typeof dataset !== 'object' || dataset === null || Array.isArray(dataset)) continue;
    for (const [rawTag, n] of Object.entries(dataset)) {
      const tag = bound(rawTag.trim(), MAX_TAG_LENGTH);
      if (!tag || typeof n !== 'number' || !Number.isFinite(n) || n <= 0) continue;
      counts.set(tag, (counts.get(tag) ?? 0) + n);
    }
  }
  return counts;
}

function triggerWords(metadata: Record<string, string>): string[] {
  const phrase = metaValue(metadata, 'modelspec.trigger_phrase');
  const words = new Set<string>();
  for (const part of (phrase ?? '').split(',')) {
    const word = bound(part.trim(), MAX_TAG_LENGTH);
    if (word) words.add(word);
    if (words.size >= MAX_TRIGGER_WORDS) break;
  }
  if (words.size > 0) return [...words];
  return [...tagCounts(metaValue(metadata, 'ss_tag_frequency'))]
    .sort(([a, x], [b, y]) => y - x || (a < b ? -1 : a > b ? 1 : 0))
    .slice(0, TOP_TAGS)
    .map(([tag]) => tag);
}

/** The largest first dimension among LoRA down-projections (`lora_down` / `lora_A`), else `ss_network_dim`. */
function rank(header: SafetensorsHeader): number | null {
  let best: number | null = null;
  for (const t of header.tensors) {
    const first = t.shape[0];
    if (DOWN_WEIGHT.test(t.name) && first !== undefined && (best === null || first > best)) best = first;
  }
  return best ?? count(header.metadata, 'ss_network_dim');
}

function rawMetadata(metadata: Record<string, string>): Record<string, string> {
  const entries: [string, string][] = [];
  for (const key of Object.keys(metadata)) {
    const value = metaValue(metadata, key);
    if (value === undefined) continue;
    entries.push([bound(key, MAX_TAG_LENGTH), bound(value)]);
    if (entries.length >= MAX_RAW_ENTRIES) break;
  }
  return Object.fromEntries(entries); // defines own properties: a "__proto__" key could not reach the prototype
}

/** Largest side accepted as a training resolution (anything longer is not a resolution). */
const MAX_RESOLUTION_SIDE = 99_999;

/**
 * The training resolution as `WIDTHxHEIGHT`: `modelspec.resolution` ("1024x1024") first, else
 * kohya's `ss_resolution` ("(1024, 1024)", "512,768" or one side "768"); null when neither
 * reads as one or two positive sizes.
 */
export function resolutionFromMetadata(metadata: Record<string, string>): string | null {
  for (const key of ['modelspec.resolution', 'ss_resolution']) {
    const match = /^\(?\s*([0-9]{1,6})\s*(?:[x×,]\s*([0-9]{1,6}))?\s*\)?$/i.exec(metaValue(metadata, key)?.trim() ?? '');
    if (!match) continue;
    const width = Number(match[1]);
    const height = Number(match[2] ?? match[1]);
    if (width >= 1 && height >= 1 && width <= MAX_RESOLUTION_SIDE && height <= MAX_RESOLUTION_SIDE) return `${width}x${height}`;
  }
  return null;
}

/** Extracts the LoRA facts shown to users and stored with the upload. Never throws for a validated header. */
export function extractLoraMetadata(header: SafetensorsHeader): LoraMetadata {
  const m = header.metadata;
  const fromMetadata = baseModelFromMetadata(m);
  const fromTensors = fromMetadata ? undefined : baseModelFromTensors(header.tensors);
  return {
    baseModel: fromMetadata ?? fromTensors ?? 'UNKNOWN',
    baseModelSource: fromMetadata ? 'METADATA' : fromTensors ? 'TENSOR_SHAPES' : null,
    rank: rank(header),
    alpha: decimal(m, 'ss_network_alpha'),
    networkModule: text(m, 'ss_network_module'),
    triggerWords: triggerWords(m),
    description: text(m, 'modelspec.description') ?? text(m, 'ss_training_comment'),
    title: text(m, 'modelspec.title') ?? text(m, 'ss_output_name'),
    trainingEpochs: count(m, 'ss_num_epochs'),
    trainingImages: count(m, 'ss_num_train_images'),
    tensorCount: header.tensors.length,
    raw: rawMetadata(m),
  };
}

/** Civitai AutoV2: the first 10 hex characters of the whole file's SHA-256 (lower case). */
export function autoV2(sha256Hex: string): string {
  if (!/^[0-9a-fA-F]{64}$/.test(sha256Hex)) throw new TypeError('autoV2 expects a 64-character hex SHA-256');
  return sha256Hex.slice(0, 10).toLowerCase();
}

/**
 * Civitai AutoV3 is the SHA-256 of the data section only (the bytes after the header). The
 * streaming pipeline hashes the file byte range [start, end) this returns.
 */
export function autoV3Range(header: SafetensorsHeader): { start: number; end: number } {
  return { start: header.dataStart, end: header.dataStart + header.dataEnd };
}
