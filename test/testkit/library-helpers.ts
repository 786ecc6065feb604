import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { expect, inject } from 'vitest';
import type { GqlResponse, TestServer } from './server.ts';

/** Small helpers shared by the library, deletes-and-quotas and neighbouring integration tests. */

export const LORA_FIELDS = `
  id name fileName format sizeBytes sha256 createdAt updatedAt tags status usageCount lastUsedAt
  metadata { baseModel baseModelSource rank alpha networkModule triggerWords description title tensorCount }
`;

export const LIST_QUERY = `
  query List($search: String, $tags: [String!], $baseModel: String, $limit: Int, $offset: Int, $sort: LoraSort, $order: SortOrder) {
    loras(search: $search, tags: $tags, baseModel: $baseModel, limit: $limit, offset: $offset, sort: $sort, order: $order) {
      total limit offset
      loras { id name sizeBytes createdAt lastUsedAt tags metadata { baseModel baseModelSource } }
    }
  }`;

export const GET_QUERY = `
  query Get($id: ID!) {
    lora(id: $id) {
      __typename
      ... on Lora { ${LORA_FIELDS} workflowsUsing { id name lastUsedAt useCount } }
      ... on Error { code message }
    }
  }`;

export const UPDATE_MUTATION = `
  mutation Update($id: ID!, $name: String, $tags: [String!], $metadata: JSON) {
    updateLora(id: $id, name: $name, tags: $tags, metadata: $metadata) {
      __typename
      ... on Lora { ${LORA_FIELDS} }
      ... on ValidationError { code message issues { path message } }
      ... on NotFoundError { code message loraId }
    }
  }`;

export const DELETE_MUTATION = `
  mutation Delete($id: ID!) {
    deleteLora(id: $id) {
      __typename
      ... on DeleteLoraSuccess { loraId quota { usedStorageBytes loraCount maxStorageBytes maxLoraCount } }
      ... on NotFoundError { code message loraId }
    }
  }`;

export const QUOTA_FIELDS = `
  userId maxStorageBytes usedStorageBytes availableBytes utilizationPercent loraCount maxLoraCount warning
  loras { id name sizeBytes }
`;

export interface ListedLora {
  id: string;
  name: string;
  sizeBytes: number;
  createdAt: string;
  lastUsedAt: string | null;
  tags: string[];
  metadata: { baseModel: string | null; baseModelSource: string | null };
}

export interface ListPage {
  total: number;
  limit: number;
  offset: number;
  loras: ListedLora[];
}

/** Runs `loras(...)` as the given token and returns the page (fails the test on any error). */
export async function listLoras(server: TestServer, token: string, variables: Record<string, unknown> = {}): Promise<ListPage> {
  const res = await server.gql<{ loras: ListPage }>(LIST_QUERY, variables, { token });
  expect(res.body.errors, JSON.stringify(res.body.errors)).toBeUndefined();
  const page = res.body.data?.loras;
  if (!page) throw new Error(`no page: ${JSON.stringify(res.body)}`);
  return page;
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
  const res = await server.gql<{ recordLoraUsage: { __typename: string; recorded?: number } }>(
    `mutation($grant: String!, $ids: [ID!]!, $wid: String, $wname: String) {
      recordLoraUsage(grant: $grant, loraIds: $ids, workflowId: $wid, workflowName: $wname) {
        __typename ... on RecordLoraUsageSuccess { recorded } ... on Error { code message }
      }
    }`,
    { grant, ids: loraIds, wid: workflowId, wname: workflowName },
    { token: machineToken },
  );
  const recorded = res.body.data?.recordLoraUsage.recorded;
  if (recorded === undefined) throw new Error(`recordLoraUsage failed: ${JSON.stringify(res.body)}`);
  return recorded;
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
