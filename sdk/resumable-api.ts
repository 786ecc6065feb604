/**
 * The `ResumableApi` (resumable-upload.ts) over the API's session operations, for any GraphQL
 * transport given as a `request` function: the SDK client's own (resumable-client.ts) or a
 * browser app's (Studio's urql client). Browser-safe: no Node modules.
 */
import type { TypedDocumentNode } from '@graphql-typed-document-node/core';
import { LoraSdkError } from './errors.ts';
import {
  AbortLoraUploadDocument,
  BeginLoraUploadDocument,
  CompleteLoraUploadDocument,
  type CompleteLoraUploadMutation,
  LoraDocument,
  LoraQuotaDocument,
  LoraUploadSessionDocument,
  RenewLoraUploadDocument,
  type UploadSessionFieldsFragment,
} from './gql/graphql.ts';
import type { ResumableApi } from './resumable-upload.ts';

/** One GraphQL operation: resolves with its data, throws a LoraSdkError. */
export type RequestFn = <TData, TVariables>(
  document: TypedDocumentNode<TData, TVariables>,
  variables: TVariables,
  call?: { signal?: AbortSignal },
) => Promise<TData>;

/** A session, or the typed error the API returned instead thrown as a `domain` LoraSdkError (its `details` hold the figures). */
function session(value: { __typename: string } & Partial<UploadSessionFieldsFragment>): UploadSessionFieldsFragment {
  if (value.__typename === 'LoraUploadSession') return value as UploadSessionFieldsFragment;
  const error = value as unknown as { __typename: string; code: string; message: string };
  throw LoraSdkError.domain(error);
}

export function resumableApi(request: RequestFn, call: { signal?: AbortSignal } = {}): ResumableApi {
  return {
    begin: async (v) => session((await request(BeginLoraUploadDocument, v, call)).beginLoraUpload),
    renew: async (id) => session((await request(RenewLoraUploadDocument, { id }, call)).renewLoraUpload),
    session: async (id) => {
      const found = (await request(LoraUploadSessionDocument, { id }, call)).loraUploadSession;
      if (found.__typename === 'LoraUploadSession') return found;
      if (found.__typename === 'UploadSessionNotFoundError') return undefined;
      throw LoraSdkError.domain(found); // RATE_LIMITED: not an answer about the session
    },
    complete: async (id, blockIds) => (await request(CompleteLoraUploadDocument, { id, blockIds }, call)).completeLoraUpload,
    finished: async (loraId) => {
      const lora = (await request(LoraDocument, { id: loraId }, call)).lora;
      if (lora.__typename !== 'Lora') throw LoraSdkError.domain(lora);
      const quota = (await request(LoraQuotaDocument, {}, call)).loraQuota;
      return { __typename: 'UploadLoraSuccess', lora, quota } as CompleteLoraUploadMutation['completeLoraUpload'];
    },
  };
}

/** Ends a session (its blocks discarded, its reservation released); for a run you will not resume. */
export async function abortResumable(request: RequestFn, id: string): Promise<void> {
  session((await request(AbortLoraUploadDocument, { id })).abortLoraUpload);
}
