import { randomUUID } from 'node:crypto';
import { CreateJobGrantDocument, LoraDownloadDocument, type LoraDownloadQuery } from '../../sdk/index.ts';
import { dataOf } from './graphql-assertions.ts';
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
  const variables = { userId, jobId: options.jobId ?? `job-${randomUUID()}`, ttlSeconds: options.ttlSeconds ?? 3600 };
  const res = await server.request(CreateJobGrantDocument, variables, { token: await server.tokens.service() });
  return dataOf(res).createJobGrant.token;
}

/** `loraDownload(id, grant)` through the SDK's document: the result union as served. */
export async function loraDownload(
  server: TestServer,
  token: string,
  id: string,
  grant: string,
): Promise<LoraDownloadQuery['loraDownload']> {
  return dataOf(await server.request(LoraDownloadDocument, { id, grant }, { token })).loraDownload;
}
