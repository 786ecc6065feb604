import {
  AccountDeletedError,
  FileTooLargeError,
  InvalidFileError,
  QuotaExceededError,
  TooManyUploadsError,
  UnsafeFileError,
  UploadInterruptedError,
  UploadSessionNotFoundError,
  ValidationError,
} from '../../server/domain/errors.ts';
import type { UploadSessionView } from '../../server/services/upload-sessions.ts';
import { builder } from '../builder.ts';
import { UploadLoraSuccess, UploadSourceEnum } from './uploads.ts';

/** Resumable direct-to-Blob uploads (issue 17; docs/API.md "Resumable uploads"). */

const SessionStateEnum = builder.enumType('LoraUploadSessionState', {
  values: {
    OPEN: { description: 'Blocks may be staged; the reservation counts against your quota' },
    COMPLETING: { description: 'completeLoraUpload is validating the file' },
    COMPLETED: { description: 'The LoRA is READY (loraId)' },
    FAILED: { description: 'The file was refused; nothing was kept' },
    ABORTED: { description: 'Ended by abortLoraUpload' },
    EXPIRED: { description: 'Ended by the reconciler after expiresAt' },
  } as const,
});

const SessionRef = builder.objectRef<UploadSessionView>('LoraUploadSession').implement({
  description:
    'A resumable upload: stage blocks (`blockIds`, each `blockBytes` but the last) to `uploadUrl` with Put Block, then completeLoraUpload.',
  fields: (t) => ({
    id: t.exposeID('id', { description: 'Also the uploadId of its uploadProgress' }),
    state: t.field({ type: SessionStateEnum, resolve: (s) => s.state }),
    fileName: t.exposeString('fileName'),
    name: t.exposeString('name'),
    sizeBytes: t.expose('sizeBytes', { type: 'Bytes' }),
    blockBytes: t.exposeInt('blockBytes'),
    blockCount: t.exposeInt('blockCount'),
    blockIds: t.exposeStringList('blockIds', { description: 'The block ids to stage and commit, in order' }),
    expiresAt: t.expose('expiresAt', { type: 'DateTime', description: 'The session and its reservation end then' }),
    uploadUrl: t.exposeString('uploadUrl', {
      nullable: true,
      description: 'Write-only SAS for this session’s blob (create/write; no read, list or other blob). Only from begin and renew.',
    }),
    uploadUrlExpiresAt: t.expose('uploadUrlExpiresAt', { type: 'DateTime', nullable: true }),
    stagedBlockIds: t.exposeStringList('stagedBlockIds', {
      nullable: true,
      description: 'loraUploadSession only: the blocks storage holds (its uncommitted block list)',
    }),
    stagedBytes: t.expose('stagedBytes', { type: 'Bytes', nullable: true }),
    loraId: t.exposeID('loraId', { nullable: true }),
  }),
});

const notFound = [UploadSessionNotFoundError, UploadInterruptedError];

builder.queryField('loraUploadSession', (t) =>
  t.field({
    type: SessionRef,
    description: 'One of your upload sessions, with the blocks storage already holds.',
    authScopes: { user: true },
    errors: { types: [UploadSessionNotFoundError], union: { name: 'LoraUploadSessionResult' } },
    args: { id: t.arg.id({ required: true }) },
    resolve: (_root, { id }, ctx) => ctx.services.uploadSessions.get(ctx.principal, String(id)),
  }),
);

builder.mutationFields((t) => ({
  beginLoraUpload: t.field({
    type: SessionRef,
    description:
      'Start a resumable upload: checks the size limit and reserves quota (bytes and one LoRA) until completed, aborted or expired.',
    authScopes: { user: true },
    errors: {
      types: [QuotaExceededError, FileTooLargeError, ValidationError, AccountDeletedError],
      union: { name: 'BeginLoraUploadResult' },
    },
    args: {
      fileName: t.arg.string({ required: true }),
      sizeBytes: t.arg({ type: 'Bytes', required: true }),
      name: t.arg.string(),
      tags: t.arg.stringList(),
      metadata: t.arg({ type: 'JSON' }),
      sha256: t.arg.string({ description: 'When given, the stored file must have it' }),
      uploadSource: t.arg({
        type: UploadSourceEnum,
        description: 'Where the upload comes from, as uploadLora’s; none records `resumable` (docs/flat-file.md)',
      }),
    },
    resolve: (_root, args, ctx) => ctx.services.uploadSessions.begin(ctx.principal, args),
  }),
  renewLoraUpload: t.field({
    type: SessionRef,
    description: 'A fresh uploadUrl for an OPEN session.',
    authScopes: { user: true },
    errors: { types: notFound, union: { name: 'RenewLoraUploadResult' } },
    args: { id: t.arg.id({ required: true }) },
    resolve: (_root, { id }, ctx) => ctx.services.uploadSessions.renew(ctx.principal, String(id)),
  }),
  completeLoraUpload: t.field({
    type: UploadLoraSuccess,
    description:
      'Commit exactly the session’s blockIds, then validate the stored file as uploadLora does (uploadProgress on the session id). A wrong block list leaves the session OPEN; an invalid file ends it with nothing kept.',
    authScopes: { user: true },
    errors: {
      types: [
        UploadSessionNotFoundError,
        QuotaExceededError,
        InvalidFileError,
        FileTooLargeError,
        UnsafeFileError,
        UploadInterruptedError,
        ValidationError,
        TooManyUploadsError,
        AccountDeletedError,
      ],
      union: { name: 'CompleteLoraUploadResult' },
    },
    args: { id: t.arg.id({ required: true }), blockIds: t.arg.stringList({ required: true }) },
    resolve: (_root, { id, blockIds }, ctx) => ctx.services.uploadSessions.complete(ctx.principal, String(id), blockIds),
  }),
  abortLoraUpload: t.field({
    type: SessionRef,
    description: 'End an OPEN session: its blocks are discarded and its reservation released. Ended sessions are returned as they are.',
    authScopes: { user: true },
    errors: { types: [UploadSessionNotFoundError], union: { name: 'AbortLoraUploadResult' } },
    args: { id: t.arg.id({ required: true }) },
    resolve: (_root, { id }, ctx) => ctx.services.uploadSessions.abort(ctx.principal, String(id)),
  }),
}));
