import { execFileSync } from 'node:child_process';
import { existsSync, renameSync, writeFileSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { serverWithAgents } from '../testkit/agent.ts';
import { loraDownload, mintGrant } from '../testkit/grants.ts';
import { member } from '../testkit/graphql-assertions.ts';
import { postMultipart } from '../testkit/multipart.ts';
import { protoPolyglot, unicodeLinePolyglot } from '../testkit/polyglot.ts';
import { newUserId } from '../testkit/seed.ts';
import type { TestServer } from '../testkit/server.ts';

/**
 * A file that is valid safetensors and also a pickle (THREATS 28): stored, offered and cached only
 * under the extension of its detected format, whatever the user called it; a pickle prologue in
 * the header length that reads on into the header is refused.
 */

let server: TestServer;
const agents = serverWithAgents((started) => {
  server = started;
});

/** What Python's unpickler (torch.load's legacy path starts with it) makes of the file. */
async function unpickled(file: Buffer): Promise<string> {
  const path = join(await mkdtemp(join(tmpdir(), 'polyglot-')), 'x.pt');
  writeFileSync(path, file);
  return execFileSync('python3', ['-c', 'import pickle, sys; print(pickle.load(open(sys.argv[1], "rb")))', path], {
    encoding: 'utf8',
  }).trim();
}

async function uploadAs(userId: string, file: Buffer, filename: string) {
  const res = await postMultipart({ url: server.graphqlUrl, token: await server.tokens.user(userId), file, filename });
  return res.body.data.uploadLora;
}

describe('a safetensors/pickle polyglot uploaded as a .pt (THREATS 28)', () => {
  it('is stored, offered (Content-Disposition) and cached by the agent only as .safetensors', async () => {
    const file = unicodeLinePolyglot();
    expect(await unpickled(file)).toBe('5'); // the payload runs under pickle.load
    const userId = newUserId();
    const result = await uploadAs(userId, file, 'inkwash-style.pt');
    expect(result.__typename, JSON.stringify(result)).toBe('UploadLoraSuccess');
    expect(result.lora).toMatchObject({ format: 'SAFETENSORS', fileName: 'inkwash-style.pt' });
    const id: string = result.lora.id;

    const row = await server.app.db.lora.findUnique({ where: { file_id: BigInt(id) }, select: { blob_path: true } });
    expect(row?.blob_path).toMatch(/^content\/[0-9a-f-]{36}\.safetensors$/); // content is stored once, under a neutral name

    const grant = await mintGrant(server, userId);
    const dl = member(await loraDownload(server, await server.tokens.machine('polyglot'), id, grant), 'LoraDownload');
    expect(dl).toMatchObject({ fileName: 'inkwash-style.safetensors', format: 'SAFETENSORS' });
    const fetched = await fetch(dl.url);
    expect(fetched.status).toBe(200);
    expect(fetched.headers.get('content-disposition')).toBe('attachment; filename="inkwash-style.safetensors"');
    expect(Buffer.from(await fetched.arrayBuffer()).equals(file)).toBe(true);

    const agent = await agents.start();
    const ensured = await agent.ensure({ source: 'user', id, grant });
    expect(basename(ensured.path)).toBe(`${id}_inkwash-style.safetensors`);
    const model = agent.store.db.prepare('SELECT filename FROM models WHERE path = ?').get(ensured.path) as { filename: string };
    expect(model.filename).toBe(`${id}_inkwash-style.safetensors`);
  });

  it('a header length that opens a pickle reading on into the header (PROTO 4, UNICODE) is refused', async () => {
    const file = protoPolyglot();
    expect(await unpickled(file)).toBe('5');
    const userId = newUserId();
    const result = await uploadAs(userId, file, 'inkwash-style.safetensors');
    expect(result).toMatchObject({ __typename: 'InvalidFileError', code: 'INVALID_FILE_FORMAT', detectedFormat: 'safetensors' });
    expect(result.reason).toMatch(/pickle/);
    expect(await server.app.db.lora.count({ where: { user_id: userId } })).toBe(0);
  });

  it('a safetensors file an older agent cached under a pickle extension is renamed at start-up; rows and leases follow', async () => {
    const userId = newUserId();
    const result = await uploadAs(userId, unicodeLinePolyglot(), 'old-style.pt');
    const id: string = result.lora.id;
    const grant = await mintGrant(server, userId);
    const first = await agents.start();
    const cached = await first.ensure({ source: 'user', id, grant }, { lease: { holder: 'job-old' } });
    await first.stop();

    // What an older agent left: the file and its rows under the user's extension.
    const oldPath = cached.path.replace(/\.safetensors$/, '.pt');
    renameSync(cached.path, oldPath);
    const db = new Database(first.config.dbPath);
    db.prepare('UPDATE models SET path = ?, filename = ? WHERE path = ?').run(oldPath, basename(oldPath), cached.path);
    db.prepare('UPDATE lora_cache_entries SET path = ? WHERE path = ?').run(oldPath, cached.path);
    db.prepare('UPDATE lora_cache_leases SET path = ? WHERE path = ?').run(oldPath, cached.path);
    db.close();

    const again = await agents.start({ comfyDir: first.config.loraDir.replace(/\/models\/loras$/, '') });
    expect(existsSync(oldPath)).toBe(false);
    expect(existsSync(cached.path)).toBe(true);
    expect(again.health().cleanup).toMatchObject({ filesRenamed: 1 });
    expect(again.store.findUser(id)?.path).toBe(cached.path);
    const model = again.store.db.prepare('SELECT filename FROM models WHERE path = ?').get(cached.path) as { filename: string } | undefined;
    expect(model?.filename).toBe(basename(cached.path));
    expect(again.store.isLeased(cached.path, new Date())).toBe(true);
    expect(await again.ensure({ source: 'user', id, grant })).toMatchObject({ hit: true, path: cached.path });
  });
});
