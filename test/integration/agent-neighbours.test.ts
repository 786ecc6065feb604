import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, realpathSync, renameSync, symlinkSync, writeFileSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join, relative } from 'node:path';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import type { Agent } from '../../cache-agent/app.ts';
import { cliEnv, LORA_CACHE_BIN, serverWithAgents, type TestAgentOptions, userWithLoras } from '../testkit/agent.ts';
import { eventually } from '../testkit/seed.ts';
import type { TestServer } from '../testkit/server.ts';

/**
 * Issue 12: the agent beside ComfyUI and the Python nodes (stakeordie/emprops_comfy_nodes). Every
 * Python side here is a real python3 process writing model_cache.db as `db/model_cache.py` and
 * `db/init_db.py` do (test/testkit/model_cache_writer.py), and ComfyUI's LoRA list is computed the
 * way folder_paths does (test/testkit/comfy_listing.py).
 */

let server: TestServer;
const agents = serverWithAgents((started) => {
  server = started;
});
const GiB = 1024 ** 3;
const WRITER = join(import.meta.dirname, '../testkit/model_cache_writer.py');
const LISTING = join(import.meta.dirname, '../testkit/comfy_listing.py');

const newComfy = () => mkdtemp(join(tmpdir(), 'lora-comfy-'));
const dbOf = (comfy: string) => join(comfy, 'custom_nodes/emprops_comfy_nodes/db/model_cache.db');
const agentIn = (comfy: string, options: TestAgentOptions = {}) => agents.start({ comfyDir: comfy, ...options });

/** The Python writer: `python3 model_cache_writer.py <command> <db> …`; its stdout (JSON commands parsed). */
function python(command: string, db: string, ...args: string[]): any {
  const out = execFileSync('python3', [WRITER, command, db, ...args], { encoding: 'utf8', env: { ...process.env } });
  return ['row', 'lru', 'touch'].includes(command) ? JSON.parse(out) : out;
}

/** What an older agent's index looked like: the rows of `from` (models and lora_cache_entries) at `to`. */
function repath(db: string, from: string, to: string): void {
  const script =
    'import sqlite3,sys\nc=sqlite3.connect(sys.argv[1])\nfor t in ("models","lora_cache_entries"): c.execute(f"UPDATE {t} SET path=? WHERE path=?", (sys.argv[3], sys.argv[2]))\nc.commit()';
  execFileSync('python3', ['-c', script, db, from, to]);
}

function comfyListing(comfy: string, resolve: string[] = []): { list: string[]; resolved: Record<string, string | null> } {
  const roots = [join(comfy, 'models/loras'), join(comfy, 'output/loras')];
  return JSON.parse(execFileSync('python3', [LISTING, ...roots, '--resolve', ...resolve], { encoding: 'utf8' }));
}

function place(path: string, bytes: Buffer): void {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, bytes);
}

async function sharedInLibrary(size: number, prefix = 'n'): Promise<{ name: string; bytes: Buffer }> {
  const name = `${prefix}-${randomBytes(4).toString('hex')}.safetensors`;
  const bytes = randomBytes(size);
  await server.app.blobs.putShared(name, bytes);
  return { name, bytes };
}

const capturingLogger = () => {
  const lines: string[] = [];
  return { lines, logger: pino({ level: 'info' }, { write: (line: string) => void lines.push(line) }) };
};

describe('isolation: user LoRAs out of ComfyUI’s lists (issue 12.3, THREATS 27)', () => {
  it('ComfyUI’s loras listing (folder_paths’ recursive walk, links followed) never shows or resolves a user LoRA', async () => {
    const comfy = await newComfy();
    const agent = await agentIn(comfy);
    const { grant, loras } = await userWithLoras(server, [20_000]);
    const user = await agent.ensure({ source: 'user', id: loras[0]!.id, grant });
    const shared = await sharedInLibrary(10_000, 'style/ink');
    await agent.ensure({ source: 'shared', name: shared.name });

    const loraRoot = realpathSync(join(comfy, 'models/loras'));
    expect(relative(loraRoot, user.path).startsWith('..')).toBe(true);
    const tryNames = [
      relative(loraRoot, user.path), // ../lora-vault-users/…: re-rooted at "/" by get_full_path
      `users/${basename(dirname(user.path))}/${basename(user.path)}`, // where agents before issue 12 put it
      basename(user.path),
    ];
    const { list, resolved } = comfyListing(comfy, tryNames);
    expect(list).toContain(shared.name); // the shared LoRA, by its plain name
    expect(list.filter((n) => n.includes(`${loras[0]!.id}_`))).toEqual([]);
    expect(Object.values(resolved)).toEqual([null, null, null]);
  });

  it('a USER_LORA_DIR inside (or around) the loras folder is refused at start-up', async () => {
    const comfy = await newComfy();
    for (const dir of [join(comfy, 'models/loras/private'), join(comfy, 'output'), join(comfy, 'models')]) {
      await expect(agentIn(comfy, { env: { USER_LORA_DIR: dir } })).rejects.toThrow(/USER_LORA_DIR/);
    }
  });

  it('files an older agent left in models/loras/users/ and shared/ move (rows and leases too); files it did not write stay', async () => {
    const comfy = await newComfy();
    const loras = join(comfy, 'models/loras');
    const first = await agentIn(comfy);
    const { grant, loras: mine } = await userWithLoras(server, [15_000]);
    const user = await first.ensure({ source: 'user', id: mine[0]!.id, grant });
    const shared = await sharedInLibrary(12_000);
    const twin = await sharedInLibrary(11_000);
    await first.ensure({ source: 'shared', name: shared.name });
    await first.ensure({ source: 'shared', name: twin.name });
    await first.stop();
    // What an agent before issue 12 left: the same files and rows under users/ and shared/.
    const oldUser = join(loras, 'users', basename(dirname(user.path)), basename(user.path));
    const moves: [string, string][] = [
      [user.path, oldUser],
      [join(loras, shared.name), join(loras, 'shared', shared.name)],
      [join(loras, twin.name), join(loras, 'shared', twin.name)],
    ];
    for (const [from, to] of moves) {
      mkdirSync(dirname(to), { recursive: true });
      renameSync(from, to);
      repath(dbOf(comfy), from, to);
    }
    place(join(loras, twin.name), twin.bytes); // the fleet already has this one where it belongs
    // Files the agent never wrote: a Python-registered protected one and a stray one under shared/.
    const theirs = join(loras, 'shared', 'theirs.safetensors');
    const stray = join(loras, 'shared', 'stray.safetensors');
    place(theirs, randomBytes(500));
    place(stray, randomBytes(300));
    python('register', dbOf(comfy), theirs, 'loras', '1');

    const again = await agentIn(comfy);
    expect(again.health().cleanup).toMatchObject({ filesMigrated: 3 });
    expect(existsSync(oldUser)).toBe(false);
    const hit = await again.ensure({ source: 'user', id: mine[0]!.id, grant });
    expect(hit).toMatchObject({ hit: true, path: user.path });
    expect((await again.ensure({ source: 'shared', name: shared.name })).path).toBe(join(realpathSync(loras), shared.name));
    expect(readFileSync(join(loras, twin.name))).toEqual(twin.bytes);
    expect(existsSync(join(loras, 'shared', twin.name))).toBe(false); // ours was redundant: removed
    expect(again.store.findShared(twin.name)).toMatchObject({ owned: false });
    expect(again.core.downloads.started).toBe(0);
    expect(existsSync(theirs) && existsSync(stray)).toBe(true);
    expect(python('row', dbOf(comfy), theirs)).toMatchObject({ model_type: 'loras', protected: 1 });
  });
});

describe('shared LoRAs where the fleet keeps them (issue 12.4)', () => {
  it('a file the Python asset downloader already placed is reused after a size check: no second download, its row untouched, never deleted', async () => {
    const comfy = await newComfy();
    const loras = join(comfy, 'models/loras');
    const db = dbOf(comfy);
    python('init', db);
    const lib = await sharedInLibrary(30_000);
    const local = join(loras, lib.name);
    place(local, lib.bytes);
    python('register', db, realpathSync(local), 'loras');
    const before = python('row', db, realpathSync(local));

    const agent = await agentIn(comfy, { env: { LORA_CACHE_MAX_GB: '0' } });
    const ensured = await agent.ensure({ source: 'shared', name: lib.name });
    expect(ensured.path).toBe(realpathSync(local));
    expect(agent.core.downloads.started).toBe(0);
    expect((await agent.ensure({ source: 'shared', name: lib.name })).hit).toBe(true);

    // The fleet's workflows name it by lora_name; a name only this machine has is satisfied too.
    const onlyHere = `only-here-${randomBytes(3).toString('hex')}.safetensors`;
    place(join(loras, onlyHere), randomBytes(700));
    const workflow = {
      '1': { class_type: 'EmProps_Lora_Loader', inputs: { lora_name: lib.name, strength_model: 1, strength_clip: 1 } },
      '2': { class_type: 'LoraLoader', inputs: { lora_name: onlyHere, strength_model: 1, strength_clip: 1 } },
    };
    const prefetched = await agent.prefetch(workflow, null);
    expect(prefetched.items.map((i) => i.error ?? i.result?.path)).toEqual([realpathSync(local), realpathSync(join(loras, onlyHere))]);
    expect(agent.core.downloads.started).toBe(0);

    // Another file of another size under a library name: left as it is, the ensure fails clearly.
    const other = await sharedInLibrary(5_000);
    const otherBytes = randomBytes(4_000);
    place(join(loras, other.name), otherBytes);
    await expect(agent.ensure({ source: 'shared', name: other.name })).rejects.toMatchObject({ code: 'DOWNLOAD_FAILED' });
    expect(readFileSync(join(loras, other.name))).toEqual(otherBytes);

    // Eviction (cap 0), verify and a restart never remove or retype what the agent did not write.
    await agent.evict(false);
    writeFileSync(join(loras, onlyHere), randomBytes(701)); // changed by its owner
    await agent.verify();
    await agent.stop();
    await agentIn(comfy);
    expect(readFileSync(local)).toEqual(lib.bytes);
    expect(existsSync(join(loras, onlyHere))).toBe(true);
    expect(python('row', db, realpathSync(local))).toEqual(before);
  });
});

describe('a good neighbour of the Python nodes (issue 12.5, THREATS 34)', () => {
  it('start-up cleanup leaves Python’s files and rows alone: a protected file and files under shared/ stay, their rows keep their type', async () => {
    const comfy = await newComfy();
    const db = dbOf(comfy);
    python('init', db);
    const shared = join(comfy, 'models/loras/shared');
    const files = {
      protectedFile: join(shared, 'protected.safetensors'),
      placeholder: join(shared, 'placeholder.safetensors'), // empty, registered by Python
      unregistered: join(shared, 'style/unregistered.safetensors'),
      topLevel: join(comfy, 'models/loras/papercut.safetensors'),
    };
    place(files.protectedFile, randomBytes(2_000));
    place(files.placeholder, Buffer.alloc(0));
    place(files.unregistered, randomBytes(1_000));
    place(files.topLevel, randomBytes(1_500));
    python('register', db, files.protectedFile, 'loras', '1');
    python('register', db, files.placeholder, 'loras');
    python('register', db, files.topLevel, 'loras');
    const rows = Object.fromEntries(Object.entries(files).map(([k, p]) => [k, python('row', db, p)]));

    const agent = await agentIn(comfy);
    await agent.stop();
    await agentIn(comfy); // twice: nothing accumulates
    for (const [key, path] of Object.entries(files)) {
      expect({ key, exists: existsSync(path) }).toEqual({ key, exists: true });
      expect({ key, row: python('row', db, path) }).toEqual({ key, row: rows[key] });
    }
  });

  it('COMFYUI_DIR through a symlink names the same files: start-up deletes nothing and hits stay hits', async () => {
    const real = await newComfy();
    const link = `${real}-link`;
    symlinkSync(real, link);
    const first = await agentIn(real);
    const { grant, loras } = await userWithLoras(server, [14_000]);
    const user = await first.ensure({ source: 'user', id: loras[0]!.id, grant });
    const lib = await sharedInLibrary(9_000);
    const shared = await first.ensure({ source: 'shared', name: lib.name });
    await first.stop();

    for (const comfy of [link, real, link]) {
      const agent = await agentIn(comfy);
      expect(agent.health().cleanup).toMatchObject({ filesDropped: 0, rowsDropped: 0 });
      expect(await agent.ensure({ source: 'user', id: loras[0]!.id, grant })).toMatchObject({ hit: true, path: user.path });
      expect(await agent.ensure({ source: 'shared', name: lib.name })).toMatchObject({ hit: true, path: shared.path });
      expect(agent.core.downloads.started).toBe(0);
      await agent.stop();
    }
    expect(existsSync(user.path) && existsSync(shared.path)).toBe(true);
  });

  it('an index an agent wrote through a symlinked COMFYUI_DIR is respelled as real paths, files kept', async () => {
    const real = await newComfy();
    const link = `${real}-link`;
    symlinkSync(real, link);
    const first = await agentIn(real);
    const { grant, loras } = await userWithLoras(server, [13_000]);
    const user = await first.ensure({ source: 'user', id: loras[0]!.id, grant });
    await first.stop();
    const spelled = join(link, relative(realpathSync(real), user.path));
    repath(dbOf(real), user.path, spelled);
    const again = await agentIn(real);
    expect(again.health().cleanup).toMatchObject({ pathsResolved: 1, filesDropped: 0 });
    expect(await again.ensure({ source: 'user', id: loras[0]!.id, grant })).toMatchObject({ hit: true, path: user.path });
  });

  it('with no model_cache.db the daemon waits for init_db (and says so), never creating the nodes’ folder; their static models stay protected', async () => {
    const comfy = await newComfy();
    const staticModel = join(comfy, 'models/checkpoints/base.safetensors');
    place(staticModel, randomBytes(100));
    const staticJson = join(comfy, 'static-models.json');
    writeFileSync(staticJson, JSON.stringify({ no_index: [{ path: staticModel }] }));
    const env = { ...(await cliEnv(server, comfy)), MODEL_CACHE_DB_CREATE: 'false', AGENT_PORT: '0', LOG_LEVEL: 'info' };
    const daemon = spawn(process.execPath, [LORA_CACHE_BIN, 'start'], { env });
    let out = '';
    daemon.stdout.on('data', (d) => (out += d));
    daemon.stderr.on('data', (d) => (out += d));
    const exited = new Promise<number | null>((resolve) => daemon.on('exit', resolve));
    try {
      await eventually(async () => out.includes('waiting for model_cache.db'), 20_000, 'the waiting log line');
      await new Promise((r) => setTimeout(r, 1500));
      expect(existsSync(join(comfy, 'custom_nodes'))).toBe(false);
      expect(out).not.toContain('cache agent started');

      execFileSync('python3', [WRITER, 'init', dbOf(comfy)], { env: { ...process.env, STATIC_MODELS: staticJson } });
      await eventually(async () => out.includes('cache agent started'), 20_000, 'the agent to start');
      expect(python('row', dbOf(comfy), staticModel)).toMatchObject({ protected: 1, is_ignore: 1, model_type: 'checkpoints' });
    } finally {
      daemon.kill('SIGTERM');
    }
    expect(await exited).toBe(0);
  });

  it('min_free_space_gb is advisory: a small download succeeds far below it, evicting towards it; the hard floor is its own key', async () => {
    const comfy = await newComfy();
    const agent = await agentIn(comfy, { env: { MIN_FREE_SPACE_GB: '1000000' } }); // 1 PB "free" wished
    const { grant, loras } = await userWithLoras(server, [43_000, 43_000]);
    const first = await agent.ensure({ source: 'user', id: loras[0]!.id, grant });
    const second = await agent.ensure({ source: 'user', id: loras[1]!.id, grant });
    expect(existsSync(second.path)).toBe(true);
    expect(existsSync(first.path)).toBe(false); // evicted towards the floor, by at most the download's size
    await agent.stop();

    const hard = await agentIn(comfy, { env: { MIN_FREE_SPACE_GB: '0', LORA_MIN_FREE_HARD_GB: '1000000' } });
    await expect(hard.ensure({ source: 'user', id: loras[0]!.id, grant })).rejects.toMatchObject({ code: 'CACHE_FULL' });
  });

  it('a buffered hit never moves last_used backwards past the newer time Python wrote', async () => {
    const comfy = await newComfy();
    const hourAgo = () => new Date(Date.now() - 3_600_000); // the agent's hits are older than Python's use
    const agent = await agentIn(comfy, { now: hourAgo });
    const { grant, loras } = await userWithLoras(server, [12_000]);
    const cached = await agent.ensure({ source: 'user', id: loras[0]!.id, grant });
    await agent.ensure({ source: 'user', id: loras[0]!.id, grant }); // a hit, buffered
    const written = python('touch', dbOf(comfy), cached.path);
    agent.store.flushTouches();
    expect(python('row', dbOf(comfy), cached.path)).toMatchObject({ last_used: written.last_used, use_count: 3 });
  });

  it('an older models table without is_ignore gets the column instead of crashing the agent', async () => {
    const comfy = await newComfy();
    python('old-schema', dbOf(comfy));
    const agent = await agentIn(comfy);
    const { grant, loras } = await userWithLoras(server, [11_000]);
    const cached = await agent.ensure({ source: 'user', id: loras[0]!.id, grant });
    expect(python('row', dbOf(comfy), cached.path)).toMatchObject({ model_type: 'user_lora', is_ignore: 1 });
    expect(python('lru', dbOf(comfy))).toEqual([]);
  });

  it('rows dated in the future (the Python nodes in another time zone) are warned about at start-up', async () => {
    const comfy = await newComfy();
    const db = dbOf(comfy);
    python('init', db);
    const file = join(comfy, 'models/checkpoints/x.safetensors');
    place(file, randomBytes(10));
    python('register', db, file, 'checkpoints');
    python('set-time', db, file, '3');
    const { lines, logger } = capturingLogger();
    await agentIn(comfy, { logger });
    expect(lines.some((l) => l.includes('dated in the future') && l.includes('"rows":1'))).toBe(true);
  });

  it('Python’s LRU query never offers the agent’s files (is_ignore = 1), leased or not; its own rows still come first', async () => {
    const comfy = await newComfy();
    const db = dbOf(comfy);
    python('init', db);
    const agent: Agent = await agentIn(comfy, { env: { LORA_CACHE_MAX_GB: String(20_000 / GiB) } });
    const { grant, loras } = await userWithLoras(server, [9_000, 9_000, 9_000]);
    const leased = await agent.ensure({ source: 'user', id: loras[0]!.id, grant }, { lease: { holder: 'job-1' } });
    const plain = await agent.ensure({ source: 'user', id: loras[1]!.id, grant }, { lease: null });
    const theirs = join(comfy, 'models/loras/theirs.safetensors');
    place(theirs, randomBytes(10));
    python('register', db, theirs, 'loras');
    expect(python('lru', db)).toEqual([theirs]);
    // The agent still evicts its own unleased files under its cap.
    await agent.ensure({ source: 'user', id: loras[2]!.id, grant });
    expect(existsSync(leased.path)).toBe(true);
    expect(existsSync(plain.path)).toBe(false);
  });
});
