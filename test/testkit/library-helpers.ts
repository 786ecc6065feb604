import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { expect, inject } from 'vitest';
import {
  DeleteLoraDocument,
  type DeleteLoraMutation,
  LoraDocument,
  type LoraPage,
  type LoraQuery,
  type LoraQuotaDetails,
  LoraQuotaDocument,
  LorasDocument,
  type LorasQueryVariables,
  RecordLoraUsageDocument,
  SetUserLoraQuotaDocument,
  type SetUserLoraQuotaMutationVariables,
  UpdateLoraDocument,
  type UpdateLoraMutation,
  type UpdateLoraMutationVariables,
} from '../../sdk/index.ts';
import { dataOf, member } from './graphql-assertions.ts';
import type { GqlResponse, TestServer } from './server.ts';

/**
 * Small helpers shared by the library, deletes-and-quotas and neighbouring integration tests; the
 * operations go through the SDK's generated documents (`server.request`).
 */

/** `loras(...)` through the SDK's document; returns the page (fails the test on any error). */
export async function listLoras(server: TestServer, token: string, variables: LorasQueryVariables = {}): Promise<LoraPage> {
  return dataOf(await server.request(LorasDocument, variables, { token })).loras;
}

/** `lora(id)` through the SDK's document: the result union as served. */
export async function getLora(server: TestServer, token: string, id: string): Promise<LoraQuery['lora']> {
  return dataOf(await server.request(LoraDocument, { id }, { token })).lora;
}

/** `updateLora(...)` through the SDK's document: the result union as served. */
export async function updateLora(
  server: TestServer,
  token: string,
  variables: UpdateLoraMutationVariables,
): Promise<UpdateLoraMutation['updateLora']> {
  return dataOf(await server.request(UpdateLoraDocument, variables, { token })).updateLora;
}

/** `deleteLora(id)` through the SDK's document: the result union as served. */
export async function deleteLora(server: TestServer, token: string, id: string): Promise<DeleteLoraMutation['deleteLora']> {
  return dataOf(await server.request(DeleteLoraDocument, { id }, { token })).deleteLora;
}

/** `setUserLoraQuota(...)` as an admin, through the SDK's document (fails the test on any error). */
export async function setUserLoraQuota(server: TestServer, variables: SetUserLoraQuotaMutationVariables): Promise<LoraQuotaDetails> {
  return dataOf(await server.request(SetUserLoraQuotaDocument, variables, { token: await server.tokens.admin() })).setUserLoraQuota;
}

/** `loraQuota(userId)` as an admin, through the SDK's document. */
export async function quotaOf(server: TestServer, userId: string): Promise<LoraQuotaDetails> {
  return dataOf(await server.request(LoraQuotaDocument, { userId }, { token: await server.tokens.admin() })).loraQuota;
}

/** Asserts a thrown BAD_USER_INPUT; returns the first error for further checks. */
export function expectBadUserInput(res: GqlResponse, issuePath?: string): { message: string; extensions?: Record<string, unknown> } {
  const error = res.body.errors?.[0];
  expect(error, JSON.stringify(res.body)).toBeDefined();
  expect(error?.extensions?.code, JSON.stringify(res.body)).toBe('BAD_USER_INPUT');
  if (issuePath !== undefined) {
    const issues = error?.extensions?.issues as { path: string; message: string }[] | undefined;
    expect(Array.isArray(issues), `issues in ${JSON.stringify(error)}`).toBe(true);
    expect(issues?.map((i) => i.path)).toContain(issuePath);
    for (const issue of issues ?? []) expect(issue.message.length).toBeGreaterThan(0);
  }
  if (error === undefined) throw new Error('unreachable');
  return error;
}

/** Asserts a thrown GraphQLError with the given extensions.code and no data for the field. */
export function expectThrownCode(res: GqlResponse, code: string): void {
  const codes = (res.body.errors ?? []).map((e) => e.extensions?.code);
  expect(codes, JSON.stringify(res.body)).toContain(code);
}

/**
 * Independent NAME order: the lower-cased name compared by Unicode code point (which is UTF-8
 * byte order, i.e. PostgreSQL's COLLATE "C"), not by JavaScript's UTF-16 code units.
 */
export function compareCodePoints(a: string, b: string): number {
  const ca = Array.from(a, (c) => c.codePointAt(0) ?? 0);
  const cb = Array.from(b, (c) => c.codePointAt(0) ?? 0);
  const n = Math.min(ca.length, cb.length);
  for (let i = 0; i < n; i++) {
    const d = (ca[i] ?? 0) - (cb[i] ?? 0);
    if (d !== 0) return d;
  }
  return ca.length - cb.length;
}

export function compareIds(a: string, b: string): number {
  const d = BigInt(a) - BigInt(b);
  return d < 0n ? -1 : d > 0n ? 1 : 0;
}

/** Records one use of `loraIds` by a workflow, as a machine holding `grant`; returns `recorded`. */
export async function recordUsage(
  server: TestServer,
  machineToken: string,
  grant: string,
  loraIds: string[],
  workflowId?: string,
  workflowName?: string,
): Promise<number> {
  const variables = { grant, loraIds, workflowId, workflowName };
  const result = dataOf(await server.request(RecordLoraUsageDocument, variables, { token: machineToken })).recordLoraUsage;
  return member(result, 'RecordLoraUsageSuccess').recorded;
}

/**
 * A fresh, empty database on the test PostgreSQL cluster, for tests that need pg-boss to
 * themselves (its queue is per database: servers of other test files would otherwise run the
 * jobs). The servers started on it migrate it themselves. `drop()` removes it (forcefully).
 */
export async function isolatedDatabase(): Promise<{ url: string; drop(): Promise<void> }> {
  const baseUrl = inject('databaseUrl');
  const name = `lv_isolated_${randomUUID().replace(/-/g, '').slice(0, 16)}`;
  const admin = new pg.Client({ connectionString: baseUrl });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  const url = new URL(baseUrl);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    async drop() {
      const client = new pg.Client({ connectionString: baseUrl });
      await client.connect();
      try {
        await client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } finally {
        await client.end();
      }
    },
  };
}

/** pg-boss rows of the blob-deletion queue for one LoRA. */
export async function deleteJobsFor(server: TestServer, loraId: string): Promise<{ id: string; state: string; retry_count: number }[]> {
  return server.app.db.$queryRaw<{ id: string; state: string; retry_count: number }[]>`
    SELECT id::text AS id, state::text AS state, retry_count
    FROM pgboss.job WHERE name = 'lora.delete-blob' AND data->>'loraId' = ${loraId}`;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
