import { AccountDeletedError } from '../../server/domain/errors.ts';
import type { AccountDeletionView } from '../../server/services/accounts.ts';
import { builder } from '../builder.ts';
import { LoraQuotaRef } from './quotas.ts';

/** Deleting a user's LoRA account (admins, the service role) and cancelling it before the purge (admins). */

const AccountStatusEnum = builder.enumType('LoraAccountStatus', {
  description: 'ACTIVE: not deleted; DELETED: LoRAs hidden, uploads and grants refused, purge pending; PURGED: blobs and rows gone.',
  values: ['ACTIVE', 'DELETED', 'PURGED'] as const,
});

const LoraAccountDeletionRef = builder.objectRef<AccountDeletionView>('LoraAccountDeletion').implement({
  description: "A user's LoRA account after deleteUserLoraAccount or cancelUserLoraAccountDeletion.",
  fields: (t) => ({
    userId: t.exposeID('userId'),
    status: t.expose('status', { type: AccountStatusEnum }),
    requestedAt: t.expose('requestedAt', { type: 'DateTime', nullable: true }),
    purgeAfter: t.expose('purgeAfter', {
      type: 'DateTime',
      nullable: true,
      description: 'When blobs and rows are purged (ACCOUNT_PURGE_DAYS)',
    }),
    purgedAt: t.expose('purgedAt', { type: 'DateTime', nullable: true }),
    changedLoras: t.exposeInt('changedLoras', { description: 'LoRAs this call hid (delete) or restored (cancel); 0 on a repeat' }),
    quota: t.expose('quota', { type: LoraQuotaRef }),
  }),
});

builder.mutationFields((t) => ({
  deleteUserLoraAccount: t.field({
    type: LoraAccountDeletionRef,
    description:
      "Admins and the service role: hide every LoRA of the user and free the quota (one transaction), tell machines (LORA_DELETED), refuse the user's uploads and grants (ACCOUNT_DELETED), purge blobs and rows after ACCOUNT_PURGE_DAYS. Idempotent. A bad userId throws BAD_USER_INPUT.",
    authScopes: { admin: true, service: true },
    args: { userId: t.arg.id({ required: true }) },
    resolve: (_root, { userId }, ctx) => ctx.services.accounts.delete(ctx.principal, String(userId)),
  }),
  cancelUserLoraAccountDeletion: t.field({
    type: LoraAccountDeletionRef,
    description:
      'Admins, until the purge starts: restore the LoRAs and quota of a deleted account and accept its uploads and grants again. After: ACCOUNT_DELETED.',
    authScopes: { admin: true },
    errors: { types: [AccountDeletedError], union: { name: 'CancelUserLoraAccountDeletionResult' } },
    args: { userId: t.arg.id({ required: true }) },
    resolve: (_root, { userId }, ctx) => ctx.services.accounts.cancel(ctx.principal, String(userId)),
  }),
}));
