/**
 * LoRA fixtures as real bytes: valid SD1 / SD2 / SDXL / Flux (kohya and diffusers) layouts with
 * kohya, modelspec or no metadata, and every bad file of THREATS.md rows 1–3 as
 * `BAD_SAFETENSORS`, for unit and integration tests alike. Valid files come from
 * `makeSafetensors` (testkit/safetensors.ts); bad ones are hand-built byte by byte.
 */
import { makeSafetensors, type TensorSpec } from './safetensors.ts';

export type LoraLayout = 'SD1' | 'SD2' | 'SDXL' | 'FLUX1-kohya' | 'FLUX1-diffusers';
export type MetadataStyle = 'kohya' | 'modelspec' | 'silent';

/** kohya down/up/alpha triple for one module (down: [rank, in], up: [out, rank]). */
function kohyaPair(module: string, inputs: number, outputs: number, rank: number): TensorSpec[] {
  return [
    { name: `${module}.lora_down.weight`, shape: [rank, inputs] },
    { name: `${module}.lora_up.weight`, shape: [outputs, rank] },
    { name: `${module}.alpha`, shape: [] },
  ];
}

/** PEFT/diffusers A/B pair for one module. */
function peftPair(module: string, inputs: number, outputs: number, rank: number): TensorSpec[] {
  return [
    { name: `${module}.lora_A.weight`, shape: [rank, inputs] },
    { name: `${module}.lora_B.weight`, shape: [outputs, rank] },
  ];
}

/** Tensor specs of each layout, small but shaped like the real thing. */
export function loraTensors(layout: LoraLayout, rank = 4): TensorSpec[] {
  switch (layout) {
    case 'SD1':
    case 'SD2': {
      const width = layout === 'SD1' ? 768 : 1024;
      return [
        ...kohyaPair('lora_te_text_model_encoder_layers_0_self_attn_q_proj', width, width, rank),
        ...kohyaPair('lora_te_text_model_encoder_layers_0_mlp_fc1', width, width * 4, rank),
        ...kohyaPair('lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k', width, 320, rank),
        ...kohyaPair('lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q', 320, 320, rank),
      ];
    }
    case 'SDXL':
      return [
        ...kohyaPair('lora_te1_text_model_encoder_layers_0_self_attn_k_proj', 768, 768, rank),
        ...kohyaPair('lora_te2_text_model_encoder_layers_0_self_attn_k_proj', 1280, 1280, rank),
        ...kohyaPair('lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k', 2048, 640, rank),
        ...kohyaPair('lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q', 640, 640, rank),
      ];
    case 'FLUX1-kohya':
      return [
        ...kohyaPair('lora_unet_double_blocks_0_img_attn_proj', 3072, 3072, rank),
        ...kohyaPair('lora_unet_double_blocks_0_txt_attn_proj', 3072, 3072, rank),
        ...kohyaPair('lora_te1_text_model_encoder_layers_0_self_attn_q_proj', 768, 768, rank),
      ];
    case 'FLUX1-diffusers':
      return [
        ...peftPair('transformer.single_transformer_blocks.0.attn.to_k', 3072, 3072, rank),
        ...peftPair('transformer.transformer_blocks.0.attn.add_q_proj', 3072, 3072, rank),
      ];
  }
}

const KOHYA_VERSION: Record<LoraLayout, string> = {
  SD1: 'sd_v1',
  SD2: 'sd_v2',
  SDXL: 'sdxl_base_v1-0',
  'FLUX1-kohya': 'flux1',
  'FLUX1-diffusers': 'flux1',
};
const ARCHITECTURE: Record<LoraLayout, string> = {
  SD1: 'stable-diffusion-v1/lora',
  SD2: 'stable-diffusion-v2-768-v/lora',
  SDXL: 'stable-diffusion-xl-v1-base/lora',
  'FLUX1-kohya': 'flux-1-dev/lora',
  'FLUX1-diffusers': 'flux-1-dev/lora',
};

/** The tag counts written as `ss_tag_frequency` by {@link loraMetadata} ('kohya'). */
export const TAG_FREQUENCY = {
  '10_mychar': { mychar: 40, '1girl': 38, solo: 30, smile: 12, 'red hair': 12 },
  '5_style': { mychar: 5, outdoors: 9, 'blue sky': 7, tree: 3, cloud: 3, grass: 2, sunlight: 2 },
};

/** kohya or modelspec metadata for a layout ('silent' → none at all). */
export function loraMetadata(layout: LoraLayout, style: MetadataStyle, rank = 4): Record<string, string> {
  if (style === 'silent') return {};
  if (style === 'modelspec') {
    return {
      'modelspec.sai_model_spec': '1.0.0',
      'modelspec.architecture': ARCHITECTURE[layout],
      'modelspec.implementation': 'https://github.com/Stability-AI/generative-models',
      'modelspec.title': `My ${layout} LoRA`,
      'modelspec.trigger_phrase': 'mychar, red hair , ,blue eyes',
      'modelspec.description': 'A test LoRA with modelspec metadata.',
    };
  }
  return {
    ss_base_model_version: KOHYA_VERSION[layout],
    ss_network_module: layout.startsWith('FLUX1') ? 'networks.lora_flux' : 'networks.lora',
    ss_network_dim: String(rank),
    ss_network_alpha: String(rank / 2),
    ss_output_name: `my_${layout.toLowerCase()}_lora`,
    ss_tag_frequency: JSON.stringify(TAG_FREQUENCY),
    ss_num_epochs: '10',
    ss_num_train_images: '420',
    ss_training_comment: 'trained for tests',
  };
}

/** A valid LoRA file of `layout` with `style` metadata (plus `extra` entries). */
export function makeLora(
  layout: LoraLayout,
  style: MetadataStyle = 'kohya',
  options: { rank?: number; extra?: Record<string, string> } = {},
): Buffer {
  const rank = options.rank ?? 4;
  return makeSafetensors(loraTensors(layout, rank), { ...loraMetadata(layout, style, rank), ...options.extra });
}

export const sd1Lora = (style: MetadataStyle = 'kohya') => makeLora('SD1', style);
export const sd2Lora = (style: MetadataStyle = 'kohya') => makeLora('SD2', style);
export const sdxlLora = (style: MetadataStyle = 'kohya') => makeLora('SDXL', style);
export const fluxKohyaLora = (style: MetadataStyle = 'kohya') => makeLora('FLUX1-kohya', style);
export const fluxDiffusersLora = (style: MetadataStyle = 'kohya') => makeLora('FLUX1-diffusers', style);

/** Every layout with the base model it must be detected as. */
export const LORA_LAYOUTS: { layout: LoraLayout; baseModel: 'SD1' | 'SD2' | 'SDXL' | 'FLUX1' }[] = [
  { layout: 'SD1', baseModel: 'SD1' },
  { layout: 'SD2', baseModel: 'SD2' },
  { layout: 'SDXL', baseModel: 'SDXL' },
  { layout: 'FLUX1-kohya', baseModel: 'FLUX1' },
  { layout: 'FLUX1-diffusers', baseModel: 'FLUX1' },
];

export { BAD_SAFETENSORS, type BadFile, rawSafetensors } from './bad-safetensors.ts';
