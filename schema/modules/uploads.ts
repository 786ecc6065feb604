import { GraphQLUpload } from 'graphql-upload-minimal';
import {
  AccountDeletedError,
  FileTooLargeError,
  InvalidFileError,
  QuotaExceededError,
  TooManyUploadsError,
  UnsafeFileError,
  UploadInterruptedError,
  ValidationError,
} from '../../server/domain/errors.ts';
import { UploadSource } from '../../server/domain/flat-file-contract.ts';
import type { LoraView } from '../../server/domain/lora.ts';
import type { QuotaView } from '../../server/services/quotas.ts';
import { builder } from '../builder.ts';
import { LoraRef } from './loras.ts';
import { LoraQuotaRef } from './quotas.ts';

builder.addScalarType('Upload', GraphQLUpload);

export const UploadSourceEnum = builder.enumType('LoraUploadSource', {
  description: 'Where an upload comes from; recorded as flat_file.gen_out_data.upload_source (docs/flat-file.md).',
  values: {
    EMPROPS_STUDIO: { value: UploadSource.EMPROPS_STUDIO, description: 'EmProps Studio (recorded as `emprops_studio`)' },
    API: { value: UploadSource.API, description: 'Any other client (recorded as `api`; uploadLora’s default)' },
  } as const,
});

export const UploadLoraSuccess = builder.objectRef<{ lora: LoraView; quota: QuotaView }>('UploadLoraSuccess').implement({
  description: 'The new READY LoRA and the quota after it (warning from 80 %).',
  fields: (t) => ({
    lora: t.expose('lora', { type: LoraRef }),
    quota: t.expose('quota', { type: LoraQuotaRef }),
  }),
});

builder.mutationField('uploadLora', (t) =>
  t.field({
    type: UploadLoraSuccess,
    description:
      'Upload a .safetensors or .pt LoRA (multipart request; one file, ≤ MAX_UPLOAD_BYTES). Pass `sizeBytes` to be refused before any byte is stored when over quota, and `uploadId` (a UUID) to follow `uploadProgress`.',
    authScopes: { user: true },
    errors: {
      types: [
        QuotaExceededError,
        InvalidFileError,
        FileTooLargeError,
        UnsafeFileError,
        UploadInterruptedError,
        ValidationError,
        TooManyUploadsError,
        AccountDeletedError,
      ],
      union: { name: 'UploadLoraResult' },
    },
    args: {
      file: t.arg({ type: 'Upload', required: true }),
      name: t.arg.string({ description: 'Display name (default: the file name without extension)' }),
      tags: t.arg.stringList(),
      metadata: t.arg({ type: 'JSON', description: '{ baseModel, triggerWords, description, title }' }),
      uploadId: t.arg.id({ description: 'A client-generated UUID for uploadProgress' }),
      sizeBytes: t.arg({ type: 'Bytes', description: 'The declared file size' }),
      uploadSource: t.arg({ type: UploadSourceEnum, description: 'Where the upload comes from (default API)' }),
    },
    resolve: async (_root, args, ctx) =>
      ctx.services.uploads.upload(ctx.principal, {
        file: await args.file,
        name: args.name,
        tags: args.tags,
        metadata: args.metadata,
        uploadId: args.uploadId?.toString(),
        sizeBytes: args.sizeBytes,
        uploadSource: args.uploadSource,
      }),
  }),
);
