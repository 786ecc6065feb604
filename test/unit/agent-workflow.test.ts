import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { AgentError } from '../../cache-agent/errors.ts';
import { normaliseLoraId, normaliseSharedName } from '../../cache-agent/lora-refs.ts';
import { scanWorkflow, type WorkflowLoraRef } from '../../cache-agent/workflow.ts';

const MAX_INT8 = 9223372036854775807n;
const TYPES = ['EmProps_Lora_Loader', 'LoraLoader', 'LoraLoaderModelOnly'] as const;
const lora = (inputs: Record<string, unknown>, class_type = 'EmProps_Lora_Loader') => ({ class_type, inputs });
const refKeys = (refs: WorkflowLoraRef[]) => refs.map((r) => (r.source === 'user' ? `user:${r.id}` : `shared:${r.name}`));
const deepFreeze = <T>(v: T): T => {
  if (typeof v === 'object' && v !== null) for (const child of Object.values(v)) deepFreeze(child);
  return Object.freeze(v);
};
const invalid = (value: unknown) => {
  try {
    scanWorkflow(value);
  } catch (error) {
    return error instanceof AgentError && error.code === 'INVALID_WORKFLOW';
  }
  return false;
};

const chain = (from: string) => ({ model: [from, 0], clip: [from, 1] });
const SAMPLER = { seed: 42, steps: 30, cfg: 7, sampler_name: 'dpmpp_2m', scheduler: 'karras', denoise: 1 };
/** SDXL txt2img as "Export (API)" writes it: checkpoint → user LoRA → shared LoRA → stock LoRA → sampler. */
const SDXL = {
  '4': { class_type: 'CheckpointLoaderSimple', inputs: { ckpt_name: 'sd_xl_base_1.0.safetensors' }, _meta: { title: 'Load Checkpoint' } },
  '10': lora({ ...chain('4'), lora_source: 'user', lora_identifier: '123', strength_model: 1, strength_clip: 1 }),
  '11': lora({ ...chain('10'), lora_source: 'shared', lora_identifier: 'style/film_grain.safetensors', strength_model: 0.6 }),
  '12': lora({ ...chain('11'), lora_name: 'add-detail-xl.safetensors', strength_model: 0.8, strength_clip: 0.8 }, 'LoraLoader'),
  '6': { class_type: 'CLIPTextEncode', inputs: { text: 'a cinematic photo of a lighthouse at dusk', clip: ['12', 1] } },
  '7': { class_type: 'CLIPTextEncode', inputs: { text: 'blurry, lowres, watermark', clip: ['12', 1] } },
  '5': { class_type: 'EmptyLatentImage', inputs: { width: 1024, height: 1024, batch_size: 1 } },
  '3': { class_type: 'KSampler', inputs: { ...SAMPLER, model: ['12', 0], positive: ['6', 0], negative: ['7', 0], latent_image: ['5', 0] } },
  '8': { class_type: 'VAEDecode', inputs: { samples: ['3', 0], vae: ['4', 2] } },
  '9': { class_type: 'SaveImage', inputs: { filename_prefix: 'sdxl', images: ['8', 0] } },
};
const SDXL_REFS = [
  { source: 'user', id: '123', nodeIds: ['10'] },
  { source: 'shared', name: 'style/film_grain.safetensors', nodeIds: ['11'] },
  { source: 'shared', name: 'add-detail-xl.safetensors', nodeIds: ['12'] },
];

describe('API format', () => {
  it('finds the user, shared and stock LoRAs of a real-looking SDXL workflow, bare or wrapped, without touching it', () => {
    const input = deepFreeze(structuredClone(SDXL));
    expect(scanWorkflow(input)).toEqual({ format: 'api', refs: SDXL_REFS, problems: [] });
    expect(input).toEqual(SDXL);
    // The same inside ComfyUI's POST /prompt body, and inside a { workflow } wrapper.
    expect(scanWorkflow({ prompt: SDXL, client_id: 'abc', extra_data: { extra_pnginfo: {} } }).refs).toEqual(SDXL_REFS);
    expect(scanWorkflow({ workflow: SDXL }).refs).toEqual(SDXL_REFS);
  });

  it('merges one LoRA used by several nodes, in first-seen order, whatever the spelling; lora_identifier wins', () => {
    const scan = scanWorkflow({
      '1': lora({ lora_name: 'a\\b.safetensors' }, 'LoraLoaderModelOnly'),
      '2': lora({ lora_source: 'user', lora_identifier: 7 }),
      '3': lora({ lora_source: 'user', lora_identifier: ' 7 ' }),
      '4': lora({ lora_source: 'shared', lora_identifier: 'a/b.safetensors', lora_name: 'legacy-leftover.safetensors' }),
      '5': lora({ lora_source: 'user', lora_id: '7' }),
      '6': lora({ lora_source: 'shared', lora_identifier: '', lora_name: 'a/b.safetensors' }),
    });
    expect(scan.refs).toEqual([
      { source: 'shared', name: 'a/b.safetensors', nodeIds: ['1', '4', '6'] },
      { source: 'user', id: '7', nodeIds: ['2', '3', '5'] },
    ]);
    expect(scan.problems).toEqual([]);
  });

  it('reports linked inputs and unknown sources as problems, and treats "None" or empty as no LoRA', () => {
    const scan = scanWorkflow({
      '1': lora({ lora_source: 'user', lora_identifier: ['20', 0] }),
      '2': lora({ lora_source: ['21', 0], lora_identifier: '5' }),
      '3': lora({ lora_name: ['22', 0] }, 'LoraLoader'),
      '4': lora({ lora_source: 'private', lora_identifier: '5' }),
      '5': lora({ lora_source: 'user' }),
      '6': lora({ lora_name: 'None' }, 'LoraLoader'),
      '7': lora({ lora_source: 'shared', lora_identifier: '' }),
      '8': lora({ lora_name: '' }),
      '9': 'not a node',
    });
    expect(scan.refs).toEqual([]);
    expect(scan.problems.map((p) => p.nodeId)).toEqual(['1', '2', '3', '4', '5', '9']);
    expect(scan.problems[0]?.message).toMatch(/lora_identifier is linked/);
    expect(scan.problems[3]?.message).toMatch(/unknown lora_source "private"/);
  });

  it('keeps __proto__ and constructor as plain node ids and ignores inherited inputs', () => {
    const text =
      '{"__proto__":{"class_type":"LoraLoader","inputs":{"lora_name":"p.safetensors"}},"constructor":{"class_type":"LoraLoader","inputs":{"__proto__":{"lora_name":"q"}}}}';
    const scan = scanWorkflow(JSON.parse(text));
    expect(scan.refs).toEqual([{ source: 'shared', name: 'p.safetensors', nodeIds: ['__proto__'] }]);
    expect(scanWorkflow({ '1': lora(Object.create({ lora_name: 'inherited.safetensors' }), 'LoraLoader') }).refs).toEqual([]);
  });
});

describe('node-list (UI) format', () => {
  const link = (name: string, id: number | null) => ({ name, type: 'STRING', widget: { name }, link: id });
  const ui = {
    nodes: [
      { id: 4, type: 'CheckpointLoaderSimple', mode: 0, widgets_values: ['sd_xl_base_1.0.safetensors'] },
      { id: 14, type: 'EmProps_Lora_Loader', inputs: [{ name: 'model', type: 'MODEL', link: 1 }], widgets_values: ['user', '123', 1, 1] },
      { id: 15, type: 'EmProps_Lora_Loader', mode: 0, widgets_values: ['style\\film_grain.safetensors', 0.6, 0.6] },
      { id: 16, type: 'LoraLoaderModelOnly', widgets_values: ['add-detail-xl.safetensors', 0.5] },
      { id: 17, type: 'EmProps_Lora_Loader', widgets_values: { lora_source: 'user', lora_identifier: 77 } },
      { id: 18, class_type: 'EmProps_Lora_Loader', inputs: { lora_source: 'user', lora_id: '123' } },
      { id: 19, type: 'LoraLoader', mode: 4, widgets_values: ['bypassed.safetensors', 1, 1] },
      { id: 20, type: 'EmProps_Lora_Loader', mode: 2, widgets_values: ['user', '999', 1, 1] },
      { id: 21, type: 'LoraLoader', inputs: [link('lora_name', 9)], widgets_values: ['stale.safetensors', 1, 1] },
      { id: 22, type: 'LoraLoader', inputs: [link('lora_name', null)], widgets_values: ['unlinked.safetensors', 1, 1] },
      { id: 23, type: 'EmProps_Lora_Loader', widgets_values: ['', 1, 1, 'user', '12a'] },
      42,
    ],
    links: [[1, 4, 0, 14, 0, 'MODEL']],
    definitions: { subgraphs: [{ id: 'sg-1', nodes: [{ id: 3, type: 'LoraLoader', widgets_values: ['inner.safetensors', 1, 1] }] }] },
  };

  it('reads positional, keyed and class_type widgets, skips muted and bypassed nodes', () => {
    const scan = scanWorkflow(deepFreeze(structuredClone(ui)));
    expect(scan.format).toBe('nodes');
    expect(scan.refs).toEqual([
      { source: 'user', id: '123', nodeIds: ['14', '18'] },
      { source: 'shared', name: 'style/film_grain.safetensors', nodeIds: ['15'] },
      { source: 'shared', name: 'add-detail-xl.safetensors', nodeIds: ['16'] },
      { source: 'user', id: '77', nodeIds: ['17'] },
      { source: 'shared', name: 'unlinked.safetensors', nodeIds: ['22'] },
      { source: 'shared', name: 'inner.safetensors', nodeIds: ['sg-1:3'] },
    ]);
    expect(scan.problems.map((p) => p.nodeId)).toEqual(['21', '23', 'nodes[11]']);
    expect(scan.problems[0]?.message).toMatch(/lora_name is linked/);
  });
});

const BAD_IDS: unknown[] = [-1, 0, 1.5, 2 ** 53, Number.NaN, true, null, {}, [1, 2, 3], '', '  '];
const BAD_NAMES: unknown[] = ['a\0b', 'a\nb', 'a\u202Eb', '\uD800x', 'x'.repeat(256), 'é'.repeat(128), 42];
const BAD_PATHS = '/etc/passwd ../x a/../../x ..\\..\\x \\\\srv\\share\\x C:\\x c:x a//b a/ ./a a/./b'.split(' ');
const NOT_WORKFLOWS: unknown[] = [null, undefined, 42, 'x', [SDXL], {}, { nodes: 'x' }, { prompt: {} }, Object.assign(new Map(), SDXL)];

describe('single-value checks', () => {
  it.each([123, '123', ' 123 ', '\t123\n', '9223372036854775807'])('id %j is kept, trimmed', (raw) => {
    const id = String(raw).trim();
    expect(normaliseLoraId(raw)).toBe(id);
    const { refs } = scanWorkflow({ '1': lora({ lora_source: 'user', lora_identifier: raw }) });
    expect(refs).toEqual([{ source: 'user', id, nodeIds: ['1'] }]);
  });

  it.each(BAD_IDS.concat('../x 12a 0 0123 1e3 +5 9223372036854775808'.split(' ')))('refuses id %j', (raw) => {
    expect(normaliseLoraId(raw)).toBeNull();
    const scan = scanWorkflow({ '1': lora({ lora_source: 'user', lora_identifier: raw }) });
    expect(scan.refs).toEqual([]);
    expect(scan.problems).toEqual([{ nodeId: '1', message: expect.stringMatching(/not a LoRA id/) }]);
  });

  it.each(['style/foo.safetensors', 'style\\foo.safetensors', 'Ünïcode LoRA v2.safetensors', 'é'.repeat(127)])('name %j is kept', (raw) => {
    const name = raw.replaceAll('\\', '/');
    expect(normaliseSharedName(raw)).toBe(name);
    expect(scanWorkflow({ '1': lora({ lora_name: raw }, 'LoraLoader') }).refs).toEqual([{ source: 'shared', name, nodeIds: ['1'] }]);
  });

  it.each(BAD_NAMES.concat(BAD_PATHS))('refuses name %j', (raw) => {
    expect(normaliseSharedName(raw)).toBeNull();
    const scan = scanWorkflow({ '1': lora({ lora_name: raw }, 'LoraLoader') });
    expect(scan.refs).toEqual([]);
    expect(scan.problems).toEqual([{ nodeId: '1', message: expect.stringMatching(/not a safe relative/) }]);
  });
});

describe('not a workflow', () => {
  const many = (n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [String(i), { class_type: 'KSampler', inputs: {} }]));
  it.each(NOT_WORKFLOWS)('refuses %o with INVALID_WORKFLOW', (value) => {
    expect(invalid(value)).toBe(true);
  });

  it('refuses more than 10,000 nodes in either format, accepts exactly 10,000', () => {
    expect(invalid(many(10_001))).toBe(true);
    expect(invalid({ nodes: Array.from({ length: 10_001 }, (_, id) => ({ id })) })).toBe(true);
    expect(scanWorkflow(many(10_000)).format).toBe('api');
  });
});

describe('properties', () => {
  const checkRefs = (refs: WorkflowLoraRef[]) => {
    expect(new Set(refKeys(refs)).size).toBe(refs.length);
    for (const ref of refs) {
      expect(ref.nodeIds.length).toBeGreaterThan(0);
      if (ref.source === 'user') expect(ref.id).toMatch(/^[1-9][0-9]*$/);
      else expect(ref.name.startsWith('/') || ref.name.includes('\0') || ref.name.split('/').includes('..')).toBe(false);
    }
  };

  it('never throws anything but INVALID_WORKFLOW on arbitrary values', () => {
    fc.assert(
      fc.property(fc.oneof(fc.jsonValue(), fc.anything()), (value) => {
        try {
          checkRefs(scanWorkflow(value).refs);
        } catch (error) {
          expect(error).toBeInstanceOf(AgentError);
          expect((error as AgentError).code).toBe('INVALID_WORKFLOW');
        }
      }),
      { numRuns: 500 },
    );
  });

  it('returns only valid ids and safe names for loader nodes full of hostile inputs', () => {
    const keys = fc.constantFrom('lora_source', 'lora_identifier', 'lora_id', 'lora_name', '__proto__');
    const traps = fc.constantFrom('user', 'shared', 'None', '..', '../a', '/a', 'a\\..\\b', ' 1 ', ['1', 0]);
    const hostile = fc.oneof(traps, fc.string({ unit: 'binary' }), fc.jsonValue());
    const node = fc.record({ class_type: fc.constantFrom(...TYPES), inputs: fc.dictionary(keys, hostile) });
    fc.assert(
      fc.property(fc.dictionary(fc.string(), node, { minKeys: 1 }), (workflow) => {
        const scan = scanWorkflow(workflow);
        checkRefs(scan.refs);
        expect(scan.refs.length + scan.problems.length).toBeLessThanOrEqual(Object.keys(workflow).length);
      }),
    );
  });

  const userPlant = fc.tuple(fc.bigInt({ min: 1n, max: MAX_INT8 }), fc.nat(5)).map(([id, v]) => {
    const value = v > 3 && id <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(id) : v > 1 ? ` ${id} ` : String(id);
    return { key: `user:${id}`, type: TYPES[0], inputs: { lora_source: 'user', [v % 2 ? 'lora_identifier' : 'lora_id']: value } };
  });
  const segment = fc.stringMatching(/^[A-Za-z0-9_][A-Za-z0-9_ .()-]{0,24}$/);
  const sharedPlant = fc
    .tuple(fc.array(segment, { minLength: 1, maxLength: 3 }), fc.nat(5))
    .filter(([segments]) => !['None', 'user', 'shared'].includes(segments.join('/').trim()))
    .map(([segments, v]) => {
      const name = segments.join(v % 2 ? '\\' : '/');
      const type = TYPES[v % 3];
      const inputs = type === TYPES[0] && v > 2 ? { lora_source: 'shared', lora_identifier: name } : { lora_name: name };
      return { key: `shared:${segments.join('/')}`, type, inputs };
    });

  it('finds exactly the planted references, in both formats', () => {
    fc.assert(
      fc.property(fc.array(fc.oneof(userPlant, sharedPlant), { maxLength: 12 }), fc.boolean(), (plants, asUi) => {
        const expected = new Map<string, string[]>();
        for (const [i, p] of plants.entries()) expected.set(p.key, [...(expected.get(p.key) ?? []), String(i + 1)]);
        const nodes = plants.map((p, i) => ({ id: i + 1, type: p.type, mode: 0, widgets_values: Object.values(p.inputs) }));
        const api = Object.fromEntries(plants.map((p, i) => [String(i + 1), { class_type: p.type, inputs: p.inputs }]));
        const filler = { class_type: 'KSampler', type: 'KSampler', inputs: { ...SAMPLER }, widgets_values: Object.values(SAMPLER) };
        const scan = scanWorkflow(asUi ? { nodes: [...nodes, { id: 99, ...filler }] } : { ...api, '99': filler });
        expect(scan.problems).toEqual([]);
        expect(refKeys(scan.refs)).toEqual([...expected.keys()]);
        expect(scan.refs.map((r) => r.nodeIds)).toEqual([...expected.values()]);
      }),
    );
  });
});
