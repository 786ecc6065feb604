/**
 * Which base model a LoRA was trained for: first from its metadata (kohya `ss_*`, modelspec),
 * else from tensor names and shapes the way InvokeAI's LoRA probe does (Flux key layouts, then
 * the text-encoder / cross-attention token vector length). Pure: works on the parsed header only.
 */
import type { SafetensorsTensor } from './safetensors-rules.ts';

export type BaseModel = 'SD1' | 'SD2' | 'SDXL' | 'FLUX1' | 'SD3' | 'UNKNOWN';
export type BaseModelSource = 'METADATA' | 'TENSOR_SHAPES';

/** `modelspec.architecture`, e.g. "stable-diffusion-xl-v1-base/lora", "flux-1-dev/lora". */
function fromArchitecture(architecture: string): BaseModel | undefined {
  const a = architecture.trim().toLowerCase();
  if (/^stable-diffusion-xl/.test(a)) return 'SDXL';
  if (/^stable-diffusion-v1/.test(a)) return 'SD1';
  if (/^stable-diffusion-v2/.test(a)) return 'SD2';
  if (/^stable-diffusion-(?:v)?3/.test(a)) return 'SD3';
  if (/^flux[-.]?1/.test(a)) return 'FLUX1';
  return undefined;
}

/** kohya `ss_base_model_version`, e.g. "sd_v1", "sd_v2_768_v", "sdxl_base_v1-0", "flux1", "sd3". */
function fromKohyaVersion(version: string): BaseModel | undefined {
  const v = version.trim().toLowerCase();
  if (/^sdxl/.test(v)) return 'SDXL';
  if (/^sd_?v1/.test(v)) return 'SD1';
  if (/^sd_?v2/.test(v)) return 'SD2';
  if (/^sd_?3/.test(v)) return 'SD3';
  if (/^flux[-_.]?1|^flux$/.test(v)) return 'FLUX1';
  return undefined;
}

/** An own string value of `metadata` (never an inherited one), else undefined. */
export function metaValue(metadata: Record<string, string>, key: string): string | undefined {
  const value = Object.hasOwn(metadata, key) ? metadata[key] : undefined;
  return typeof value === 'string' ? value : undefined;
}

/** The base model the metadata names, if it names a known one (modelspec first, then kohya). */
export function baseModelFromMetadata(metadata: Record<string, string>): BaseModel | undefined {
  const architecture = metaValue(metadata, 'modelspec.architecture');
  const version = metaValue(metadata, 'ss_base_model_version');
  return (
    (architecture === undefined ? undefined : fromArchitecture(architecture)) ??
    (version === undefined ? undefined : fromKohyaVersion(version)) ??
    (metaValue(metadata, 'ss_v2')?.trim().toLowerCase() === 'true' ? 'SD2' : undefined)
  );
}

// Flux: kohya (`lora_unet_double_blocks_0_img_attn_proj…`), OneTrainer (`lora_transformer_single_transformer_blocks_…`),
// diffusers/PEFT (`transformer.single_transformer_blocks.0.attn.to_k.lora_A.weight`), BFL-style (`diffusion_model.double_blocks.0…`).
const FLUX_KEYS = [
  /^lora_unet_(?:double|single)_blocks_\d+_/,
  /^lora_transformer_single_transformer_blocks_\d+_/,
  /^(?:transformer\.|base_model\.model\.)?single_transformer_blocks\.\d+\./,
  /^(?:diffusion_model\.|base_model\.model\.)?(?:double|single)_blocks\.\d+\./,
];
// SD3 (sd-scripts MMDiT LoRA): `lora_unet_joint_blocks_0_x_block_attn_qkv…`.
const SD3_KEYS = [/^lora_unet_joint_blocks_\d+_/];

/** The down-projection of a LoRA pair (its shape is [rank, in_features]). */
export const DOWN_WEIGHT = /(?:\.lora_down\.weight|\.lora_A\.weight|[._]lora\.down\.weight)$/;

// Text-encoder projections whose input is the token vector (self-attention q/k/v/out, mlp fc1).
const TE_INPUT = /(?:self_attn[._](?:q|k|v|out)_proj|mlp[._]fc1)/;
const TE1 = /^(?:lora_te_|lora_te1_|text_encoder\.)/;
const TE2 = /^(?:lora_te2_|text_encoder_2\.)/;
// UNet cross-attention key/value: their input is the text conditioning (context) dimension.
const UNET_CROSS_ATTN = /(?:^lora_unet_.*_attn2_to_[kv]\.|^(?:unet\.)?.*attn2\.(?:to_[kv]|processor\.to_[kv]_lora)[._])/;

function fromTokenLength(length: number | undefined): BaseModel | undefined {
  if (length === 768) return 'SD1';
  if (length === 1024) return 'SD2';
  if (length === 1280 || length === 2048) return 'SDXL';
  return undefined;
}

/** Base model from tensor names/shapes only; undefined when nothing is conclusive. */
export function baseModelFromTensors(tensors: readonly SafetensorsTensor[]): BaseModel | undefined {
  const names = tensors.map((t) => t.name);
  if (names.some((n) => FLUX_KEYS.some((re) => re.test(n)))) return 'FLUX1';
  if (names.some((n) => SD3_KEYS.some((re) => re.test(n)))) return 'SD3';
  let te1: number | undefined;
  let te2: number | undefined;
  let context: number | undefined;
  for (const t of tensors) {
    if (!DOWN_WEIGHT.test(t.name) || t.shape.length < 2) continue;
    const inputs = t.shape[1];
    if (UNET_CROSS_ATTN.test(t.name)) context ??= inputs;
    else if (TE_INPUT.test(t.name) && TE2.test(t.name)) te2 ??= inputs;
    else if (TE_INPUT.test(t.name) && TE1.test(t.name)) te1 ??= inputs;
  }
  // SDXL's second text encoder (1280 wide) settles it; then the UNet's cross-attention context
  // width (768 / 1024 / 2048), the most reliable signal; then the lone text encoder's width.
  const sdxl = te2 === undefined ? undefined : fromTokenLength(te1 === undefined ? te2 : te1 + te2);
  return sdxl ?? fromTokenLength(context) ?? fromTokenLength(te1);
}
