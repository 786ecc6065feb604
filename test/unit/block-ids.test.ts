import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { blockId, blockListProblem, blockSize, expectedBlockIds } from '../../server/uploads/block-ids.ts';

/** The block list of a resumable upload (server/uploads/block-ids.ts): what completeLoraUpload accepts. */

const staged = (size: number, blockBytes: number) =>
  expectedBlockIds(size, blockBytes).map((id, i) => ({ id, size: blockSize(i, size, blockBytes) }));

describe('resumable block lists', () => {
  it('ids have one length (Azure requires it) and blocks cover the file exactly', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 50_000_000 }), fc.integer({ min: 1024, max: 8 * 1024 * 1024 }), (size, blockBytes) => {
        const ids = expectedBlockIds(size, blockBytes);
        expect(new Set(ids.map((id) => id.length)).size).toBe(1);
        expect(new Set(ids).size).toBe(ids.length);
        const total = ids.reduce((sum, _, i) => sum + blockSize(i, size, blockBytes), 0);
        expect(total).toBe(size);
        expect(blockListProblem(ids, staged(size, blockBytes), size, blockBytes)).toBeUndefined();
      }),
    );
  });

  it('refuses a reordered, forged, short, never-staged or wrongly sized list', () => {
    const size = 5 * 1000 + 7;
    const ids = expectedBlockIds(size, 1000);
    const held = staged(size, 1000);
    expect(blockListProblem([ids[1] as string, ids[0] as string, ...ids.slice(2)], held, size, 1000)).toMatch(/must be/);
    expect(blockListProblem([...ids.slice(0, -1), blockId(99)], held, size, 1000)).toMatch(/must be/);
    expect(blockListProblem(ids.slice(0, -1), held, size, 1000)).toMatch(/expected 6 block ids/);
    expect(blockListProblem(ids, held.slice(1), size, 1000)).toMatch(/never staged/);
    expect(
      blockListProblem(
        ids,
        held.map((b, i) => (i === 5 ? { ...b, size: 8 } : b)),
        size,
        1000,
      ),
    ).toMatch(/differs from the session/);
  });
});
