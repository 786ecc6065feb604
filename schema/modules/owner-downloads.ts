import { NotFoundError } from '../../server/domain/errors.ts';
import type { OwnerDownloadView } from '../../server/services/owner-downloads.ts';
import { builder } from '../builder.ts';

/** Owners (and admins) download a LoRA themselves: a short-lived link to the API (server/http/owner-download-route.ts), saved under the display name. */

const LoraDownloadLinkRef = builder.objectRef<OwnerDownloadView>('LoraDownloadLink').implement({
  description:
    "A link to your own LoRA's file on this API (`GET /downloads/loras/<token>`: no Authorization header, a plain browser link works), valid until expiresAt (SAS_TTL_SECONDS) and while the LoRA exists. Its response carries `Content-Disposition: attachment` with `fileName` (RFC 6266, `filename*` for non-ASCII names), and serves byte ranges and HEAD.",
  fields: (t) => ({
    loraId: t.exposeID('loraId'),
    url: t.exposeString('url'),
    expiresAt: t.expose('expiresAt', { type: 'DateTime' }),
    fileName: t.exposeString('fileName', {
      description: "The display name, sanitised (no quotes, control characters or path separators), with the detected format's extension",
    }),
    sizeBytes: t.expose('sizeBytes', { type: 'Bytes' }),
    sha256: t.exposeString('sha256'),
  }),
});

builder.mutationField('createLoraDownload', (t) =>
  t.field({
    type: LoraDownloadLinkRef,
    description:
      "The owner (or an admin): a download URL for a READY LoRA; audited. Anyone else's id answers LORA_NOT_FOUND, as a missing id does.",
    authScopes: { user: true, admin: true },
    errors: { types: [NotFoundError], union: { name: 'CreateLoraDownloadResult' } },
    args: { id: t.arg.id({ required: true }) },
    resolve: (_root, { id }, ctx) => ctx.services.ownerDownloads.create(ctx.principal, String(id)),
  }),
);
