import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { serverWithAgents, userClient } from '../testkit/agent.ts';
import { mintGrant } from '../testkit/grants.ts';
import { sha256 } from '../testkit/hashes.ts';
import { eventually, newUserId, seedLora } from '../testkit/seed.ts';
import type { TestServer } from '../testkit/server.ts';

/**
 * Identical content kept once on a machine (issue 17 §2): a user LoRA whose bytes the agent
 * already holds for another user is a hard link to that file — no download — under its own
 * user's path, and each user's file lives on whatever happens to the other's.
 */

let server: TestServer;
const agents = serverWithAgents((started) => {
  server = started;
});
const GiB = 1024 ** 3;

/** Two users, each with a LoRA of the same bytes (and a grant each). */
async function twoUsersOneContent(size: number) {
  const bytes = randomBytes(size);
  const users = [];
  for (let i = 0; i < 2; i++) {
    const userId = newUserId();
    const lora = await seedLora(server.app, userId, { bytes });
    users.push({ userId, lora, grant: await mintGrant(server, userId) });
  }
  return { bytes, a: users[0]!, b: users[1]! };
}

const inode = (path: string) => {
  const s = statSync(path);
  return `${s.dev}:${s.ino}`;
};

describe('hard links by sha256 on a machine', () => {
  it("a second user's LoRA of the same bytes is linked, not downloaded: own path, same file, counted once", async () => {
    const agent = await agents.start();
    const { bytes, a, b } = await twoUsersOneContent(400_000);
    const first = await agent.ensure({ source: 'user', id: a.lora.id, grant: a.grant });
    expect(agent.core.downloads.started).toBe(1);

    const second = await agent.ensure({ source: 'user', id: b.lora.id, grant: b.grant });
    expect(second.hit).toBe(false);
    expect(agent.core.downloads.started).toBe(1); // no second download
    expect(second.path.startsWith(`${agent.layout.usersDir}/${b.userId}/${b.lora.id}_`)).toBe(true);
    expect(second.path).not.toBe(first.path);
    expect(inode(second.path)).toBe(inode(first.path));
    expect(statSync(first.path).nlink).toBe(2);
    expect(sha256(readFileSync(second.path))).toBe(sha256(bytes));
    expect(second.sha256).toBe(sha256(bytes));
    // Per-user isolation holds: A's grant does not get B's LoRA, linked or not.
    await expect(agent.ensure({ source: 'user', id: b.lora.id, grant: a.grant })).rejects.toMatchObject({ code: 'LORA_NOT_FOUND' });
    // One file on disk: the cache counts its bytes once.
    expect(agent.store.userLoraBytes()).toBe(400_000);
    expect(agent.store.cacheRows().map((r) => r.contentKey)).toEqual([inode(first.path), inode(first.path)]);
  });

  it("deleting one user's LoRA leaves the other's linked file whole", async () => {
    const agent = await agents.start({ subscribe: true });
    const { bytes, a, b } = await twoUsersOneContent(120_000);
    const pa = (await agent.ensure({ source: 'user', id: a.lora.id, grant: a.grant })).path;
    const pb = (await agent.ensure({ source: 'user', id: b.lora.id, grant: b.grant })).path;
    expect(agent.core.downloads.started).toBe(1);
    await eventually(async () => agent.invalidator.reconciliations > 0, 5000, 'subscription connected');

    const user = await userClient(server, a.userId);
    await user.deleteLora({ id: a.lora.id });
    await user.close();
    await eventually(async () => !existsSync(pa), 5000, "A's path removed");
    expect(sha256(readFileSync(pb))).toBe(sha256(bytes));
    expect(statSync(pb).nlink).toBe(1);
    expect((await agent.ensure({ source: 'user', id: b.lora.id, grant: b.grant })).hit).toBe(true);
    expect(agent.store.cacheRows().map((r) => r.contentKey)).toEqual([null]); // a file of its own again
  });

  it('a cached file changed on disk since it was verified is never linked: the other user downloads', async () => {
    const agent = await agents.start();
    const { bytes, a, b } = await twoUsersOneContent(90_000);
    const pa = (await agent.ensure({ source: 'user', id: a.lora.id, grant: a.grant })).path;
    const tampered = Buffer.from(bytes);
    tampered[1000] = (tampered[1000] as number) ^ 0xff; // same size, other bytes
    writeFileSync(pa, tampered);

    const pb = (await agent.ensure({ source: 'user', id: b.lora.id, grant: b.grant })).path;
    expect(agent.core.downloads.started).toBe(2);
    expect(inode(pb)).not.toBe(inode(pa));
    expect(sha256(readFileSync(pb))).toBe(sha256(bytes));
  });

  it('eviction under the cap removes a linked file with all its links, and reports its bytes once', async () => {
    const size = 100_000;
    // Room for two files: the linked pair is one of them.
    const agent = await agents.start({ env: { LORA_CACHE_MAX_GB: String((2 * size) / GiB) } });
    const { a, b } = await twoUsersOneContent(size);
    const pa = (await agent.ensure({ source: 'user', id: a.lora.id, grant: a.grant })).path;
    const pb = (await agent.ensure({ source: 'user', id: b.lora.id, grant: b.grant })).path;
    const other = newUserId();
    const third = await seedLora(server.app, other, { bytes: randomBytes(size) });
    const pc = (await agent.ensure({ source: 'user', id: third.id, grant: await mintGrant(server, other) })).path;
    // Three rows, two files, two files' room: nothing had to go.
    expect([pa, pb, pc].every((p) => existsSync(p))).toBe(true);

    // A fourth file needs the room of one: the least recently used file goes — the linked pair,
    // both links at once (one of them alone would have freed nothing).
    const fourthUser = newUserId();
    const fourth = await seedLora(server.app, fourthUser, { bytes: randomBytes(size) });
    await agent.ensure({ source: 'user', id: fourth.id, grant: await mintGrant(server, fourthUser) });
    expect(existsSync(pa)).toBe(false);
    expect(existsSync(pb)).toBe(false);
    expect(existsSync(pc)).toBe(true);
    expect(agent.store.userLoraBytes()).toBe(2 * size);
  });
});
