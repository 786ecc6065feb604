import { randomUUID } from 'node:crypto';
import type { TestServer } from './server.ts';

/**
 * Mints a job grant for `userId` through the API with a service token. Each call names a new job
 * unless `jobId` is given (two grants minted within one second for the same job are the same token).
 */
export async function mintGrant(
  server: TestServer,
  userId: string,
  options: { ttlSeconds?: number; jobId?: string } = {},
): Promise<string> {
  const res = await server.gql<{ createJobGrant: { __typename: string; token?: string } }>(
    'mutation($u: ID!, $j: String!, $t: Int) { createJobGrant(userId: $u, jobId: $j, ttlSeconds: $t) { __typename ... on JobGrant { token } } }',
    { u: userId, j: options.jobId ?? `job-${randomUUID()}`, t: options.ttlSeconds ?? 3600 },
    { token: await server.tokens.service() },
  );
  const token = res.body.data?.createJobGrant?.token;
  if (!token) throw new Error(`createJobGrant failed: ${JSON.stringify(res.body)}`);
  return token;
}
