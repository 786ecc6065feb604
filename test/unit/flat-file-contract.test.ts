import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  CLIENT_UPLOAD_SOURCES,
  type GenOutDataSource,
  loraGenOutData,
  storedUploadSource,
  UploadSource,
  ValidationStatus,
} from '../../server/domain/flat-file-contract.ts';
import { resolutionFromMetadata } from '../../server/formats/lora-metadata.ts';

/** flat_file.gen_out_data of LoRA rows: the seed's shape (docs/flat-file.md). */

const SHA = 'ab'.repeat(32);
const AUTOV3 = 'cd'.repeat(32);

function lora(overrides: Partial<GenOutDataSource['metadata']> = {}, top: Partial<GenOutDataSource> = {}): GenOutDataSource {
  return {
    sizeBytes: 456123789,
    sha256: SHA,
    format: 'SAFETENSORS',
    autoV3: AUTOV3,
    metadata: {
      baseModel: 'SDXL',
      rank: 32,
      alpha: 16,
      networkModule: 'networks.lora',
      triggerWords: ['anime style'],
      trainingEpochs: 10,
      trainingImages: 50,
      raw: { 'modelspec.resolution': '1024x1024', ss_network_dim: '32' },
      ...overrides,
    },
    ...top,
  };
}

function keysOf(value: unknown, prefix = ''): string[] {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return [];
  return Object.entries(value).flatMap(([k, v]) => [prefix + k, ...keysOf(v, `${prefix + k}.`)]);
}

describe('loraGenOutData', () => {
  it("writes the seed's example shape, with our extras under snake_case names", () => {
    expect(loraGenOutData(lora(), { uploadSource: UploadSource.EMPROPS_STUDIO, validationStatus: ValidationStatus.SAFE })).toEqual({
      size_bytes: 456123789,
      file_hash: `sha256:${SHA}`,
      file_format: 'safetensors',
      civitai_autov2_hash: SHA.slice(0, 10),
      civitai_autov3_hash: AUTOV3,
      lora_metadata: {
        base_model: 'SDXL',
        rank: 32,
        trigger_words: ['anime style'],
        training_epochs: 10,
        training_images: 50,
        alpha: 16,
        network_module: 'networks.lora',
        resolution: '1024x1024',
      },
      upload_source: 'emprops_studio',
      validation_status: 'safe',
    });
  });

  it('a .pt file: nulls where nothing is known, never undefined (the JSON keeps every key)', () => {
    const out = loraGenOutData(
      lora(
        {
          baseModel: 'UNKNOWN',
          rank: null,
          alpha: null,
          networkModule: null,
          triggerWords: [],
          trainingEpochs: null,
          trainingImages: null,
          raw: null,
        },
        { format: 'PT', autoV3: null, sizeBytes: 1234 },
      ),
      { uploadSource: UploadSource.API, validationStatus: ValidationStatus.SAFE },
    );
    expect(out).toMatchObject({ size_bytes: 1234, file_format: 'pt', civitai_autov3_hash: null, upload_source: 'api' });
    expect(out.lora_metadata).toEqual({
      base_model: 'UNKNOWN',
      rank: null,
      trigger_words: [],
      training_epochs: null,
      training_images: null,
      alpha: null,
      network_module: null,
      resolution: null,
    });
    expect(JSON.parse(JSON.stringify(out))).toEqual(out);
  });

  it('every key is snake_case and the file hash is sha256:<64 lower-case hex>, whatever the facts', () => {
    const hex = fc.stringMatching(/^[0-9a-f]{64}$/);
    fc.assert(
      fc.property(
        hex,
        fc.nat({ max: 2 ** 31 }),
        fc.option(fc.nat({ max: 4096 })),
        fc.array(fc.string({ maxLength: 20 }), { maxLength: 5 }),
        fc.dictionary(fc.string({ maxLength: 20 }), fc.string({ maxLength: 20 })),
        fc.constantFrom(...CLIENT_UPLOAD_SOURCES),
        (sha, size, rank, words, raw, source) => {
          const out = loraGenOutData(lora({ rank, triggerWords: words, raw }, { sha256: sha.toUpperCase(), sizeBytes: size }), {
            uploadSource: source,
            validationStatus: ValidationStatus.SAFE,
          });
          for (const key of keysOf(out)) expect(key).toMatch(/^[a-z0-9_]+(?:\.[a-z0-9_]+)*$/);
          expect(out.file_hash).toBe(`sha256:${sha}`);
          expect(out.size_bytes).toBe(size);
          expect(out.lora_metadata.trigger_words).toEqual(words);
        },
      ),
    );
  });

  it('refuses what is not a sha256 or a byte count (a row must never carry a malformed hash)', () => {
    const options = { uploadSource: UploadSource.API, validationStatus: ValidationStatus.SAFE };
    expect(() => loraGenOutData(lora({}, { sha256: 'abc' }), options)).toThrow(/sha256/);
    expect(() => loraGenOutData(lora({}, { sizeBytes: -1 }), options)).toThrow(/size/);
    expect(() => loraGenOutData(lora({}, { sizeBytes: 1.5 }), options)).toThrow(/size/);
  });
});

describe('storedUploadSource (what rows written before this contract become)', () => {
  it('keeps a known source, and reads the old "graphql-upload" and anything unknown as api', () => {
    expect(storedUploadSource('emprops_studio')).toBe('emprops_studio');
    expect(storedUploadSource('resumable')).toBe('resumable');
    expect(storedUploadSource('api')).toBe('api');
    expect(storedUploadSource('graphql-upload')).toBe('api');
    expect(storedUploadSource('test-seed')).toBe('api');
    expect(storedUploadSource(undefined)).toBe('api');
    expect(storedUploadSource(42)).toBe('api');
  });

  it('clients may name Studio or api, never resumable (the server-side direct-to-storage path)', () => {
    expect([...CLIENT_UPLOAD_SOURCES].sort()).toEqual(['api', 'emprops_studio']);
  });
});

describe('resolutionFromMetadata', () => {
  it.each([
    [{ 'modelspec.resolution': '1024x1024' }, '1024x1024'],
    [{ 'modelspec.resolution': ' 832 x 1216 ' }, '832x1216'],
    [{ ss_resolution: '(512, 768)' }, '512x768'],
    [{ ss_resolution: '512,512' }, '512x512'],
    [{ ss_resolution: '768' }, '768x768'],
    [{ 'modelspec.resolution': '1024x1024', ss_resolution: '(512, 512)' }, '1024x1024'],
    [{ ss_resolution: 'large' }, null],
    [{ ss_resolution: '0x512' }, null],
    [{ ss_resolution: '99999999x2' }, null],
    [{}, null],
  ])('%j → %s', (metadata, expected) => {
    expect(resolutionFromMetadata(metadata as Record<string, string>)).toBe(expected);
  });

  it('never throws and reads no inherited key', () => {
    fc.assert(
      fc.property(fc.dictionary(fc.string(), fc.string()), (m) => {
        const r = resolutionFromMetadata(m);
        expect(r === null || /^[1-9][0-9]{0,4}x[1-9][0-9]{0,4}$/.test(r)).toBe(true);
      }),
    );
    expect(resolutionFromMetadata(Object.create({ ss_resolution: '512' }))).toBeNull();
  });
});
