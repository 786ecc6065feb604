import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { LOADER_SPEC_PATHS, loaderSpec, nameWidgets, readLoaderSpec, widgetOrder } from '../../cache-agent/loader-spec.ts';
import { scanWorkflow } from '../../cache-agent/workflow.ts';

/**
 * The loader spec is written once (comfyui/lora_vault_nodes/loader-spec.json): the ComfyUI node builds
 * its INPUT_TYPES from it and the agent's parser names UI widgets with it.
 */

const ROOT = join(import.meta.dirname, '../..');

describe('loader spec', () => {
  it('is the ComfyUI package file, and the packed agent copies that same file', () => {
    expect(readLoaderSpec([join(ROOT, 'comfyui/lora_vault_nodes/loader-spec.json')])).toEqual(loaderSpec);
    const pkg = JSON.parse(readFileSync(join(ROOT, 'cache-agent/package.json'), 'utf8'));
    expect(pkg.files).toContain('loader-spec.json');
    expect(pkg.scripts.prepack).toContain('../comfyui/lora_vault_nodes/loader-spec.json');
    expect(LOADER_SPEC_PATHS[1]).toBe(join(ROOT, 'comfyui/lora_vault_nodes/loader-spec.json'));
  });

  it("gives the seed's inputs to the new node and keeps the EmProps key's widget order", () => {
    const node = loaderSpec.nodes.LoraVault_Lora_Loader;
    expect(node && widgetOrder(node)).toEqual(['lora_source', 'lora_identifier', 'strength_model', 'strength_clip', 'lora_name']);
    expect(node?.required.find((i) => i.name === 'strength_clip')).toMatchObject({
      type: 'FLOAT',
      default: 1,
      min: -10,
      max: 10,
      step: 0.01,
    });
    const legacy = loaderSpec.nodes.EmProps_Lora_Loader;
    expect(legacy && widgetOrder(legacy)).toEqual(['lora_name', 'strength_model', 'strength_clip']);
  });

  it.each([
    ['LoraVault_Lora_Loader', ['user', '42', 1, 1, ''], { lora_source: 'user', lora_identifier: '42', lora_name: '' }],
    ['EmProps_Lora_Loader', ['a.safetensors', 0.5, 0.5], { lora_name: 'a.safetensors', strength_model: 0.5 }],
    [
      'EmProps_Lora_Loader',
      ['b.safetensors', 'aws', 'emprops-share', 1, 0.7],
      { lora_name: 'b.safetensors', bucket: 'emprops-share', strength_clip: 0.7 },
    ],
    ['EmProps_Lora_Loader_Simple', ['x', 1, 'shared', 'c.safetensors'], { lora_source: 'shared', lora_identifier: 'c.safetensors' }],
    ['LoraLoaderModelOnly', ['d.safetensors', 0.5], { lora_name: 'd.safetensors', strength_model: 0.5 }],
  ])('names %s widgets %j', (type, values, expected) => {
    expect(nameWidgets(type, values)).toMatchObject(expected);
  });

  it('the new node reads its legacy lora_name when the identifier is blank, in both formats', () => {
    const ui = { nodes: [{ id: 7, type: 'LoraVault_Lora_Loader', widgets_values: ['shared', '', 1, 1, 'legacy/x.safetensors'] }] };
    const api = { '7': { class_type: 'LoraVault_Lora_Loader', inputs: { lora_source: 'user', lora_identifier: '9', strength_model: 1 } } };
    expect(scanWorkflow(ui).refs).toEqual([{ source: 'shared', name: 'legacy/x.safetensors', nodeIds: ['7'] }]);
    expect(scanWorkflow(api).refs).toEqual([{ source: 'user', id: '9', nodeIds: ['7'] }]);
  });
});
