import type { Principal } from '../auth/principal.ts';
import type { Db } from '../db/client.ts';
import { NotFoundError } from '../domain/errors.ts';
import { attachmentDisposition, ownerFileName } from '../domain/owner-file-name.ts';
import { parseLoraId } from '../domain/validation.ts';
import type { BlobStore } from '../storage/blob-store.ts';
import { AuditAction, audit } from './audit.ts';
import { downloadRow, sasOrNotFound } from './downloads.ts';

/**
 * Owners download their own LoRAs (createLoraDownload): a short-lived read-only SAS URL for a
 * READY LoRA of the caller (admins: of anyone) whose response carries `Content-Disposition:
 * attachment` with the display name as file name (domain/owner-file-name.ts). Anyone else gets
 * LORA_NOT_FOUND, the answer for an id that does not exist. Every URL handed out is audited.
 */

export interface OwnerDownloadView {
  loraId: string;
  url: string;
  expiresAt: Date;
  /** The name the browser saves the file under (display name + detected format's extension). */
  fileName: string;
  sizeBytes: number;
  sha256: string;
}

export class OwnerDownloadService {
  constructor(
    private readonly db: Db,
    private readonly blobs: BlobStore,
    private readonly sasTtlSeconds: number,
  ) {}

  async create(principal: Principal, id: string): Promise<OwnerDownloadView> {
    const fileId = parseLoraId(id);
    const row = await downloadRow(this.db, fileId);
    const mine = principal.role === 'admin' || (principal.role === 'user' && row?.user_id === principal.userId);
    if (fileId === null || row?.status !== 'READY' || !mine) throw new NotFoundError(id);
    const fileName = ownerFileName(row.name, row.format);
    const disposition = attachmentDisposition(fileName);
    const link = await sasOrNotFound(id, () =>
      this.blobs.loraSasWithDisposition(row.blob_path, this.sasTtlSeconds, disposition, row.blob_snapshot),
    );
    await this.db.$transaction((tx) =>
      audit(tx, principal, {
        action: AuditAction.OWNER_DOWNLOAD,
        userId: row.user_id,
        loraId: fileId,
        details: { fileName, expiresAt: link.expiresAt },
      }),
    );
    return { loraId: id, url: link.url, expiresAt: link.expiresAt, fileName, sizeBytes: Number(row.size_bytes), sha256: row.sha256.trim() };
  }
}
