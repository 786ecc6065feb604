import { LoraSdkError, networkError } from '@lora-vault/sdk/errors';
import type { RequestFn } from '@lora-vault/sdk/resumable';
import type { Client, CombinedError } from '@urql/core';

/**
 * The SDK's `RequestFn` on Studio's urql client (its token, its document cache: a completed
 * upload's Lora refreshes the library as any mutation does). Queries skip the cache (a session's
 * staged blocks change under it); urql's errors become the SDK's LoraSdkError, so the sentences
 * for network, sign-in and rate-limit failures stay the same.
 */
export function urqlRequest(client: Client): RequestFn {
  return async (document, variables) => {
    const { definitions } = document as unknown as { definitions: readonly { kind: string; operation?: string }[] };
    const result =
      definitions.find((d) => d.kind === 'OperationDefinition')?.operation === 'query'
        ? await client.query(document, variables as never, { requestPolicy: 'network-only' }).toPromise()
        : await client.mutation(document, variables as never).toPromise();
    if (result.error) throw sdkError(result.error);
    if (!result.data) throw LoraSdkError.network('NO_DATA', 'The API answered without data');
    return result.data;
  };
}

function sdkError(error: CombinedError): LoraSdkError {
  if (error.graphQLErrors.length > 0) {
    const status = (error.response as { status?: number } | undefined)?.status;
    return LoraSdkError.graphql(error.graphQLErrors, status);
  }
  return networkError(error.networkError ?? error);
}
