import type { App } from '../../server/app.ts';

/**
 * The storage invariants, checked by the tests themselves (not by asking the reconciler):
 * READY ⇒ not deleted ⇒ blob committed; the quota row's counters = sum/count of READY rows;
 * and what blobs a user's prefix holds: committed ones and uncommitted (staged-only) ones.
 */

export interface StoredBlob {
  name: string;
  /** Committed content exists (a staged-only blob has none). */
  committed: boolean;
  uncommittedBlocks: number;
}

/** Every blob under `prefix`, staged-only ones included, with its block list. */
export async function blobsUnder(app: App, prefix: string): Promise<StoredBlob[]> {
  const out: StoredBlob[] = [];
  for await (const item of app.blobs.list(prefix, { includeUncommitted: true })) {
    const [blocks, committed] = await Promise.all([app.blobs.blocks(item.name), app.blobs.exists(item.name)]);
    // gone between the listing and the look (another test file's upload finishing or discarding): holds nothing
    if (!committed && !blocks?.stagedBlocks) continue;
    out.push({ name: item.name, committed, uncommittedBlocks: blocks?.stagedBlocks ?? 0 });
  }
  return out.sort((a, b) => a.name.localeCompare(b.name));
}

/**
 * The blobs of one user in the server's container: those the user's rows name (LoRAs in any
 * state, upload sessions) and those nothing names at all (leftovers). Stored content other users'
 * LoRAs name too is among them while one of the user's rows names it.
 */
export async function blobsOf(app: App, userId: string): Promise<StoredBlob[]> {
  const [loras, sessions, contents] = await Promise.all([
    app.db.lora.findMany({ select: { user_id: true, blob_path: true } }),
    app.db.upload_session.findMany({ select: { user_id: true, blob_path: true } }),
    app.db.lora_blob.findMany({ select: { blob_path: true } }),
  ]);
  const anyone = new Set([...loras, ...sessions, ...contents].map((r) => r.blob_path));
  const mine = new Set([...loras, ...sessions].filter((r) => r.user_id === userId).map((r) => r.blob_path));
  return (await blobsUnder(app, '')).filter((b) => mine.has(b.name) || !anyone.has(b.name));
}

/** Human-readable violations of the invariants for one user (empty = all hold). */
export async function invariantViolations(app: App, userId: string): Promise<string[]> {
  const violations: string[] = [];
  const rows = await app.db.lora.findMany({
    where: { user_id: userId },
    select: { file_id: true, status: true, deleted_at: true, size_bytes: true, blob_path: true },
  });
  const ready = rows.filter((r) => r.status === 'READY');
  for (const r of ready) {
    if (r.deleted_at) violations.push(`LoRA ${r.file_id} is READY but deleted at ${r.deleted_at.toISOString()}`);
    if (!(await app.blobs.exists(r.blob_path))) violations.push(`LoRA ${r.file_id} is READY but its blob ${r.blob_path} is missing`);
  }
  const files = await app.db.flat_file.findMany({ where: { user_id: userId, hidden: false }, select: { id: true } });
  const readyIds = new Set(ready.map((r) => r.file_id));
  for (const f of files) if (!readyIds.has(f.id)) violations.push(`flat_file ${f.id} is visible but its LoRA is not READY`);
  const quota = await app.db.user_lora_quota.findUnique({ where: { user_id: userId } });
  const sum = ready.reduce((s, r) => s + Number(r.size_bytes), 0);
  const used = Number(quota?.used_bytes ?? 0n);
  const count = quota?.lora_count ?? 0;
  if (used !== sum || count !== ready.length) {
    violations.push(`quota says ${used} bytes / ${count} LoRAs, READY rows hold ${sum} bytes / ${ready.length}`);
  }
  return violations;
}
