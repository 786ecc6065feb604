import type { Tx } from '../db/client.ts';
import { findLoraRow } from '../db/lora-reads.ts';
import { type LoraGenOutData, loraGenOutData, uploadSourceOf, ValidationStatus } from '../domain/flat-file-contract.ts';
import { type LoraRow, toLoraView } from '../domain/lora.ts';

/**
 * Keeps a stored LoRA's `flat_file.gen_out_data` equal to what the API shows of it
 * (docs/flat-file.md), keeping the row's recorded upload source. Rows that never became READY
 * (no gen_out_data yet) are left alone.
 */

/** The gen_out_data a READY or DELETED LoRA row should carry, or null when it has none to carry. */
export function currentGenOutData(row: LoraRow & { gen_out_data: unknown }): LoraGenOutData | null {
  if (row.status !== 'READY' && row.status !== 'DELETED') return null;
  return loraGenOutData(toLoraView(row), { uploadSource: uploadSourceOf(row.gen_out_data), validationStatus: ValidationStatus.SAFE });
}

/** Rewrites one LoRA's gen_out_data inside the caller's transaction (after a metadata edit). */
export async function refreshGenOutData(tx: Tx, fileId: bigint): Promise<void> {
  const row = await findLoraRow(tx, fileId);
  const file = await tx.flat_file.findUnique({ where: { id: fileId }, select: { gen_out_data: true } });
  if (!row || !file) return;
  const data = currentGenOutData({ ...row, gen_out_data: file.gen_out_data });
  if (data) await tx.flat_file.update({ where: { id: fileId }, data: { gen_out_data: data as object } });
}
