/**
 * The block ids of a resumable upload (docs/API.md "Resumable uploads"): block `i` (from 0) holds
 * bytes [i × blockBytes, min((i + 1) × blockBytes, size)) and is staged under
 * `base64("lvb-" + i as 6 digits)`. The server commits exactly this list, in this order, so a
 * reordered, forged or incomplete list is refused before anything is committed. Pure; the SDK
 * has its own copy of these few lines (it must not import the server).
 */

export function blockId(index: number): string {
  return Buffer.from(`lvb-${String(index).padStart(6, '0')}`).toString('base64');
}

export function blockCount(sizeBytes: number, blockBytes: number): number {
  return Math.ceil(sizeBytes / blockBytes);
}

/** The size block `index` must have. */
export function blockSize(index: number, sizeBytes: number, blockBytes: number): number {
  return Math.min(blockBytes, sizeBytes - index * blockBytes);
}

export function expectedBlockIds(sizeBytes: number, blockBytes: number): string[] {
  return Array.from({ length: blockCount(sizeBytes, blockBytes) }, (_, i) => blockId(i));
}

/** What is wrong with a client's block list against what storage holds, or undefined when it is exactly right. */
export function blockListProblem(
  given: readonly string[],
  staged: readonly { id: string; size: number }[],
  sizeBytes: number,
  blockBytes: number,
): string | undefined {
  const expected = expectedBlockIds(sizeBytes, blockBytes);
  if (given.length !== expected.length) {
    return `expected ${expected.length} block ids for ${sizeBytes} bytes in blocks of ${blockBytes}, got ${given.length}`;
  }
  const stagedSizes = new Map(staged.map((b) => [b.id, b.size]));
  for (const [i, id] of given.entries()) {
    if (id !== expected[i]) return `block ${i} must be ${expected[i]} (blocks are committed in order, ids as documented)`;
    const size = stagedSizes.get(id);
    if (size === undefined) return `block ${i} (${id}) was never staged`;
    const want = blockSize(i, sizeBytes, blockBytes);
    if (size !== want) return `block ${i} holds ${size} bytes, expected ${want}: the file differs from the session's size`;
  }
  return undefined;
}

/** True when `blocks` are exactly `listed` (ids of the session's list), in that order, each of its documented size. */
export function holdsAsDocumented(
  blocks: readonly { id: string; size: number }[],
  listed: readonly string[],
  sizeBytes: number,
  blockBytes: number,
): boolean {
  if (blocks.length !== listed.length) return false;
  const index = new Map(expectedBlockIds(sizeBytes, blockBytes).map((id, i) => [id, i]));
  return blocks.every((b, k) => {
    const i = index.get(b.id);
    return b.id === listed[k] && i !== undefined && b.size === blockSize(i, sizeBytes, blockBytes);
  });
}
