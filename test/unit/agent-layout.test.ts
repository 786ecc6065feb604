import { writeFileSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { layoutFor, lockKey, parseUserLoraPath, sharedLoraPath, slug, userLoraPath } from '../../cache-agent/layout.ts';
import { isLocked, tryLock } from '../../cache-agent/lock.ts';
import { normaliseSharedName } from '../../cache-agent/lora-refs.ts';

const layout = layoutFor({ loraDir: '/srv/comfy/models/loras', usersDir: '/srv/comfy/models/lora-vault-users' }, 1234);
const inside = (dir: string, path: string) => {
  const rel = relative(dir, path);
  return rel !== '' && !rel.startsWith('..') && !rel.startsWith('/');
};

describe('cache layout', () => {
  it('user LoRA paths stay in {usersDir}/{user}/, are unique per id, and parse back', () => {
    fc.assert(
      fc.property(fc.uuid(), fc.bigInt({ min: 1n, max: 2n ** 62n }), fc.string({ maxLength: 300 }), (userId, id, fileName) => {
        const path = userLoraPath(layout, userId, id.toString(), fileName, 'SAFETENSORS');
        expect(inside(join(layout.usersDir, userId.toLowerCase()), path)).toBe(true);
        expect(path.split('/').pop()?.startsWith(`${id}_`)).toBe(true);
        expect(parseUserLoraPath(layout, path)).toEqual({ userId: userId.toLowerCase(), loraId: id.toString() });
      }),
    );
    for (const name of ['../../../etc/passwd', 'a/../../b.pt', '\u202Eevil.safetensors', 'x\0y', ' '.repeat(50), 'é'.repeat(500)]) {
      const path = userLoraPath(layout, '0b7e6c7e-1111-4222-8333-944445555666', '7', name, 'PT');
      expect(path.split('/').pop()).toMatch(/^7_[A-Za-z0-9._-]{1,80}\.pt$/);
    }
    expect(() => userLoraPath(layout, '../root', '7', 'x', 'PT')).toThrow(/unsafe user id/);
    expect(() => userLoraPath(layout, 'u1', '../7', 'x', 'PT')).toThrow(/unsafe LoRA id/);
    expect(slug('My LoRA (v2).safetensors')).toBe('My-LoRA-v2');
  });

  it('the extension follows the detected format, never the file name (THREATS 28)', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 100 }), fc.constantFrom('.pt', '.pth', '.ckpt', '.bin', '.safetensors', ''), (stem, ext) => {
        expect(userLoraPath(layout, 'u1', '7', stem + ext, 'SAFETENSORS')).toMatch(/\/7_[^/]+\.safetensors$/);
        expect(userLoraPath(layout, 'u1', '7', stem + ext, 'PT')).toMatch(/\/7_[^/]+\.pt$/);
      }),
    );
    expect(userLoraPath(layout, 'u1', '254', 'inkwash-style.pt', 'SAFETENSORS')).toBe(
      `${layout.usersDir}/u1/254_inkwash-style.safetensors`,
    );
  });

  it('shared paths accepted by normaliseSharedName never leave the loras folder, nor enter the temp folder', () => {
    fc.assert(
      fc.property(fc.array(fc.constantFrom('a', 'b.safetensors', '..', '.', '', '/', '\\', 'x y', '%2e%2e'), { maxLength: 8 }), (parts) => {
        const name = normaliseSharedName(parts.join('/'));
        if (name !== null && !name.startsWith('.lora-cache-tmp/')) expect(inside(layout.loraRoot, sharedLoraPath(layout, name))).toBe(true);
      }),
    );
    expect(() => sharedLoraPath(layout, '../x')).toThrow(/unsafe shared name/);
    expect(() => sharedLoraPath(layout, '.lora-cache-tmp/1-a/x.part')).toThrow(/temp folder/);
    expect(sharedLoraPath(layout, 'style/x.safetensors')).toBe('/srv/comfy/models/loras/style/x.safetensors');
    expect(lockKey({ source: 'shared', name: '../x' })).toMatch(/^shared-[0-9a-f]{32}$/);
  });
});

describe('download locks', () => {
  it('one holder at a time; a lock of a dead process or a stale one is taken over', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'lora-locks-'));
    const first = await tryLock(dir, 'user-1');
    expect(first).not.toBeNull();
    expect(await tryLock(dir, 'user-1')).toBeNull(); // held by a live process (us)
    expect(await isLocked(dir, 'user-1')).toBe(true);
    await first?.release();
    expect(await isLocked(dir, 'user-1')).toBe(false);

    writeFileSync(join(dir, 'user-2.lock'), JSON.stringify({ pid: 2 ** 22 + 12345, at: 0 })); // no such process
    expect(await isLocked(dir, 'user-2')).toBe(false);
    const taken = await tryLock(dir, 'user-2');
    expect(taken).not.toBeNull();
    await taken?.release();

    const held = await tryLock(dir, 'user-3');
    expect(await tryLock(dir, 'user-3', { staleMs: 60_000 })).toBeNull();
    await new Promise((r) => setTimeout(r, 30));
    const thief = await tryLock(dir, 'user-3', { staleMs: 10 }); // not refreshed in time: abandoned
    expect(thief).not.toBeNull();
    await held?.release(); // the old holder's release leaves the new holder's lock alone
    expect(await isLocked(dir, 'user-3')).toBe(true);
    await thief?.release();
    expect(await isLocked(dir, 'user-3')).toBe(false);
  });
});
