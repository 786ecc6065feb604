import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { ApolloClient, ApolloLink, InMemoryCache } from '@apollo/client';
import { GraphQLWsLink } from '@apollo/client/link/subscriptions';
import { Client, fetchExchange, subscriptionExchange } from '@urql/core';
import UploadHttpLink from 'apollo-upload-client/UploadHttpLink.mjs';
import { buildSchema, isAbstractType, OperationTypeNode } from 'graphql';
import { createClient as createWsClient, type Client as WsClient } from 'graphql-ws';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import WebSocket from 'ws';
import {
  type CacheEventFieldsFragment,
  CacheEventsDocument,
  DeleteLoraDocument,
  LorasDocument,
  ReportCacheEventDocument,
  UploadLoraDocument,
  UploadProgressDocument,
  type UploadProgressSubscription,
} from '../../sdk/gql/graphql.ts';
import { sha256 } from '../testkit/hashes.ts';
import { sd1Lora, sdxlLora } from '../testkit/lora-files.ts';
import { eventually, newUserId, seedLora } from '../testkit/seed.ts';
import { startTestServer, type TestServer } from '../testkit/server.ts';

/**
 * Studio's stacks, for real: urql 6 (fetchExchange + subscriptionExchange over graphql-ws) and
 * Apollo Client 4 (apollo-upload-client 19's UploadHttpLink + GraphQLWsLink, split by operation
 * type) run the SDK's generated typed documents against the real server: a list, an upload of a
 * File (multipart, with the CSRF header) followed by its uploadProgress subscription, and a
 * machine's cacheEvents subscription that sees the user's deleteLora. The wiring is the one
 * sdk/README.md shows (Node 20 adds `ws` as graphql-ws's webSocketImpl). No mocks.
 */

let server: TestServer;
/** Every client and socket made by a test, disposed after it (also when it fails). */
const disposers: (() => unknown)[] = [];

beforeAll(async () => {
  server = await startTestServer();
});
afterEach(async () => {
  for (const dispose of disposers.splice(0).reverse()) await dispose();
});
afterAll(async () => {
  await server?.stop();
});

/** A graphql-ws client as Studio makes one (Node 20 has no global WebSocket: `ws` is passed in). */
function wsClient(token: string): WsClient {
  const ws = createWsClient({
    url: server.graphqlUrl.replace(/^http/, 'ws'),
    webSocketImpl: WebSocket,
    connectionParams: { authorization: `Bearer ${token}` },
    retryAttempts: 0,
  });
  disposers.push(() => ws.dispose());
  return ws;
}

// ---------------------------------------------------------------------------------------------
// The two stacks, wired exactly as sdk/README.md shows

function urqlClient(token: string): Client {
  const ws = wsClient(token);
  return new Client({
    url: server.graphqlUrl,
    fetchOptions: () => ({ headers: { authorization: `Bearer ${token}`, 'x-graphql-yoga-csrf': '1' } }),
    exchanges: [
      fetchExchange,
      subscriptionExchange({
        forwardSubscription: (request) => ({
          subscribe: (sink) => ({ unsubscribe: ws.subscribe({ ...request, query: request.query ?? '' }, sink) }),
        }),
      }),
    ],
  });
}

/**
 * Apollo's cache must know which concrete types each union and interface of the schema covers to
 * match the SDK's fragments (`...ErrorFields` on `Error`, `... on UploadLoraSuccess`); without it,
 * it warns and may drop data. Derived here from the committed contract, schema/schema.graphql.
 */
const schema = buildSchema(readFileSync(new URL('../../schema/schema.graphql', import.meta.url), 'utf8'));
const possibleTypes = Object.fromEntries(
  Object.values(schema.getTypeMap())
    .filter(isAbstractType)
    .map((type) => [type.name, schema.getPossibleTypes(type).map((t) => t.name)]),
);

function apolloClient(token: string): ApolloClient {
  const http = new UploadHttpLink({
    uri: server.graphqlUrl,
    headers: { authorization: `Bearer ${token}`, 'apollo-require-preflight': 'true' },
  });
  const ws = new GraphQLWsLink(wsClient(token));
  const client = new ApolloClient({
    cache: new InMemoryCache({ possibleTypes }),
    link: ApolloLink.split(({ operationType }) => operationType === OperationTypeNode.SUBSCRIPTION, ws, http),
  });
  disposers.push(() => client.stop());
  return client;
}

// ---------------------------------------------------------------------------------------------
// Helpers

/** What a subscription delivered, and a way to wait for a value. */
class Seen<T> {
  readonly values: T[] = [];
  readonly errors: unknown[] = [];
  private waiters: (() => void)[] = [];

  push(value: T | null | undefined, error?: unknown): void {
    if (value) this.values.push(value);
    if (error) this.errors.push(error);
    for (const wake of this.waiters.splice(0)) wake();
  }

  /** Resolves with the first value matching, failing after `timeoutMs` (or on an error). */
  async waitFor(match: (value: T) => boolean, timeoutMs = 10_000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (this.errors.length) throw new Error(`subscription failed: ${JSON.stringify(this.errors)}`);
      const found = this.values.find(match);
      if (found) return found;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`nothing matching within ${timeoutMs} ms; saw ${JSON.stringify(this.values)}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(left, 200));
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }
}

/**
 * graphql-ws does not acknowledge a subscribe: uploadProgress is live once the server has claimed
 * the uploadId for the user (a row it writes before following the upload), plus a moment.
 */
async function untilClaimed(uploadId: string): Promise<void> {
  await eventually(() => server.app.db.upload_claim.findUnique({ where: { upload_id: uploadId } }).then((row) => row ?? undefined));
  await new Promise((r) => setTimeout(r, 200));
}

/**
 * Makes sure a cacheEvents subscription is live on the server before acting: graphql-ws has no
 * acknowledgement of a subscribe, so the machine reports EVICTED events (through the same stack)
 * until its own subscription delivers one.
 */
async function untilLive(seen: Seen<CacheEventFieldsFragment>, report: (reason: string) => Promise<unknown>): Promise<void> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const reason = `probe-${attempt}`;
    await report(reason);
    try {
      await seen.waitFor((e) => e.type === 'EVICTED' && e.reason === reason, 200);
      return;
    } catch (error) {
      if (seen.errors.length) throw error;
    }
  }
  throw new Error('the cacheEvents subscription never went live');
}

const studioFile = (bytes: Buffer, name: string) => new File([new Uint8Array(bytes)], name, { type: 'application/octet-stream' });

// ---------------------------------------------------------------------------------------------

describe('urql 6 with the SDK documents', () => {
  it('lists; uploads a File (multipart) followed by uploadProgress; cacheEvents gets LORA_DELETED (subscriptionExchange + graphql-ws)', async () => {
    const userId = newUserId();
    const seeded = await seedLora(server.app, userId, { name: 'seeded for urql' });
    const user = urqlClient(await server.tokens.user(userId));

    const first = await user.query(LorasDocument, { limit: 10 }).toPromise();
    expect(first.error).toBeUndefined();
    expect(first.data?.loras.total).toBe(1);
    expect(first.data?.loras.loras.map((l) => [l.id, l.name])).toEqual([[seeded.id, 'seeded for urql']]);

    // Studio follows the server side of its upload: subscribe first, then upload with the same uploadId.
    const bytes = sdxlLora();
    const uploadId = randomUUID();
    const progress = new Seen<UploadProgressSubscription['uploadProgress']>();
    const following = user
      .subscription(UploadProgressDocument, { uploadId })
      .subscribe((r) => progress.push(r.data?.uploadProgress, r.error));
    disposers.push(() => following.unsubscribe());
    await untilClaimed(uploadId);
    const file = studioFile(bytes, 'urql style.safetensors');
    const uploaded = await user
      .mutation(UploadLoraDocument, { file, uploadId, sizeBytes: file.size, name: 'From urql', tags: ['studio'] })
      .toPromise();
    expect(uploaded.error).toBeUndefined();
    const result = uploaded.data?.uploadLora;
    if (result?.__typename !== 'UploadLoraSuccess') throw new Error(`upload failed: ${JSON.stringify(result)}`);
    expect(result.lora).toMatchObject({
      name: 'From urql',
      fileName: 'urql style.safetensors',
      sizeBytes: bytes.length,
      sha256: sha256(bytes),
      tags: ['studio'],
      status: 'READY',
    });
    expect(result.lora.metadata.baseModel).toBe('SDXL');
    const done = await progress.waitFor((p) => p.phase === 'DONE');
    expect(done).toMatchObject({ uploadId, loraId: result.lora.id, bytesReceived: bytes.length, totalBytes: bytes.length, error: null });
    expect(progress.values.map((p) => p.phase).filter((phase, i, all) => all[i - 1] !== phase)).toEqual([
      'RECEIVING',
      'VALIDATING',
      'STORING',
      'DONE',
    ]);
    expect(result.quota.loraCount).toBe(2);

    const listed = await user.query(LorasDocument, { sort: 'NAME', order: 'ASC' }, { requestPolicy: 'network-only' }).toPromise();
    expect(listed.data?.loras.loras.map((l) => l.name)).toEqual(['From urql', 'seeded for urql']);

    const machine = urqlClient(await server.tokens.machine('gpu-urql'));
    const seen = new Seen<CacheEventFieldsFragment>();
    const subscription = machine.subscription(CacheEventsDocument, {}).subscribe((r) => seen.push(r.data?.cacheEvents, r.error));
    disposers.push(() => subscription.unsubscribe());
    await untilLive(seen, async (reason) => {
      const r = await machine.mutation(ReportCacheEventDocument, { input: { type: 'EVICTED', loraId: seeded.id, reason } }).toPromise();
      expect(r.data?.reportCacheEvent).toMatchObject({ __typename: 'CacheEvent', machineId: 'gpu-urql' });
    });

    const deleted = await user.mutation(DeleteLoraDocument, { id: result.lora.id }).toPromise();
    expect(deleted.data?.deleteLora).toMatchObject({ __typename: 'DeleteLoraSuccess', loraId: result.lora.id, quota: { loraCount: 1 } });
    const event = await seen.waitFor((e) => e.type === 'LORA_DELETED' && e.loraId === result.lora.id);
    expect(event).toMatchObject({ type: 'LORA_DELETED', loraId: result.lora.id, userId: null, machineId: null });
    expect(seen.errors).toEqual([]);
  });
});

describe('Apollo Client 4 with the SDK documents', () => {
  it('lists; uploads a File (UploadHttpLink) followed by uploadProgress; cacheEvents gets LORA_DELETED (GraphQLWsLink)', async () => {
    // Apollo reports fragments its cache cannot match (a missing possibleTypes entry) on the console.
    const warnings = [vi.spyOn(console, 'warn'), vi.spyOn(console, 'error')];
    disposers.push(() => {
      for (const spy of warnings) spy.mockRestore();
    });
    const userId = newUserId();
    const seeded = await seedLora(server.app, userId, { name: 'seeded for apollo' });
    const user = apolloClient(await server.tokens.user(userId));

    const first = await user.query({ query: LorasDocument, variables: { limit: 10 } });
    expect(first.data?.loras.total).toBe(1);
    expect(first.data?.loras.loras.map((l) => [l.id, l.name])).toEqual([[seeded.id, 'seeded for apollo']]);

    const bytes = sd1Lora();
    const uploadId = randomUUID();
    const progress = new Seen<UploadProgressSubscription['uploadProgress']>();
    const following = user.subscribe({ query: UploadProgressDocument, variables: { uploadId } }).subscribe({
      next: (r) => progress.push(r.data?.uploadProgress, r.error),
      error: (error) => progress.push(undefined, error),
    });
    disposers.push(() => following.unsubscribe());
    await untilClaimed(uploadId);
    const file = studioFile(bytes, 'apollo style.safetensors');
    const uploaded = await user.mutate({
      mutation: UploadLoraDocument,
      variables: { file, uploadId, sizeBytes: file.size, name: 'From apollo', tags: ['studio'] },
    });
    const result = uploaded.data?.uploadLora;
    if (result?.__typename !== 'UploadLoraSuccess') throw new Error(`upload failed: ${JSON.stringify(result)}`);
    expect(result.lora).toMatchObject({
      name: 'From apollo',
      fileName: 'apollo style.safetensors',
      sizeBytes: bytes.length,
      sha256: sha256(bytes),
      tags: ['studio'],
      status: 'READY',
    });
    expect(result.lora.metadata.baseModel).toBe('SD1');
    const done = await progress.waitFor((p) => p.phase === 'DONE');
    expect(done).toMatchObject({ uploadId, loraId: result.lora.id, bytesReceived: bytes.length, totalBytes: bytes.length, error: null });
    expect(progress.values.map((p) => p.phase).filter((phase, i, all) => all[i - 1] !== phase)).toEqual([
      'RECEIVING',
      'VALIDATING',
      'STORING',
      'DONE',
    ]);
    expect(result.quota.loraCount).toBe(2);

    const listed = await user.query({ query: LorasDocument, variables: { sort: 'NAME', order: 'ASC' }, fetchPolicy: 'network-only' });
    expect(listed.data?.loras.loras.map((l) => l.name)).toEqual(['From apollo', 'seeded for apollo']);

    const machine = apolloClient(await server.tokens.machine('gpu-apollo'));
    const seen = new Seen<CacheEventFieldsFragment>();
    const subscription = machine.subscribe({ query: CacheEventsDocument }).subscribe({
      next: (r) => seen.push(r.data?.cacheEvents, r.error),
      error: (error) => seen.push(undefined, error),
    });
    disposers.push(() => subscription.unsubscribe());
    await untilLive(seen, async (reason) => {
      const r = await machine.mutate({
        mutation: ReportCacheEventDocument,
        variables: { input: { type: 'EVICTED', loraId: seeded.id, reason } },
      });
      expect(r.data?.reportCacheEvent).toMatchObject({ __typename: 'CacheEvent', machineId: 'gpu-apollo' });
    });

    const deleted = await user.mutate({ mutation: DeleteLoraDocument, variables: { id: result.lora.id } });
    expect(deleted.data?.deleteLora).toMatchObject({ __typename: 'DeleteLoraSuccess', loraId: result.lora.id, quota: { loraCount: 1 } });
    const event = await seen.waitFor((e) => e.type === 'LORA_DELETED' && e.loraId === result.lora.id);
    expect(event).toMatchObject({ type: 'LORA_DELETED', loraId: result.lora.id, userId: null, machineId: null });
    expect(seen.errors).toEqual([]);
    expect(warnings.flatMap((spy) => spy.mock.calls)).toEqual([]);
  });
});
