import { type DownloadTokens, storedObjectTag } from '../auth/download-tokens.ts';
import { actorOf, type Principal } from '../auth/principal.ts';
import type { Db } from '../db/client.ts';
import { NotFoundError } from '../domain/errors.ts';
import { ownerFileName } from '../domain/owner-file-name.ts';
import { parseLoraId } from '../domain/validation.ts';
import { ConcurrencySlots } from '../limits/concurrency-slots.ts';
import type { BlobStore } from '../storage/blob-store.ts';
import { AuditAction, audit } from './audit.ts';
import { downloadRow } from './downloads.ts';

/**
 * Owners download their own LoRAs (createLoraDownload): a short-lived link to the API's
 * `GET /downloads/loras/<token>` (server/http/owner-download-route.ts) for a READY LoRA of the
 * caller (admins: of anyone), which streams the LoRA's own snapshot with `Content-Disposition:
 * attachment` under the display name (domain/owner-file-name.ts) and only headers of our choosing —
 * never storage's (`x-ms-creation-time` is the first uploader's time on shared content: THREATS
 * row 72). Anyone else gets LORA_NOT_FOUND, the answer for an id that does not exist. Every link
 * handed out is audited; each fetch re-checks that the LoRA is still READY with the same snapshot.
 */

/** Where the links point (the route in server/http/owner-download-route.ts). */
export const OWNER_DOWNLOAD_PATH = '/downloads/loras/';

export interface OwnerDownloadView {
  loraId: string;
  url: string;
  expiresAt: Date;
  /** The name the browser saves the file under (display name + detected format's extension). */
  fileName: string;
  sizeBytes: number;
  sha256: string;
}

/** What a valid link reads, as checked at request time. */
export interface OwnerDownloadTarget {
  holder: string;
  fileName: string;
  path: string;
  snapshot: string | null;
}

export interface OwnerDownloadOptions {
  /** Lifetime of a link (SAS_TTL_SECONDS, as the SAS links it replaces). */
  ttlSeconds: number;
  /** The API's base URL as clients reach it (PUBLIC_URL, else the listening address). */
  publicUrl: () => string;
  /** Downloads streamed at once per holder of links and per process. */
  concurrency: { perUser: number; perProcess: number };
}

export class OwnerDownloadService {
  /** Downloads streaming now (the route takes one per GET it streams). */
  readonly slots: ConcurrencySlots;

  constructor(
    private readonly db: Db,
    private readonly blobs: BlobStore,
    private readonly tokens: DownloadTokens,
    private readonly options: OwnerDownloadOptions,
  ) {
    this.slots = new ConcurrencySlots({ perKey: options.concurrency.perUser, total: options.concurrency.perProcess });
  }

  async create(principal: Principal, id: string): Promise<OwnerDownloadView> {
    const fileId = parseLoraId(id);
    const row = await downloadRow(this.db, fileId);
    const mine = principal.role === 'admin' || (principal.role === 'user' && row?.user_id === principal.userId);
    if (fileId === null || row?.status !== 'READY' || !mine) throw new NotFoundError(id);
    // a LoRA whose stored object is gone gets no link (the answer for any id one cannot have)
    if (!(await this.blobs.objectProperties(row.blob_path, row.blob_snapshot))) throw new NotFoundError(id);
    const fileName = ownerFileName(row.name, row.format);
    const link = await this.tokens.sign({
      holder: actorOf(principal).id ?? principal.role,
      loraId: fileId.toString(),
      objectTag: storedObjectTag(this.blobs.container, row.blob_path, row.blob_snapshot),
      fileName,
      ttlSeconds: this.options.ttlSeconds,
    });
    await this.db.$transaction((tx) =>
      audit(tx, principal, {
        action: AuditAction.OWNER_DOWNLOAD,
        userId: row.user_id,
        loraId: fileId,
        details: { fileName, expiresAt: link.expiresAt },
      }),
    );
    return {
      loraId: id,
      url: `${this.options.publicUrl()}${OWNER_DOWNLOAD_PATH}${link.token}`,
      expiresAt: link.expiresAt,
      fileName,
      sizeBytes: Number(row.size_bytes),
      sha256: row.sha256.trim(),
    };
  }

  /**
   * The object a link reads, or null — one answer for a forged, tampered or expired token and for
   * a LoRA deleted (or its account deleted, or its snapshot replaced) since the link was made.
   */
  async resolve(token: string): Promise<OwnerDownloadTarget | null> {
    const claims = await this.tokens.verify(token);
    if (!claims) return null;
    const row = await downloadRow(this.db, BigInt(claims.loraId));
    if (row?.status !== 'READY') return null;
    if (storedObjectTag(this.blobs.container, row.blob_path, row.blob_snapshot) !== claims.objectTag) return null;
    return { holder: claims.holder, fileName: claims.fileName, path: row.blob_path, snapshot: row.blob_snapshot };
  }
}
