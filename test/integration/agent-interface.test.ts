import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { Agent } from '../../cache-agent/app.ts';
import { loadAgentConfig } from '../../cache-agent/config.ts';
import { callAgent, serverWithAgents, type TestAgentOptions, userWithLoras } from '../testkit/agent.ts';
import { mintGrant } from '../testkit/grants.ts';
import type { TestServer } from '../testkit/server.ts';

/** The agent's local HTTP interface, its coexistence with the Python nodes, and index repair. */

let server: TestServer;
const agents = serverWithAgents((started) => {
  server = started;
});

const agentWith = (options?: TestAgentOptions) => agents.start(options);

describe('local HTTP interface', () => {
  it('ensure, prefetch, release, stats and health over 127.0.0.1', async () => {
    const agent = await agentWith({ listen: true });
    expect(agent.address).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const { grant, loras } = await userWithLoras(server, [40_000, 30_000]);

    const ensured = await callAgent(agent, 'POST', '/ensure', { source: 'user', id: loras[0]!.id, grant, lease: { holder: 'job-7' } });
    expect(ensured.status).toBe(200);
    expect(ensured.body).toMatchObject({ hit: false, sizeBytes: 40_000, loraId: loras[0]!.id });
    expect(ensured.body.lease.leaseId).toMatch(/^[A-Za-z0-9_-]{43}$/); // 256 random bits
    expect(existsSync(ensured.body.path)).toBe(true);

    const workflow = {
      '3': { class_type: 'KSampler', inputs: { seed: 1 } },
      '14': {
        class_type: 'EmProps_Lora_Loader',
        inputs: { lora_source: 'user', lora_identifier: loras[1]!.id, strength_model: 1, strength_clip: 1 },
      },
      '15': {
        class_type: 'EmProps_Lora_Loader',
        inputs: { lora_source: 'user', lora_identifier: '999999999', strength_model: 1, strength_clip: 1 },
      },
    };
    const prefetched = await callAgent(agent, 'POST', '/prefetch', { workflow, grant, workflowId: 'wf-1', lease: { holder: 'job-7' } });
    expect(prefetched.status).toBe(207); // one of two failed
    expect(prefetched.body.items.find((i: any) => i.ref.id === loras[1]!.id).result.hit).toBe(false);
    expect(prefetched.body.items.find((i: any) => i.ref.id === '999999999').error.code).toBe('LORA_NOT_FOUND');

    const stats = await callAgent(agent, 'GET', '/stats');
    expect(stats.body).toMatchObject({ userLoraCount: 2, totalLoraCacheBytes: 70_000, leasedFiles: 2 });
    expect((await callAgent(agent, 'POST', '/release', { holder: 'job-7', grant })).body).toEqual({ released: 2 });
    expect((await callAgent(agent, 'GET', '/stats')).body.leasedFiles).toBe(0);
    expect((await callAgent(agent, 'POST', '/release', { leaseId: ensured.body.lease.leaseId })).status).toBe(404);
    expect((await callAgent(agent, 'GET', '/health')).body.ok).toBe(true);
  });

  it('listens on a unix socket instead of TCP when AGENT_SOCKET is set (mode 660)', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'lora-sock-'));
    const socket = join(dir, 'agent.sock');
    const agent = await agentWith({ listen: true, env: { AGENT_SOCKET: socket } });
    expect(agent.address).toBe(socket);
    expect(statSync(socket).mode & 0o777).toBe(0o660);
    const body = await new Promise<string>((resolve, reject) => {
      const req = request({ socketPath: socket, path: '/health', method: 'GET' }, (res) => {
        let text = '';
        res.on('data', (d) => (text += d));
        res.on('end', () => resolve(text));
      });
      req.on('error', reject);
      req.end();
    });
    expect(JSON.parse(body)).toMatchObject({ ok: true, api: 'configured' });
  });

  it('bad requests get clear 4xx errors with codes, never a 500', async () => {
    const agent = await agentWith({ listen: true });
    const cases: [string, string, unknown, number, string, string?][] = [
      ['POST', '/ensure', '{not json', 400, 'INVALID_REQUEST'],
      ['POST', '/ensure', { source: 'user', id: '../../etc/passwd', grant: 'g' }, 400, 'INVALID_REQUEST'],
      ['POST', '/ensure', { source: 'user', id: '12' }, 400, 'INVALID_REQUEST'],
      ['POST', '/ensure', { source: 'shared', name: '../../x.safetensors' }, 400, 'INVALID_REQUEST'],
      ['POST', '/ensure', { source: 'magic', id: '1' }, 400, 'INVALID_REQUEST'],
      ['POST', '/ensure', { source: 'user', id: '12', grant: 'not-a-grant' }, 403, 'INVALID_GRANT'],
      ['POST', '/ensure', { source: 'user', id: '1' }, 400, 'INVALID_REQUEST', 'text/plain'],
      ['POST', '/prefetch', { workflow: 42 }, 400, 'INVALID_WORKFLOW'],
      ['POST', '/release', { nothing: true }, 400, 'INVALID_REQUEST'],
      ['GET', '/ensure', undefined, 405, 'INVALID_REQUEST'],
      ['GET', '/nope', undefined, 404, 'INVALID_REQUEST'],
    ];
    for (const [method, path, body, status, code, type] of cases) {
      const res = await callAgent(agent, method, path, body, type);
      expect({ path, body, status: res.status, code: res.body.error?.code }).toEqual({ path, body, status, code });
    }
    const huge = await callAgent(agent, 'POST', '/prefetch', JSON.stringify({ workflow: { pad: 'x'.repeat(9 * 1024 * 1024) } }));
    expect(huge.status).toBe(400);
    expect((await callAgent(agent, 'GET', '/health')).status).toBe(200); // still serving
  });
});

/** A request as anything on the machine could send it: any Host, Origin or Sec-Fetch-* header. */
function raw(
  target: { agent: Agent } | { socketPath: string },
  method: string,
  path: string,
  headers: Record<string, string>,
  body?: unknown,
): Promise<{ status: number; body: Record<string, any> }> {
  const text = body === undefined ? undefined : JSON.stringify(body);
  const where =
    'socketPath' in target
      ? { socketPath: target.socketPath }
      : (() => {
          const url = new URL(target.agent.address ?? '');
          return { host: url.hostname, port: Number(url.port) };
        })();
  return new Promise((resolve, reject) => {
    const req = request(
      { ...where, method, path, headers: { ...(text ? { 'content-type': 'application/json' } : {}), ...headers } },
      (res) => {
        let data = '';
        res.on('data', (d) => (data += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(data || '{}') }));
      },
    );
    req.on('error', reject);
    req.end(text);
  });
}

/** A grant the API never signed, claiming `sub` and an expiry in the year 2286 (refused: the agent verifies every grant). */
const forgedGrant = (sub: string) =>
  ['{"alg":"HS256"}', JSON.stringify({ sub, exp: 9_999_999_999 }), 'sig'].map((p) => Buffer.from(p).toString('base64url')).join('.');

describe('who may call the local interface (THREATS 32)', () => {
  const ROUTES: [string, string, unknown?][] = [
    ['GET', '/stats'],
    ['GET', '/health'],
    ['POST', '/ensure', { source: 'shared', name: 'x.safetensors' }],
    ['POST', '/release', { leaseId: 'x' }],
  ];

  it('a Host that is not loopback (a DNS-rebinding page) is refused on every route: 403 FORBIDDEN_HOST', async () => {
    const agent = await agentWith({ listen: true });
    const port = new URL(agent.address ?? '').port;
    for (const host of [`evil.example:${port}`, 'evil.example', `127.0.0.1.nip.io:${port}`, `localhost.evil.example:${port}`, '10.0.0.1']) {
      for (const [method, path, body] of ROUTES) {
        const res = await raw({ agent }, method, path, { host }, body);
        expect({ host, path, status: res.status, code: res.body.error?.code }).toEqual({ host, path, status: 403, code: 'FORBIDDEN_HOST' });
      }
    }
    for (const host of [`127.0.0.1:${port}`, `localhost:${port}`, `LOCALHOST:${port}`, `[::1]:${port}`, 'localhost', '127.0.0.1']) {
      expect((await raw({ agent }, 'GET', '/health', { host })).status, host).toBe(200);
    }
  });

  it('a browser request (any Origin, or Sec-Fetch-Site other than none) is refused: 403 FORBIDDEN_ORIGIN', async () => {
    const agent = await agentWith({ listen: true });
    const self = agent.address ?? '';
    const browser: Record<string, string>[] = [
      { origin: 'http://evil.example' },
      { origin: 'null' },
      { origin: self }, // the agent serves no pages: even its own origin is no caller
      { 'sec-fetch-site': 'cross-site' }, // <img src> / no-cors fetch: no Origin header
      { 'sec-fetch-site': 'same-site' }, // e.g. a script in ComfyUI's own web page on 127.0.0.1:8188
      { 'sec-fetch-site': 'same-origin' },
    ];
    for (const headers of browser) {
      for (const [method, path, body] of ROUTES) {
        const res = await raw({ agent }, method, path, headers, body);
        expect({ headers, path, status: res.status, code: res.body.error?.code }).toEqual({
          headers,
          path,
          status: 403,
          code: 'FORBIDDEN_ORIGIN',
        });
      }
    }
    expect((await raw({ agent }, 'GET', '/health', { 'sec-fetch-site': 'none' })).status).toBe(200); // typed into the address bar
  });

  it('on the unix socket any Host is fine (the file mode decides who connects), a browser Origin still is not', async () => {
    const socketPath = join(await mkdtemp(join(tmpdir(), 'lora-sock-')), 'agent.sock');
    await agentWith({ listen: true, env: { AGENT_SOCKET: socketPath } });
    expect((await raw({ socketPath }, 'GET', '/health', { host: '%2Fvar%2Frun%2Flora.sock' })).status).toBe(200);
    expect((await raw({ socketPath }, 'GET', '/stats', { host: 'evil.example' })).status).toBe(200);
    const refused = await raw({ socketPath }, 'GET', '/stats', { origin: 'http://evil.example' });
    expect(refused).toMatchObject({ status: 403, body: { error: { code: 'FORBIDDEN_ORIGIN' } } });
  });

  it("leases end at min(now + LEASE_MAX_SECONDS, the grant's exp), whatever ttl or forged exp is asked for", async () => {
    expect(() => loadAgentConfig({ LEASE_MAX_SECONDS: '600' })).toThrow(/LEASE_TTL_SECONDS: must not exceed LEASE_MAX_SECONDS/);
    const agent = await agentWith({ listen: true, env: { LEASE_MAX_SECONDS: '600', LEASE_TTL_SECONDS: '300' } });
    const { userId, grant, loras } = await userWithLoras(server, [10_000]);
    const id = loras[0]!.id;
    const week = { ttlSeconds: 7 * 86_400, holder: 'long-job' };
    const until = (res: { body: Record<string, any> }) => Date.parse(res.body.lease.expiresAt) - Date.now();

    const miss = await callAgent(agent, 'POST', '/ensure', { source: 'user', id, grant, lease: week });
    expect(miss.status).toBe(200);
    expect(until(miss)).toBeLessThanOrEqual(600_000);
    expect(until(miss)).toBeGreaterThan(500_000);
    const forged = await callAgent(agent, 'POST', '/ensure', { source: 'user', id, grant: forgedGrant(userId), lease: week });
    expect(forged).toMatchObject({ status: 403, body: { error: { code: 'INVALID_GRANT' } } }); // no lease for a forged exp
    const short = await callAgent(agent, 'POST', '/ensure', {
      source: 'user',
      id,
      grant: await mintGrant(server, userId, { ttlSeconds: 120 }),
      lease: week,
    });
    expect(until(short)).toBeLessThanOrEqual(120_000); // the job's grant ends first
    expect(until(short)).toBeGreaterThan(60_000);
  });

  it('a week-long lease an older agent left in the index ends within LEASE_MAX_SECONDS after a restart', async () => {
    const first = await agentWith();
    const { grant, loras } = await userWithLoras(server, [10_000]);
    const { path } = await first.ensure({ source: 'user', id: loras[0]!.id, grant });
    first.store.db
      .prepare('INSERT INTO lora_cache_leases (lease_id, path, holder, expires_at_ms) VALUES (?, ?, ?, ?)')
      .run(randomUUID(), path, 'job-old', Date.now() + 7 * 86_400_000);
    await first.stop();
    const again = await agentWith({
      comfyDir: first.config.loraDir.replace(/\/models\/loras$/, ''),
      env: { LEASE_MAX_SECONDS: '600', LEASE_TTL_SECONDS: '60' },
    });
    const row = again.store.db.prepare('SELECT expires_at_ms FROM lora_cache_leases').get() as { expires_at_ms: number };
    expect(row.expires_at_ms - Date.now()).toBeLessThanOrEqual(600_000);
    expect(again.store.isLeased(path, new Date())).toBe(true);
  });

  it('only the lease token, or the holder with the job grant that took the leases, releases them', async () => {
    const agent = await agentWith({ listen: true });
    const { userId, grant, loras } = await userWithLoras(server, [10_000, 10_000]);
    const leased = await callAgent(agent, 'POST', '/ensure', { source: 'user', id: loras[0]!.id, grant, lease: { holder: 'job-7' } });
    const token: string = leased.body.lease.leaseId;
    const leasedFiles = async () => (await callAgent(agent, 'GET', '/stats')).body.leasedFiles;

    const byName = await callAgent(agent, 'POST', '/release', { holder: 'job-7' });
    expect(byName).toMatchObject({ status: 400, body: { error: { code: 'INVALID_REQUEST' } } });
    expect(byName.body.error.message).toMatch(/grant/);
    const otherJob = await callAgent(agent, 'POST', '/release', { holder: 'job-7', grant: await mintGrant(server, userId) });
    expect(otherJob.body).toEqual({ released: 0 });
    expect((await callAgent(agent, 'POST', '/release', { leaseId: randomUUID() })).status).toBe(404);
    // The index holds only a hash of the token: reading model_cache.db does not let anyone release.
    const stored = agent.store.db.prepare('SELECT lease_id FROM lora_cache_leases').all() as { lease_id: string }[];
    expect(stored.map((r) => r.lease_id)).not.toContain(token);
    expect((await callAgent(agent, 'POST', '/release', { leaseId: stored[0]!.lease_id })).status).toBe(404);
    expect(await leasedFiles()).toBe(1);

    expect((await callAgent(agent, 'POST', '/release', { holder: 'job-7', grant })).body).toEqual({ released: 1 });
    expect(await leasedFiles()).toBe(0);
    const again = await callAgent(agent, 'POST', '/ensure', { source: 'user', id: loras[1]!.id, grant, lease: { holder: 'job-7' } });
    expect((await callAgent(agent, 'POST', '/release', { leaseId: again.body.lease.leaseId })).body).toEqual({ released: 1 });
    expect(await leasedFiles()).toBe(0);
  });
});

describe('model_cache.db shared with the Python nodes', () => {
  it('a Python process writing the index concurrently (as the nodes do) causes no error and loses no update', async () => {
    const agent = await agentWith();
    const { grant, loras } = await userWithLoras(
      server,
      Array.from({ length: 12 }, () => 20_000),
    );
    const first = await agent.ensure({ source: 'user', id: loras[0]!.id, grant });
    const script = `
import sqlite3, sys, datetime, time
db, path, other = sys.argv[1], sys.argv[2], sys.argv[3]
bumps = 0
end = time.time() + 3
while time.time() < end:
    for p in (path, other + str(bumps % 5)):
        conn = sqlite3.connect(db)   # a connection per call, default 5 s timeout, like db/model_cache.py
        cur = conn.cursor()
        cur.execute("SELECT id FROM models WHERE path = ?", (p,))
        now = datetime.datetime.now().isoformat()
        if cur.fetchone():
            cur.execute("UPDATE models SET last_used = ?, use_count = use_count + 1 WHERE path = ?", (now, p))
        else:
            cur.execute("INSERT INTO models (path, model_type, filename, size_bytes, last_used, use_count, download_date) VALUES (?, 'loras', ?, 1, ?, 1, ?)", (p, p, now, now))
        conn.commit()
        cur.execute("SELECT path FROM models ORDER BY last_used ASC LIMIT 5")
        cur.fetchall()
        conn.close()
    bumps += 1
print(bumps)
`;
    const python = spawn('python3', ['-c', script, agent.config.dbPath, first.path, join(agent.config.loraDir, 'stock-lora-')]);
    let out = '';
    let err = '';
    python.stdout.on('data', (d) => (out += d));
    python.stderr.on('data', (d) => (err += d));
    const exited = new Promise<number | null>((resolve) => python.on('exit', resolve));

    let hits = 0;
    const deadline = Date.now() + 2500;
    const downloads = Promise.all(loras.slice(1).map((l) => agent.ensure({ source: 'user', id: l.id, grant })));
    while (Date.now() < deadline) {
      await agent.ensure({ source: 'user', id: loras[0]!.id, grant });
      hits++;
    }
    await downloads;
    expect(await exited).toBe(0);
    expect(err).toBe('');
    const pythonBumps = Number(out.trim());
    expect(pythonBumps).toBeGreaterThan(10);
    agent.store.flushTouches();
    const row = agent.store.db.prepare('SELECT use_count FROM models WHERE path = ?').get(first.path) as { use_count: number };
    expect(row.use_count).toBe(1 + hits + pythonBumps); // every bump from both sides counted
    expect(agent.stats().userLoraCount).toBe(12);
    // The Python side's rows for stock LoRAs are tolerated and never evicted by the agent.
    expect((agent.store.db.prepare("SELECT COUNT(*) AS n FROM models WHERE model_type = 'loras'").get() as { n: number }).n).toBe(5);
  });

  it('a Python process holding the write lock for 2.5 s: hits answer at once, a download waits and then registers (THREATS 23)', async () => {
    const agent = await agentWith();
    const { grant, loras } = await userWithLoras(server, [20_000, 20_000]);
    const cached = await agent.ensure({ source: 'user', id: loras[0]!.id, grant });
    const holder = spawn('python3', [
      '-c',
      'import sqlite3, sys, time\nc = sqlite3.connect(sys.argv[1], isolation_level=None)\nc.execute("BEGIN EXCLUSIVE")\nprint("locked", flush=True)\ntime.sleep(2.5)\nc.execute("COMMIT")\n',
      agent.config.dbPath,
    ]);
    await new Promise<void>((resolve) => holder.stdout.once('data', () => resolve()));
    const exited = new Promise<number | null>((resolve) => holder.on('exit', resolve));

    // The event loop stays free while the lock is held: the largest gap between 10 ms ticks stays small.
    let last = performance.now();
    let maxGap = 0;
    const ticker = setInterval(() => {
      const t = performance.now();
      maxGap = Math.max(maxGap, t - last);
      last = t;
    }, 10);
    const t0 = performance.now();
    for (let i = 0; i < 50; i++) expect((await agent.ensure({ source: 'user', id: loras[0]!.id, grant })).hit).toBe(true);
    expect(performance.now() - t0).toBeLessThan(500); // 50 hits, none waiting on the lock
    const downloaded = await agent.ensure({ source: 'user', id: loras[1]!.id, grant }); // registers once the lock is gone
    clearInterval(ticker);
    expect(await exited).toBe(0);
    expect(maxGap).toBeLessThan(500); // one blocked busy-timeout wait would be ≥ 1 s
    expect(agent.store.findUser(loras[1]!.id)?.path).toBe(downloaded.path);
    agent.store.flushTouches();
    const row = agent.store.db.prepare('SELECT use_count FROM models WHERE path = ?').get(cached.path) as { use_count: number };
    expect(row.use_count).toBe(51); // the buffered hits were written after the lock was released
  });

  it('a corrupt model_cache.db is moved aside and the index rebuilt from the files on disk (then confirmed by the API)', async () => {
    const first = await agentWith();
    const { grant, loras } = await userWithLoras(server, [15_000, 15_000]);
    const a = await first.ensure({ source: 'user', id: loras[0]!.id, grant });
    const b = await first.ensure({ source: 'user', id: loras[1]!.id, grant });
    await first.stop();
    for (const suffix of ['-wal', '-shm']) if (existsSync(first.config.dbPath + suffix)) writeFileSync(first.config.dbPath + suffix, '');
    writeFileSync(first.config.dbPath, Buffer.alloc(8192, 0x5a)); // garbage

    const again = await agentWith({ comfyDir: first.config.loraDir.replace(/\/models\/loras$/, ''), subscribe: true });
    expect(readdirSync(join(first.config.dbPath, '..')).some((f) => f.includes('.corrupt-'))).toBe(true);
    expect(again.store.findUser(loras[0]!.id)).toMatchObject({ path: a.path, verified: false });
    const hit = await again.ensure({ source: 'user', id: loras[1]!.id, grant });
    expect(hit).toMatchObject({ hit: true, path: b.path });
  });

  it('start-up cleanup: temp leftovers removed, rows without files dropped, stray files removed', async () => {
    const first = await agentWith();
    const { grant, loras } = await userWithLoras(server, [12_000, 12_000]);
    const kept = await first.ensure({ source: 'user', id: loras[0]!.id, grant });
    const lost = await first.ensure({ source: 'user', id: loras[1]!.id, grant });
    await first.stop();
    const deadTemp = join(first.layout.tempRoot, '999999-deadbeef');
    mkdirSync(deadTemp, { recursive: true });
    writeFileSync(join(deadTemp, 'x.part'), 'partial');
    const { rmSync } = await import('node:fs');
    rmSync(lost.path);
    const stray = join(first.layout.usersDir, 'not-a-lora.txt');
    writeFileSync(stray, 'junk');

    const again = await agentWith({ comfyDir: first.config.loraDir.replace(/\/models\/loras$/, '') });
    expect(again.health().cleanup).toMatchObject({ tempRemoved: 1, rowsDropped: 1, filesDropped: 1 });
    expect(existsSync(deadTemp)).toBe(false);
    expect(existsSync(stray)).toBe(false);
    expect(again.store.findUser(loras[1]!.id)).toBeNull();
    expect((await again.ensure({ source: 'user', id: loras[0]!.id, grant })).path).toBe(kept.path);
    expect((await again.ensure({ source: 'user', id: loras[1]!.id, grant })).hit).toBe(false); // downloaded again
  });
});
