/**
 * @lora-vault/sdk — the typed client of the lora-vault GraphQL API.
 *
 * - `createLoraClient(...)`: one typed method per operation (Node, browsers).
 * - The generated typed documents (`LorasDocument`, `UploadLoraDocument`, …) for urql, Apollo
 *   Client or any `TypedDocumentNode`-aware client, and every schema and operation type.
 * - `LoraSdkError`: the one error type (`kind`, `code`, `retryable`).
 */
export const GRAPHQL_PATH = '/graphql';

export * from './client.ts';
export * from './errors.ts';
export { graphql } from './gql/gql.ts';
export * from './gql/graphql.ts';
export * from './grant-keys.ts';
export type { UploadLoraResumableInput } from './resumable-client.ts';
export type { BlockSource, ResumableRunStats, ResumableState, ResumableStore } from './resumable-upload.ts';
