/**
 * Builds real safetensors files in memory: 8-byte little-endian header length, JSON header,
 * then the tensor bytes, laid out contiguously as huggingface/safetensors requires.
 */

import { randomUUID } from 'node:crypto';

export type Dtype = 'F32' | 'F16' | 'BF16';
const DTYPE_SIZE: Record<Dtype, number> = { F32: 4, F16: 2, BF16: 2 };

export interface TensorSpec {
  name: string;
  shape: number[];
  dtype?: Dtype;
}

export function makeSafetensors(tensors: TensorSpec[], metadata: Record<string, string> = {}): Buffer {
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length) header.__metadata__ = metadata;
  let offset = 0;
  for (const t of tensors) {
    const dtype = t.dtype ?? 'F16';
    const bytes = t.shape.reduce((a, b) => a * b, 1) * DTYPE_SIZE[dtype];
    header[t.name] = { dtype, shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = Buffer.from(JSON.stringify(header), 'utf8');
  const pad = (8 - (json.length % 8)) % 8; // the reference writer pads the header with spaces
  if (pad) json = Buffer.concat([json, Buffer.alloc(pad, 0x20)]);
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(json.length));
  const data = Buffer.alloc(offset);
  for (let i = 0; i < data.length; i++) data[i] = (i * 31 + 7) & 0xff;
  return Buffer.concat([prefix, json, data]);
}

/** A small SD1.5-style LoRA (rank 4) with kohya metadata. */
export function smallSd15Lora(extraMetadata: Record<string, string> = {}): Buffer {
  return makeSafetensors(
    [
      { name: 'lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight', shape: [4, 768] },
      { name: 'lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight', shape: [3072, 4] },
      { name: 'lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight', shape: [4, 320] },
    ],
    { ss_network_dim: '4', ss_network_alpha: '2', ss_base_model_version: 'sd_v1', ...extraMetadata },
  );
}

/** A valid safetensors LoRA of about `mib` MiB (one F16 tensor), with unique content (a random id in its metadata). */
export function bigLora(mib: number): Buffer {
  return makeSafetensors([{ name: 'w', shape: [(mib * 1024 * 1024) / 2], dtype: 'F16' }], { id: randomUUID() });
}

/** A real safetensors file whose size is base + 8·k bytes (the header grows by 8 characters per step). */
export function sizedLora(k: number): Buffer {
  return smallSd15Lora({ ss_pad: 'x'.repeat(8 * k) });
}
