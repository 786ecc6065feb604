import pg from 'pg';
import { expect } from 'vitest';

/**
 * What the rest of EmProps runs against `flat_file`, copied from the seed as written (see
 * docs/flat-file.md), and an independent check of the `gen_out_data` shape LoRA rows must carry.
 * Deliberately not built from the server's own code: these are the platform's expectations.
 */

/** The seed's "a user's LoRAs". */
export const SEED_USER_LORAS = `SELECT * FROM flat_file WHERE user_id = $1 AND 'lora' = ANY(tags) AND hidden = false`;

/** The seed's storage per user. */
export const SEED_USER_STORAGE = `SELECT SUM((gen_out_data->>'size_bytes')::bigint) FROM flat_file WHERE user_id = $1 AND 'lora' = ANY(tags) AND hidden = false`;

export interface PlatformView {
  /** flat_file ids (= LoRA ids) and names the platform sees, sorted by id. */
  loras: { id: string; name: string }[];
  /** The SUM as PostgreSQL returns it (null when the user has no visible LoRA). */
  storage: string | null;
}

/** Runs the seed's two queries, as written, over a plain node-postgres connection. */
export async function platformView(databaseUrl: string, userId: string): Promise<PlatformView> {
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    const loras = await client.query<{ id: string; name: string }>(SEED_USER_LORAS, [userId]);
    const storage = await client.query<{ sum: string | null }>(SEED_USER_STORAGE, [userId]);
    return {
      loras: loras.rows.map((r) => ({ id: String(r.id), name: r.name })).sort((a, b) => Number(BigInt(a.id) - BigInt(b.id))),
      storage: storage.rows[0]?.sum ?? null,
    };
  } finally {
    await client.end();
  }
}

const TOP_KEYS = [
  'size_bytes',
  'file_hash',
  'file_format',
  'civitai_autov2_hash',
  'civitai_autov3_hash',
  'lora_metadata',
  'upload_source',
  'validation_status',
].sort();
const METADATA_KEYS = [
  'base_model',
  'rank',
  'trigger_words',
  'training_epochs',
  'training_images',
  'alpha',
  'network_module',
  'resolution',
].sort();

const intOrNull = (v: unknown) => v === null || Number.isSafeInteger(v);
const numberOrNull = (v: unknown) => v === null || (typeof v === 'number' && Number.isFinite(v));
const stringOrNull = (v: unknown) => v === null || typeof v === 'string';

/** Fails unless `out` is a LoRA row's gen_out_data in the documented shape (docs/flat-file.md). */
export function expectSeedShape(out: unknown, facts: { sizeBytes: number; sha256: string }): void {
  const json = JSON.stringify(out);
  expect(typeof out === 'object' && out !== null && !Array.isArray(out), json).toBe(true);
  const o = out as Record<string, unknown>;
  expect(Object.keys(o).sort(), json).toEqual(TOP_KEYS);
  expect(o.size_bytes, json).toBe(facts.sizeBytes);
  expect(o.file_hash, json).toBe(`sha256:${facts.sha256}`);
  expect(['safetensors', 'pt'], json).toContain(o.file_format);
  expect(o.civitai_autov2_hash, json).toBe(facts.sha256.slice(0, 10));
  expect(o.civitai_autov3_hash === null || /^[0-9a-f]{64}$/.test(String(o.civitai_autov3_hash)), json).toBe(true);
  expect(['emprops_studio', 'api', 'resumable'], json).toContain(o.upload_source);
  expect(o.validation_status, json).toBe('safe');
  const m = o.lora_metadata as Record<string, unknown>;
  expect(Object.keys(m).sort(), json).toEqual(METADATA_KEYS);
  expect(stringOrNull(m.base_model) && intOrNull(m.rank) && intOrNull(m.training_epochs) && intOrNull(m.training_images), json).toBe(true);
  expect(numberOrNull(m.alpha) && stringOrNull(m.network_module) && stringOrNull(m.resolution), json).toBe(true);
  expect(Array.isArray(m.trigger_words) && (m.trigger_words as unknown[]).every((w) => typeof w === 'string'), json).toBe(true);
}
