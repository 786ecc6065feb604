/**
 * Type-level tests of the SDK, checked by `tsc -p .` (never run): a wrong variable type or a field
 * outside an operation's selection must not compile. Each `@ts-expect-error` fails the build when
 * the line below it stops being an error.
 */
import type { TypedDocumentNode } from '@graphql-typed-document-node/core';
import {
  type CacheEvent,
  type createLoraClient,
  type LoraPage,
  LoraQuotaDocument,
  type LoraQuotaQuery,
  LoraSdkError,
  LorasDocument,
  type LorasQueryVariables,
  type UploadLoraResult,
} from '../../sdk/index.ts';

declare const sdk: ReturnType<typeof createLoraClient>;

export async function variables(): Promise<void> {
  await sdk.listLoras({ limit: 10, sort: 'NAME', order: 'ASC' });
  // @ts-expect-error limit is an Int, not a string
  await sdk.listLoras({ limit: '10' });
  // @ts-expect-error not a LoraSort value
  await sdk.listLoras({ sort: 'POPULARITY' });
  // @ts-expect-error id is required
  await sdk.getLora({});
  // @ts-expect-error tags are strings
  await sdk.updateLora({ id: '1', tags: [1] });
  // @ts-expect-error reportCacheEvent takes a MachineCacheEventType only
  await sdk.reportCacheEvent({ input: { type: 'LORA_DELETED' } });
  const vars: LorasQueryVariables = { search: 'x' };
  // @ts-expect-error unknown variable
  const extra: LorasQueryVariables = { ...vars, nope: 1 };
  void extra;
}

export async function selections(): Promise<void> {
  const page: LoraPage = await sdk.listLoras();
  const first = page.loras[0];
  if (first) {
    const size: number = first.sizeBytes;
    const baseModel: string | null = first.metadata.baseModel;
    void [size, baseModel];
    // @ts-expect-error userId is not in the SDK's selection (admins only)
    void first.userId;
  }
  const quota = await sdk.getQuota();
  // @ts-expect-error LoraQuota has no totalBytes
  void quota.totalBytes;
  const uploaded: UploadLoraResult = await sdk.uploadLora({
    file: { path: '/tmp/x.safetensors' },
    onProgress: (sent, total) => void [sent, total],
  });
  const id: string = uploaded.lora.id;
  void id;
  // @ts-expect-error the success member has no error code
  void uploaded.code;
  for await (const event of sdk.cacheEvents()) {
    const e: CacheEvent = event;
    // @ts-expect-error type is an enum, not any string
    const t: 'SOMETHING' = e.type;
    void t;
  }
}

export async function documents(): Promise<void> {
  // The generated documents carry result and variable types for urql, Apollo and `request`.
  const typed: TypedDocumentNode<LoraQuotaQuery, { userId?: string | number | null }> = LoraQuotaDocument;
  void typed;
  const data = await sdk.request(LorasDocument, { limit: 5 });
  void data.loras.total;
  // @ts-expect-error offset must be a number
  await sdk.request(LorasDocument, { offset: 'x' });
  // @ts-expect-error the selection has no `count`
  void data.loras.count;
}

export function errors(error: unknown): boolean {
  if (error instanceof LoraSdkError) {
    const kind: 'network' | 'graphql' | 'domain' = error.kind;
    void kind;
    return error.retryable && error.code !== 'QUOTA_EXCEEDED';
  }
  return false;
}
