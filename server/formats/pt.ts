/**
 * Decides whether a `.pt` upload is a plain torch.save of tensors that `torch.load` can open
 * without running anything outside the allowlist — statically, never unpickling. Two containers:
 * - pt-zip (torch ≥ 1.6): a zip with one top folder `X/` holding `X/data.pkl`, its storages
 *   `X/data/<key>` and small version records;
 * - pt-pickle (legacy): consecutive pickles then raw storage bytes (pt-legacy.ts).
 * Safety is decided before layout: a file that is both malformed and unsafe reports UNSAFE_FILE.
 */
import { InvalidFileError, UnsafeFileError, type UnsafeFinding } from '../domain/errors.ts';
import { storageBytes } from './pickle-allowlist.ts';
import { type PickleScan, type StorageRef, scanPickle, unsafeFindings } from './pickle-scan.ts';
import { checkLegacyPt } from './pt-legacy.ts';
import { inspectZip, type RandomAccessReader, readZipEntry, type ZipEntry } from './zip-inspect.ts';

export const PT_LIMITS = {
  /** Pickle bytes we scan per file, all pickles together (data.pkl, or the leading pickles of a legacy file). */
  maxPickleBytes: 16 * 1024 * 1024,
  /** .pkl entries per archive (torch.save writes one); bounds the scanning work per file. */
  maxPickleEntries: 4,
  /** Largest version/byteorder/id record. */
  maxRecordBytes: 128,
} as const;

export interface PtCheck {
  /** Pickles scanned (every .pkl entry, or the leading pickles of a legacy file). */
  pickles: number;
  /** Distinct imports over all of them (all allowlisted). */
  globals: string[];
  /** Tensors rebuilt by the data pickle. */
  tensors: number;
}

/**
 * Validates a torch file and returns what its pickles import; throws InvalidFileError
 * (detectedFormat = `kind`) for anything malformed and UnsafeFileError for any import or
 * construct outside the allowlist (pickle-allowlist.ts).
 */
export async function checkPtFile(reader: RandomAccessReader, kind: 'pt-zip' | 'pt-pickle'): Promise<PtCheck> {
  return kind === 'pt-zip' ? checkTorchZip(reader) : checkLegacyPt(reader, PT_LIMITS.maxPickleBytes);
}

const FORMAT = 'pt-zip';
const fail = (reason: string) => new InvalidFileError(FORMAT, reason);
/** Every record torch.save writes next to data.pkl (relative to the top folder). */
const KNOWN_RECORD = /^(?:version|\.format_version|\.storage_alignment|byteorder|\.data\/serialization_id|\.data\/version)$/;
const STORAGE_RECORD = /^data\/([0-9]{1,20})$/;

async function checkTorchZip(reader: RandomAccessReader): Promise<PtCheck> {
  const entries = await inspectZip(reader, { format: FORMAT });

  // 1. Safety: every pickle, wherever it is and whatever its case, and TorchScript markers.
  const pickles = entries.filter((e) => !e.isDirectory && e.name.toLowerCase().endsWith('.pkl'));
  if (pickles.length > PT_LIMITS.maxPickleEntries) throw fail(`${pickles.length} pickle entries (at most ${PT_LIMITS.maxPickleEntries})`);
  const pickleBytes = pickles.reduce((n, e) => n + e.uncompressedSize, 0);
  if (pickleBytes > PT_LIMITS.maxPickleBytes) throw fail(`the pickles hold more than ${PT_LIMITS.maxPickleBytes} bytes`);
  const findings: UnsafeFinding[] = [];
  const scans = new Map<string, PickleScan>();
  for (const e of entries) {
    if (/^[^/]+\/(?:code\/|constants\.pkl$)/i.test(e.name)) {
      findings.push({
        kind: 'torchscript',
        detail: `TorchScript entry ${e.name}: torch.load hands such archives to torch.jit.load, which runs their code`,
        location: e.name,
      });
    }
    if (!pickles.includes(e)) continue;
    const scan = scanPickle(await readZipEntry(reader, e, PT_LIMITS.maxPickleBytes, FORMAT), e.name, { format: FORMAT });
    scans.set(e.name, scan);
    findings.push(...unsafeFindings(scan, e.name));
  }
  if (findings.length) throw new UnsafeFileError(findings);

  // 2. Layout: one top folder with data.pkl, storages and known records only.
  const roots = entries.filter((e) => /^[^/]+\/data\.pkl$/.test(e.name));
  const root = roots[0];
  if (!root) throw fail('no data.pkl in the archive (not a torch.save file)');
  if (roots.length > 1) throw fail('more than one top-level folder with a data.pkl');
  const top = root.name.slice(0, -'data.pkl'.length);
  const storages = new Map<string, ZipEntry>();
  for (const e of entries) {
    if (!e.name.startsWith(top)) throw fail(`entry ${JSON.stringify(e.name)} is outside the archive's top folder ${JSON.stringify(top)}`);
    const rel = e.name.slice(top.length);
    const key = STORAGE_RECORD.exec(rel)?.[1];
    if (key !== undefined) storages.set(key, e);
    else if (KNOWN_RECORD.test(rel)) await checkRecord(reader, e, rel);
    else if (rel !== 'data.pkl')
      throw fail(`unexpected entry ${JSON.stringify(e.name)} (torch.save writes data.pkl, data/<key> and version records only)`);
  }
  const data = scans.get(root.name);
  if (!data) throw fail('data.pkl was not scanned');
  checkStorages(data.storages, storages);
  return { pickles: scans.size, globals: [...new Set([...scans.values()].flatMap((s) => s.globals))], tensors: data.tensors };
}

/** Small text records: printable ASCII; `version` a number, `byteorder` little or big. */
async function checkRecord(reader: RandomAccessReader, e: ZipEntry, rel: string): Promise<void> {
  if (e.uncompressedSize > PT_LIMITS.maxRecordBytes) throw fail(`${e.name} is too large for a version record`);
  const text = (await readZipEntry(reader, e, PT_LIMITS.maxRecordBytes, FORMAT)).toString('latin1');
  const ok = rel.endsWith('version') ? /^[0-9]{1,6}\n?$/ : rel === 'byteorder' ? /^(?:little|big)$/ : /^[\x20-\x7e]*\n?$/;
  if (!ok.test(text)) throw fail(`${e.name} has unexpected content`);
}

/**
 * Every persistent id in data.pkl must be ('storage', <storage class>, key, location, numel) with a
 * `data/<key>` record of exactly numel × element-size bytes, and every record must be referenced.
 */
function checkStorages(refs: StorageRef[], records: Map<string, ZipEntry>): void {
  const bytes = new Map<string, number>();
  for (const ref of refs) {
    const size = storageBytes(ref, fail);
    const record = records.get(ref.key as string);
    if (!record) throw fail(`data.pkl references storage ${JSON.stringify(ref.key)} but the archive has no data/${ref.key}`);
    if (bytes.has(record.name) && bytes.get(record.name) !== size) throw fail(`storage ${ref.key} is referenced with different sizes`);
    bytes.set(record.name, size);
    if (record.uncompressedSize !== size) {
      throw fail(`storage ${ref.key} holds ${record.uncompressedSize} bytes but data.pkl declares ${size}`);
    }
  }
  for (const record of records.values()) {
    if (!bytes.has(record.name)) throw fail(`${record.name} is not referenced by data.pkl`);
  }
}
