import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Topic, type UploadProgress } from '../../server/events/bus.ts';
import { SNIFF_BYTES, sniffFormat } from '../../server/formats/sniff.ts';
import { blobsOf } from '../testkit/invariants.ts';
import { listLoras, setUserLoraQuota } from '../testkit/library-helpers.ts';
import { BAD_SAFETENSORS, makeLora, sdxlLora } from '../testkit/lora-files.ts';
import { newUploadId, postMultipart } from '../testkit/multipart.ts';
import { BAD_PT_FILES, benignLegacyPt, benignTorchZipLora } from '../testkit/pt-files.ts';
import { makeSafetensors } from '../testkit/safetensors.ts';
import { eventually, newUserId } from '../testkit/seed.ts';
import { startTestServer, type TestServer } from '../testkit/server.ts';
import { expectNothingStored } from '../testkit/stored.ts';

/** uploadLora over real multipart HTTP into real Azurite (THREATS.md rows 1–3, 5–8, 12–13). */

const MAX_UPLOAD = 4 * 1024 * 1024;
let server: TestServer;
beforeAll(async () => {
  // 50 concurrent uploads by one user below: above the default per-user cap (upload-limits.test.ts)
  server = await startTestServer({ MAX_UPLOAD_BYTES: String(MAX_UPLOAD), UPLOAD_CONCURRENCY_PER_USER: '64' });
});
afterAll(() => server?.stop());

async function user() {
  const id = newUserId();
  return { id, token: await server.tokens.user(id) };
}

async function upload(token: string | null, file: Buffer, variables: Record<string, unknown> = {}, filename = 'style.safetensors') {
  return postMultipart({ url: server.graphqlUrl, token, file, filename, variables });
}

describe('uploadLora: a valid file', () => {
  it('stores exactly the bytes, hashes them, extracts metadata and charges the quota', async () => {
    const { id, token } = await user();
    const file = sdxlLora('kohya');
    const res = await upload(token, file, { tags: ['style', 'Style', 'lora'] }, '../../etc/\u202Egnp.safetensors');
    expect(res.status).toBe(200);
    const result = res.body.data.uploadLora;
    expect(result.__typename, JSON.stringify(result)).toBe('UploadLoraSuccess');
    const sha = createHash('sha256').update(file).digest('hex');
    expect(result.lora).toMatchObject({
      format: 'SAFETENSORS',
      sizeBytes: file.length,
      sha256: sha,
      tags: ['style'],
      status: 'READY',
      metadata: { baseModel: 'SDXL', baseModelSource: 'METADATA', rank: 4 },
    });
    expect(result.lora.fileName).toBe('gnp.safetensors');
    expect(result.lora.name).toBe('gnp');
    expect(result.quota).toMatchObject({ usedStorageBytes: file.length, loraCount: 1 });

    const row = await server.app.db.lora.findUniqueOrThrow({ where: { file_id: BigInt(result.lora.id) } });
    // a neutral name (issue 17: stored content may be shared) and the LoRA's own snapshot of it
    expect(row.blob_path).toMatch(/^content\/[0-9a-f-]{36}\.safetensors$/);
    expect(row.blob_snapshot).toBeTruthy();
    const stored = await server.app.blobs.read(row.blob_path);
    expect(stored.equals(file)).toBe(true);
    const ff = await server.app.db.flat_file.findUniqueOrThrow({ where: { id: BigInt(result.lora.id) } });
    expect(ff).toMatchObject({ hidden: false, user_id: id, tags: ['lora', 'style'] });
    const out = ff.gen_out_data as Record<string, unknown>;
    expect(out).toMatchObject({
      size_bytes: file.length,
      file_hash: `sha256:${sha}`,
      validation_status: 'safe',
      upload_source: 'api',
      civitai_autov2_hash: sha.slice(0, 10),
    });
    const headerLength = Number(file.readBigUInt64LE(0));
    const autoV3 = createHash('sha256')
      .update(file.subarray(8 + headerLength))
      .digest('hex');
    expect(out.civitai_autov3_hash).toBe(autoV3);
    expect(result.lora).toMatchObject({ autoV2: sha.slice(0, 10), autoV3 });

    const listed = await listLoras(server, token);
    expect(listed.total).toBe(1);
    expect(listed.loras.map((l) => l.id)).toEqual([result.lora.id]);
  });

  it('publishes progress RECEIVING → VALIDATING → STORING → DONE with the LoRA id', async () => {
    const { token } = await user();
    const uploadId = newUploadId();
    const events: UploadProgress[] = [];
    const iterator = server.app.bus.subscribe(Topic.UPLOAD_PROGRESS, uploadId)[Symbol.asyncIterator]();
    const collecting = (async () => {
      for (;;) {
        const next = await iterator.next();
        if (next.done) return;
        events.push(next.value);
        if (next.value.phase === 'DONE' || next.value.phase === 'FAILED') return;
      }
    })();
    const file = makeLora('SD1', 'modelspec');
    const res = await upload(token, file, { uploadId, sizeBytes: file.length });
    await collecting;
    await iterator.return?.();
    const phases = events.map((e) => e.phase).filter((p, i, all) => all[i - 1] !== p);
    expect(phases).toEqual(['RECEIVING', 'VALIDATING', 'STORING', 'DONE']);
    expect(events.at(-1)).toMatchObject({ loraId: res.body.data.uploadLora.lora.id, bytesReceived: file.length, totalBytes: file.length });
  });
});

describe('uploadLora: bad files are refused by content, and nothing is stored', () => {
  const cases = BAD_SAFETENSORS.filter((b) => b.sniffedAs === 'safetensors');
  it.each(cases.map((c) => [c.name, c] as const))('%s', async (_name, bad) => {
    const { id, token } = await user();
    const res = await upload(token, Buffer.from(bad.bytes));
    const result = res.body?.data?.uploadLora;
    expect(result, res.text).toMatchObject({ __typename: 'InvalidFileError', code: 'INVALID_FILE_FORMAT', detectedFormat: 'safetensors' });
    expect(result.reason).toMatch(bad.reasonMatches);
    await expectNothingStored(server.app, id);
  });

  it.each([
    ['a PNG', Buffer.from('89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489', 'hex'), 'png'],
    ['an empty file', Buffer.alloc(0), 'empty'],
    ['a text file', Buffer.from('hello, I am definitely a LoRA\n'), 'text'],
  ])('%s named .safetensors', async (_name, bytes, detected) => {
    const { id, token } = await user();
    const res = await upload(token, bytes);
    expect(res.body.data.uploadLora).toMatchObject({ __typename: 'InvalidFileError', detectedFormat: detected });
    await expectNothingStored(server.app, id);
  });
});

describe('uploadLora: limits', () => {
  it('a file over the limit is FILE_TOO_LARGE (counted by us) and nothing is committed', async () => {
    const { id, token } = await user();
    const file = makeSafetensors([{ name: 'w', shape: [MAX_UPLOAD / 4 + 16], dtype: 'F32' }]);
    expect(file.length).toBeGreaterThan(MAX_UPLOAD);
    const res = await upload(token, file);
    expect(res.body.data.uploadLora).toMatchObject({ __typename: 'FileTooLargeError', code: 'FILE_TOO_LARGE', maxBytes: MAX_UPLOAD });
    await expectNothingStored(server.app, id);
  });

  it('a declared size over the limit or the quota is refused at once, without reading the body', async () => {
    const { id, token } = await user();
    await setUserLoraQuota(server, { userId: id, maxStorageBytes: 1000 });
    const big = Buffer.alloc(3 * 1024 * 1024, 7);
    const started = Date.now();
    const overQuota = await upload(token, big, { sizeBytes: 3 * 1024 * 1024 });
    expect(overQuota.body.data.uploadLora).toMatchObject({ __typename: 'QuotaExceededError', maxQuotaBytes: 1000, currentUsageBytes: 0 });
    const overLimit = await upload(token, big, { sizeBytes: MAX_UPLOAD + 1 });
    expect(overLimit.body.data.uploadLora).toMatchObject({ __typename: 'FileTooLargeError' });
    expect(Date.now() - started).toBeLessThan(5_000);
    await expectNothingStored(server.app, id);
  });

  it('refuses a multipart request without the CSRF header, and one without a token', async () => {
    const { id, token } = await user();
    const file = sdxlLora();
    const noCsrf = await postMultipart({ url: server.graphqlUrl, token, file, csrf: false });
    expect(noCsrf.status).toBe(403);
    const anonymous = await upload(null, file);
    expect(anonymous.body.errors?.[0]?.extensions?.code).toBe('UNAUTHENTICATED');
    await expectNothingStored(server.app, id);
  });
});

describe('uploadLora: malformed multipart requests are 4xx, never 500, and pollute nothing', () => {
  const ops = JSON.stringify({ query: 'mutation($file: Upload!) { uploadLora(file: $file) { __typename } }', variables: { file: null } });
  const part = (name: string, value: string) => `--XBOUNDARY\r\nContent-Disposition: form-data; name="${name}"\r\n\r\n${value}\r\n`;
  it.each([
    ['map before operations', part('map', '{"0":["variables.file"]}') + part('operations', ops)],
    ['operations not JSON', part('operations', '{nope') + part('map', '{"0":["variables.file"]}')],
    ['map path __proto__', part('operations', ops) + part('map', '{"0":["__proto__.polluted"]}')],
    ['map path constructor.prototype', part('operations', ops) + part('map', '{"0":["constructor.prototype.polluted"]}')],
    ['map path into nothing', part('operations', ops) + part('map', '{"0":["variables.nope.deeper"]}')],
    ['operations over 1 MB', part('operations', JSON.stringify({ query: `{ __typename } #${'x'.repeat(1_100_000)}` })) + part('map', '{}')],
    ['two files', part('operations', ops) + part('map', '{"0":["variables.file"],"1":["variables.other"]}')],
  ])('%s', async (_name, rawPreamble) => {
    const { id, token } = await user();
    const res = await postMultipart({ url: server.graphqlUrl, token, file: sdxlLora(), rawPreamble });
    expect(res.status, res.text).toBeGreaterThanOrEqual(400);
    expect(res.status, res.text).toBeLessThan(500);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect(Object.prototype).not.toHaveProperty('polluted');
    await expectNothingStored(server.app, id);
  });
});

describe('uploadLora: interruptions and concurrency', () => {
  it('a client that disconnects halfway leaves nothing and the progress ends FAILED', async () => {
    const { id, token } = await user();
    const uploadId = newUploadId();
    const phases: string[] = [];
    const iterator = server.app.bus.subscribe(Topic.UPLOAD_PROGRESS, uploadId)[Symbol.asyncIterator]();
    const watching = (async () => {
      for (;;) {
        const next = await iterator.next();
        if (next.done) return;
        phases.push(next.value.phase);
        if (next.value.phase === 'FAILED' || next.value.phase === 'DONE') return;
      }
    })();
    const file = makeSafetensors([{ name: 'w', shape: [1024 * 1024], dtype: 'F16' }]);
    const res = await postMultipart({ url: server.graphqlUrl, token, file, variables: { uploadId }, abortAfterBytes: 1024 * 1024 });
    expect(res.aborted).toBe(true);
    await watching;
    await iterator.return?.();
    expect(phases.at(-1)).toBe('FAILED');
    await eventually(async () => (await server.app.db.flat_file.count({ where: { user_id: id } })) === 0, 10_000, 'rows removed');
    await expectNothingStored(server.app, id);
  });

  it('50 concurrent uploads against a quota of 10 LoRAs: exactly 40 fail, usage never exceeds the limit', async () => {
    const { id, token } = await user();
    await setUserLoraQuota(server, { userId: id, maxLoraCount: 10 });
    const files = Array.from({ length: 50 }, (_, i) => makeLora('SD1', 'kohya', { extra: { ss_output_name: `n${i}` } }));
    const results = await Promise.all(files.map((f) => upload(token, f)));
    const kinds = results.map((r) => r.body?.data?.uploadLora?.__typename ?? r.text);
    expect(kinds.filter((k) => k === 'UploadLoraSuccess')).toHaveLength(10);
    expect(
      kinds.filter((k) => k === 'QuotaExceededError'),
      JSON.stringify(kinds.filter((k) => k !== 'QuotaExceededError')),
    ).toHaveLength(40);
    const quota = await server.app.db.user_lora_quota.findUniqueOrThrow({ where: { user_id: id } });
    expect(quota.lora_count).toBe(10);
    expect(await server.app.db.lora.count({ where: { user_id: id } })).toBe(10);
    expect(await blobsOf(server.app, id)).toHaveLength(10);
    // the list's total (read from the quota counter) agrees with the rows
    const listed = await listLoras(server, token);
    expect(listed.total).toBe(10);
    expect(listed.loras).toHaveLength(10);
  }, 60_000);
});

describe('uploadLora: PyTorch files are scanned, never unpickled', () => {
  it.each([
    ['a torch zip state dict', () => benignTorchZipLora()],
    ['a legacy torch file', () => benignLegacyPt()],
  ])('%s is accepted as PT, byte for byte', async (_name, build) => {
    const { token } = await user();
    const file = build();
    const res = await upload(token, file, {}, 'model.pt');
    const result = res.body.data.uploadLora;
    expect(result.__typename, JSON.stringify(result)).toBe('UploadLoraSuccess');
    expect(result.lora).toMatchObject({ format: 'PT', sizeBytes: file.length, sha256: createHash('sha256').update(file).digest('hex') });
    const row = await server.app.db.lora.findUniqueOrThrow({ where: { file_id: BigInt(result.lora.id) } });
    expect(row.blob_path).toMatch(/^content\/[0-9a-f-]{36}\.pt$/);
    expect((await server.app.blobs.read(row.blob_path)).equals(file)).toBe(true);
  });

  it.each(BAD_PT_FILES.map((f) => [f.name, f] as const))('%s', async (_name, bad) => {
    const { id, token } = await user();
    const res = await upload(token, Buffer.from(bad.bytes), {}, 'model.pt');
    const result = res.body?.data?.uploadLora;
    expect(result?.code, res.text).toBe(bad.expect);
    const sniffed = sniffFormat(bad.bytes.subarray(0, SNIFF_BYTES));
    if (sniffed.kind === 'unknown') {
      // not PyTorch by its first bytes (a PNG, an empty zip): refused before any scanning
      expect(result).toMatchObject({ detectedFormat: sniffed.detected });
    } else {
      expect(bad.expect === 'UNSAFE_FILE' ? JSON.stringify(result.findings) : result.reason).toMatch(bad.matches);
    }
    await expectNothingStored(server.app, id);
  });

  it('leaves no spooled temp file behind, whatever the outcome', async () => {
    const { readdir } = await import('node:fs/promises');
    const { join } = await import('node:path');
    const spool = join(server.app.config.dataDir, 'spool');
    const files = await readdir(spool).catch(() => []);
    expect(files.filter((f) => f.startsWith('upload-'))).toEqual([]);
  });
});
