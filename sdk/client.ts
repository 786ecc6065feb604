/**
 * `createLoraClient`: one typed method per operation of the API, over the generated documents.
 * Queries and mutations go over HTTP (`fetch`), subscriptions over graphql-ws, uploads as
 * multipart (Node: streamed from disk over node:http; browsers: XHR with upload progress).
 */
import type { TypedDocumentNode } from '@graphql-typed-document-node/core';
import { type DocumentNode, Kind, type OperationDefinitionNode, print } from 'graphql';
import { createClient as createWsClient, type Client as WsClient } from 'graphql-ws';
import { delay } from './abortable-delay.ts';
import { LoraSdkError, networkError, resultFromResponse } from './errors.ts';
import {
  CacheEventsDocument,
  type CacheEventsSubscription,
  type CacheEventsSubscriptionVariables,
  CreateJobGrantDocument,
  type CreateJobGrantMutation,
  type CreateJobGrantMutationVariables,
  CreateLoraDownloadDocument,
  type CreateLoraDownloadMutation,
  type CreateLoraDownloadMutationVariables,
  DeleteLoraDocument,
  type DeleteLoraMutation,
  type DeleteLoraMutationVariables,
  LoraCacheStatsDocument,
  type LoraCacheStatsQuery,
  type LoraCacheStatsQueryVariables,
  LoraDocument,
  LoraDownloadDocument,
  type LoraDownloadQuery,
  type LoraDownloadQueryVariables,
  type LoraQuery,
  type LoraQueryVariables,
  LoraQuotaDocument,
  type LoraQuotaQuery,
  type LoraQuotaQueryVariables,
  LorasDocument,
  type LorasQuery,
  type LorasQueryVariables,
  LorasStillValidDocument,
  type LorasStillValidQuery,
  type LorasStillValidQueryVariables,
  RecordLoraUsageDocument,
  type RecordLoraUsageMutation,
  type RecordLoraUsageMutationVariables,
  ReportCacheEventDocument,
  type ReportCacheEventMutation,
  type ReportCacheEventMutationVariables,
  ReportCacheStatsDocument,
  type ReportCacheStatsMutation,
  type ReportCacheStatsMutationVariables,
  SetUserLoraQuotaDocument,
  type SetUserLoraQuotaMutationVariables,
  SharedLoraDownloadDocument,
  type SharedLoraDownloadQuery,
  type SharedLoraDownloadQueryVariables,
  UpdateLoraDocument,
  type UpdateLoraMutationVariables,
  UploadLoraDocument,
  type UploadLoraMutation,
  type UploadLoraMutationVariables,
  UploadProgressDocument,
  type UploadProgressSubscription,
  type UploadProgressSubscriptionVariables,
} from './gql/graphql.ts';
import { type GrantKeySet, grantKeysFromResponse, grantKeysUrl } from './grant-keys.ts';
import { abortResumable, type UploadLoraResumableInput, uploadResumable } from './resumable-client.ts';
import { tokenSubject } from './token-subject.ts';

type FetchLike = (input: string, init: RequestInit) => Promise<Response>;

export interface RetryOptions {
  /** Further attempts after the first (queries only). @default 3 */
  retries?: number;
  /** @default 200 */
  baseDelayMs?: number;
  /** @default 5000 */
  maxDelayMs?: number;
}

export interface LoraClientOptions {
  /** The HTTP endpoint, e.g. `https://api.example.com/graphql`. */
  url: string;
  /** A bearer token (JWT). */
  token?: string;
  /** Called before every request and WebSocket connection (for tokens that expire). */
  getToken?: () => string | null | undefined | Promise<string | null | undefined>;
  /** The grant keys' JWK Set. @default `.well-known/jwks.json` beside `url` (https://h/graphql → https://h/.well-known/jwks.json) */
  grantKeysUrl?: string;
  /** The WebSocket endpoint. @default `url` with http(s) → ws(s) */
  wsUrl?: string;
  /** @default globalThis.fetch */
  fetch?: FetchLike;
  /** A WebSocket implementation for runtimes without a global one (Node 20: `import WebSocket from 'ws'`). */
  webSocketImpl?: unknown;
  /** Extra headers on every HTTP request. */
  headers?: Record<string, string>;
  /** Headers computed for each HTTP request, e.g. the W3C `traceparent` of the caller's active span. */
  contextHeaders?: () => Record<string, string>;
  /** Per-attempt timeout of queries and mutations; socket inactivity limit of uploads. @default 30000 */
  timeoutMs?: number;
  /** Retry of idempotent queries on retryable failures (mutations are never retried). `false` turns it off. */
  retry?: RetryOptions | false;
  /** graphql-ws reconnection attempts after an abnormal close. @default 5 */
  wsRetryAttempts?: number;
  /**
   * Called each time the WebSocket is (re)connected and acknowledged; `wasRetry` is true after a
   * lost connection. Subscribers that may have missed events while away reconcile here.
   */
  onConnected?: (wasRetry: boolean) => void;
}

export interface CallOptions {
  signal?: AbortSignal;
}

/** A file on disk (Node; streamed) or a browser `File`/`Blob`. */
export type UploadSource = { path: string; fileName?: string } | Blob;

export interface UploadLoraInput extends Omit<UploadLoraMutationVariables, 'file'> {
  file: UploadSource;
  /** Called as bytes go out: (bytes sent, total bytes of the file). */
  onProgress?: (bytesSent: number, totalBytes: number) => void;
  signal?: AbortSignal;
}

type Success<T extends { __typename: string }, K extends T['__typename']> = Extract<T, { __typename: K }>;

export type LoraPage = LorasQuery['loras'];
export type LoraDetails = Success<LoraQuery['lora'], 'Lora'>;
export type LoraQuotaDetails = LoraQuotaQuery['loraQuota'];
export type DeleteLoraResult = Success<DeleteLoraMutation['deleteLora'], 'DeleteLoraSuccess'>;
export type LoraDownloadLink = Success<CreateLoraDownloadMutation['createLoraDownload'], 'LoraDownloadLink'>;
export type JobGrant = CreateJobGrantMutation['createJobGrant'];
export type LoraDownloadDetails = Success<LoraDownloadQuery['loraDownload'], 'LoraDownload'>;
export type SharedLoraDownloadDetails = Success<SharedLoraDownloadQuery['sharedLoraDownload'], 'LoraDownload'>;
export type RecordUsageResult = Success<RecordLoraUsageMutation['recordLoraUsage'], 'RecordLoraUsageSuccess'>;
export type MachineCacheStats = LoraCacheStatsQuery['loraCacheStats'][number];
export type CacheEvent = CacheEventsSubscription['cacheEvents'];
export type ReportedCacheEvent = Success<ReportCacheEventMutation['reportCacheEvent'], 'CacheEvent'>;
export type UploadLoraResult = Success<UploadLoraMutation['uploadLora'], 'UploadLoraSuccess'>;
export type UploadProgress = UploadProgressSubscription['uploadProgress'];

export interface LoraClient {
  /** Any of the SDK's typed documents (or your own) over HTTP; queries retried like the methods. */
  request<TData, TVariables extends Record<string, unknown>>(
    document: TypedDocumentNode<TData, TVariables>,
    variables: TVariables,
    options?: CallOptions,
  ): Promise<TData>;
  listLoras(variables?: LorasQueryVariables, options?: CallOptions): Promise<LoraPage>;
  getLora(variables: LoraQueryVariables, options?: CallOptions): Promise<LoraDetails>;
  updateLora(variables: UpdateLoraMutationVariables, options?: CallOptions): Promise<LoraDetails>;
  deleteLora(variables: DeleteLoraMutationVariables, options?: CallOptions): Promise<DeleteLoraResult>;
  /** The owner's (or an admin's) short-lived download URL, saved under the display name. */
  createDownload(variables: CreateLoraDownloadMutationVariables, options?: CallOptions): Promise<LoraDownloadLink>;
  getQuota(variables?: LoraQuotaQueryVariables, options?: CallOptions): Promise<LoraQuotaDetails>;
  setQuota(variables: SetUserLoraQuotaMutationVariables, options?: CallOptions): Promise<LoraQuotaDetails>;
  createJobGrant(variables: CreateJobGrantMutationVariables, options?: CallOptions): Promise<JobGrant>;
  getDownload(variables: LoraDownloadQueryVariables, options?: CallOptions): Promise<LoraDownloadDetails>;
  getSharedDownload(variables: SharedLoraDownloadQueryVariables, options?: CallOptions): Promise<SharedLoraDownloadDetails>;
  recordUsage(variables: RecordLoraUsageMutationVariables, options?: CallOptions): Promise<RecordUsageResult>;
  reportCacheStats(variables: ReportCacheStatsMutationVariables, options?: CallOptions): Promise<boolean>;
  getCacheStats(variables?: LoraCacheStatsQueryVariables, options?: CallOptions): Promise<MachineCacheStats[]>;
  lorasStillValid(variables: LorasStillValidQueryVariables, options?: CallOptions): Promise<string[]>;
  reportCacheEvent(variables: ReportCacheEventMutationVariables, options?: CallOptions): Promise<ReportedCacheEvent>;
  /** The public keys job grants verify with (`GET /.well-known/jwks.json`, no token; retried like queries). */
  getGrantKeys(options?: CallOptions): Promise<GrantKeySet>;
  uploadLora(input: UploadLoraInput): Promise<UploadLoraResult>;
  /**
   * Uploads straight to storage in blocks, resuming a session an earlier run (or process) left:
   * only the blocks storage does not hold are sent. Then the API validates the file as uploadLora does.
   */
  uploadLoraResumable(input: UploadLoraResumableInput): Promise<UploadLoraResult>;
  /** Ends a resumable upload session you will not resume. */
  abortLoraUpload(id: string): Promise<void>;
  /** Follows an upload by the uploadId passed to uploadLora; ends after DONE or FAILED. */
  uploadProgress(variables: UploadProgressSubscriptionVariables): AsyncGenerator<UploadProgress, void, undefined>;
  /** LORA_DELETED / LORA_UPDATED and machines' reports; runs until you stop iterating. */
  cacheEvents(variables?: CacheEventsSubscriptionVariables): AsyncGenerator<CacheEvent, void, undefined>;
  /** Closes the WebSocket (if one was opened). */
  close(): Promise<void>;
}

/** The CSRF header the API requires on multipart requests (harmless on the others). */
export const CSRF_HEADER = 'x-graphql-yoga-csrf';

const printed = new WeakMap<DocumentNode, string>();
function source(document: DocumentNode): string {
  let text = printed.get(document);
  if (text === undefined) {
    text = print(document);
    printed.set(document, text);
  }
  return text;
}

/**
 * The document's persisted hash (generated with it), sent along as
 * `extensions.persistedQuery.sha256Hash` so a server that accepts only trusted documents
 * recognises it whatever the query text's formatting.
 */
function extensionsOf(document: DocumentNode): { persistedQuery: { version: 1; sha256Hash: string } } | undefined {
  const hash = (document as { __meta__?: { hash?: string } }).__meta__?.hash;
  return hash ? { persistedQuery: { version: 1, sha256Hash: hash.replace(/^sha256:/, '') } } : undefined;
}

function operationOf(document: DocumentNode): OperationDefinitionNode {
  const operation = document.definitions.find((d): d is OperationDefinitionNode => d.kind === Kind.OPERATION_DEFINITION);
  if (!operation) throw new TypeError('The document has no operation');
  return operation;
}

/** The success member of a result union, or the domain error member thrown as a LoraSdkError. */
function unwrap<T extends { __typename: string }, K extends T['__typename']>(value: T, success: K): Success<T, K> {
  if (value.__typename === success) return value as Success<T, K>;
  const error = value as unknown as { __typename: string; code?: unknown; message?: unknown };
  if (typeof error.code === 'string' && typeof error.message === 'string') {
    throw LoraSdkError.domain(error as { __typename: string; code: string; message: string });
  }
  throw new LoraSdkError({
    kind: 'graphql',
    code: 'UNEXPECTED_RESULT',
    message: `Unexpected result type ${value.__typename}`,
    retryable: false,
  });
}

/** Full jitter: uniform in [0, min(max, base · 2^attempt)]. */
export function backoffDelay(attempt: number, retry: Required<RetryOptions>, random: () => number = Math.random): number {
  return Math.round(random() * Math.min(retry.maxDelayMs, retry.baseDelayMs * 2 ** attempt));
}

function isNode(): boolean {
  const p = (globalThis as { process?: { versions?: { node?: string } } }).process;
  return typeof p?.versions?.node === 'string';
}

function closeEventError(error: unknown): LoraSdkError {
  if (error instanceof LoraSdkError) return error;
  if (Array.isArray(error)) return LoraSdkError.graphql(error);
  const close = error as { code?: unknown; reason?: unknown } | null;
  if (close && typeof close.code === 'number') {
    const reason = typeof close.reason === 'string' && close.reason ? close.reason : `WebSocket closed with ${close.code}`;
    if (close.code === 4401) return new LoraSdkError({ kind: 'graphql', code: 'UNAUTHENTICATED', message: reason, retryable: false });
    if (close.code === 4403) return new LoraSdkError({ kind: 'graphql', code: 'FORBIDDEN', message: reason, retryable: false });
    if (close.code >= 4400 && close.code < 4500 && close.code !== 4408 && close.code !== 4429) {
      return new LoraSdkError({ kind: 'graphql', code: 'BAD_REQUEST', message: reason, retryable: false });
    }
    const limited = close.code === 1013 ? /^RATE_LIMITED: .*?(?:retry after (\d+) s)?$/.exec(reason) : null;
    if (limited) {
      // the server's WebSocket rate limits (1013 Try Again Later; graphql-ws has retried already)
      const seconds = limited[1] === undefined ? {} : { retryAfterSeconds: Number(limited[1]) };
      return new LoraSdkError({ kind: 'graphql', code: 'RATE_LIMITED', message: reason, retryable: true, ...seconds });
    }
    return LoraSdkError.network(`WS_CLOSED_${close.code}`, reason);
  }
  return networkError(error);
}

export function createLoraClient(options: LoraClientOptions): LoraClient {
  const doFetch: FetchLike | undefined = options.fetch ?? (globalThis.fetch ? (input, init) => globalThis.fetch(input, init) : undefined);
  const timeoutMs = options.timeoutMs ?? 30_000;
  const retry: Required<RetryOptions> | null =
    options.retry === false ? null : { retries: 3, baseDelayMs: 200, maxDelayMs: 5_000, ...options.retry };
  let ws: WsClient | undefined;

  async function token(): Promise<string | null | undefined> {
    return options.getToken ? await options.getToken() : options.token;
  }

  async function headers(): Promise<Record<string, string>> {
    const bearer = await token();
    return {
      ...options.headers,
      ...options.contextHeaders?.(),
      [CSRF_HEADER]: '1',
      ...(bearer ? { authorization: `Bearer ${bearer}` } : {}),
    };
  }

  /** One fetch under the per-attempt timeout, the caller's signal also aborting it. */
  async function timed<T>(signal: AbortSignal | undefined, run: (fetch: FetchLike, signal: AbortSignal) => Promise<T>): Promise<T> {
    if (!doFetch) throw new TypeError('No fetch: pass `fetch` to createLoraClient');
    const fetcher = doFetch;
    const controller = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      controller.abort();
    }, timeoutMs);
    const onAbort = () => controller.abort();
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      return await run(fetcher, controller.signal);
    } catch (error) {
      throw networkError(error, timedOut);
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
    }
  }

  function attempt<TData>(document: DocumentNode, variables: unknown, signal?: AbortSignal): Promise<TData> {
    return timed(signal, async (fetch, aborted) => {
      const response = await fetch(options.url, {
        method: 'POST',
        headers: {
          ...(await headers()),
          'content-type': 'application/json',
          accept: 'application/graphql-response+json, application/json',
        },
        body: JSON.stringify({
          query: source(document),
          variables,
          operationName: operationOf(document).name?.value,
          extensions: extensionsOf(document),
        }),
        signal: aborted,
      });
      const text = await response.text();
      return resultFromResponse<TData>(response.status, text, response.headers.get('retry-after'));
    });
  }

  /** `run` again on retryable failures when `idempotent` (full-jitter backoff), else once. */
  async function retrying<T>(idempotent: boolean, signal: AbortSignal | undefined, run: () => Promise<T>): Promise<T> {
    for (let n = 0; ; n++) {
      try {
        return await run();
      } catch (error) {
        const sdkError = networkError(error);
        if (!idempotent || !retry || n >= retry.retries || !sdkError.retryable || signal?.aborted) throw sdkError;
        // a rate limit says how long: wait that (not less), unless it is longer than a retry may wait
        const limitedMs = (sdkError.retryAfterSeconds ?? 0) * 1000;
        if (limitedMs > retry.maxDelayMs) throw sdkError;
        await delay(Math.max(limitedMs, backoffDelay(n, retry)), signal);
      }
    }
  }

  async function request<TData, TVariables>(
    document: TypedDocumentNode<TData, TVariables>,
    variables: TVariables,
    call: CallOptions = {},
  ): Promise<TData> {
    const idempotent = operationOf(document).operation === 'query';
    return retrying(idempotent, call.signal, () => attempt<TData>(document, variables, call.signal));
  }

  function getGrantKeys(call: CallOptions = {}): Promise<GrantKeySet> {
    const url = options.grantKeysUrl ?? grantKeysUrl(options.url);
    return retrying(true, call.signal, () =>
      timed(call.signal, async (fetch, aborted) => {
        const response = await fetch(url, {
          method: 'GET',
          headers: { accept: 'application/jwk-set+json, application/json' },
          signal: aborted,
        });
        return grantKeysFromResponse(response.status, await response.text());
      }),
    );
  }

  function wsClient(): WsClient {
    ws ??= createWsClient({
      url: options.wsUrl ?? options.url.replace(/^http/, 'ws'),
      ...(options.webSocketImpl ? { webSocketImpl: options.webSocketImpl } : {}),
      lazy: true,
      retryAttempts: options.wsRetryAttempts ?? 5,
      ...(options.onConnected ? { on: { connected: (_socket, _payload, wasRetry) => options.onConnected?.(wasRetry) } } : {}),
      connectionParams: async () => {
        const bearer = await token();
        return bearer ? { authorization: `Bearer ${bearer}` } : {};
      },
    });
    return ws;
  }

  function subscribe<TData, TVariables, R>(
    document: TypedDocumentNode<TData, TVariables>,
    variables: TVariables,
    select: (data: TData) => R,
  ): AsyncGenerator<R, void, undefined> {
    // Subscribed now (not on the first next()), so nothing published after this call is missed.
    const iterator = wsClient().iterate<TData>({
      query: source(document),
      variables: (variables ?? {}) as Record<string, unknown>,
      operationName: operationOf(document).name?.value ?? null,
      extensions: extensionsOf(document),
    });
    const generator = (async function* () {
      try {
        for await (const result of iterator) {
          if (result.errors?.length) throw LoraSdkError.graphql(result.errors);
          if (result.data) yield select(result.data as TData);
        }
      } catch (error) {
        throw closeEventError(error);
      } finally {
        await iterator.return?.();
      }
    })();
    // A generator waiting for the next event queues return() until one arrives; ending the
    // subscription first makes that wait finish, so `return()` resolves at once.
    const finish = generator.return.bind(generator);
    generator.return = async (value) => {
      await iterator.return?.();
      return finish(value);
    };
    return generator;
  }

  async function uploadLora(input: UploadLoraInput): Promise<UploadLoraResult> {
    const { file, onProgress, signal, ...rest } = input;
    const isBlob = typeof Blob !== 'undefined' && file instanceof Blob;
    let sizeBytes = rest.sizeBytes;
    let response: { status: number; text: string };
    const operationsFor = (size: number | null | undefined) =>
      JSON.stringify({
        query: source(UploadLoraDocument),
        operationName: 'UploadLora',
        extensions: extensionsOf(UploadLoraDocument),
        variables: { ...rest, ...(size === undefined ? {} : { sizeBytes: size }), file: null },
      });
    if (!isBlob) {
      if (!isNode()) throw new TypeError('Uploading from a path needs Node; pass a File or Blob in browsers');
      const path = (file as { path: string }).path;
      const node = await import('./node-upload.ts');
      sizeBytes ??= await node.fileSize(path);
      response = await node.postStreamedMultipart({
        url: options.url,
        headers: { ...(await headers()) },
        operations: operationsFor(sizeBytes),
        fileVariable: 'variables.file',
        path,
        ...((file as { fileName?: string }).fileName ? { fileName: (file as { fileName: string }).fileName } : {}),
        ...(onProgress ? { onProgress } : {}),
        ...(signal ? { signal } : {}),
        idleTimeoutMs: Math.max(timeoutMs, 120_000),
      });
    } else {
      const blob = file as Blob;
      sizeBytes ??= blob.size;
      const { postBlobMultipart } = await import('./browser-upload.ts');
      response = await postBlobMultipart({
        url: options.url,
        headers: await headers(),
        operations: operationsFor(sizeBytes),
        fileVariable: 'variables.file',
        blob,
        ...(onProgress ? { onProgress } : {}),
        ...(signal ? { signal } : {}),
        ...(doFetch ? { fetch: doFetch } : {}),
      });
    }
    const data = resultFromResponse<UploadLoraMutation>(response.status, response.text);
    return unwrap(data.uploadLora, 'UploadLoraSuccess');
  }

  return {
    request,
    listLoras: async (variables = {}, call) => (await request(LorasDocument, variables, call)).loras,
    getLora: async (variables, call) => unwrap((await request(LoraDocument, variables, call)).lora, 'Lora'),
    updateLora: async (variables, call) => unwrap((await request(UpdateLoraDocument, variables, call)).updateLora, 'Lora'),
    deleteLora: async (variables, call) => unwrap((await request(DeleteLoraDocument, variables, call)).deleteLora, 'DeleteLoraSuccess'),
    createDownload: async (variables, call) =>
      unwrap((await request(CreateLoraDownloadDocument, variables, call)).createLoraDownload, 'LoraDownloadLink'),
    getQuota: async (variables = {}, call) => (await request(LoraQuotaDocument, variables, call)).loraQuota,
    setQuota: async (variables, call) => (await request(SetUserLoraQuotaDocument, variables, call)).setUserLoraQuota,
    createJobGrant: async (variables, call) => (await request(CreateJobGrantDocument, variables, call)).createJobGrant,
    getDownload: async (variables, call) => unwrap((await request(LoraDownloadDocument, variables, call)).loraDownload, 'LoraDownload'),
    getSharedDownload: async (variables, call) =>
      unwrap((await request(SharedLoraDownloadDocument, variables, call)).sharedLoraDownload, 'LoraDownload'),
    recordUsage: async (variables, call) =>
      unwrap((await request(RecordLoraUsageDocument, variables, call)).recordLoraUsage, 'RecordLoraUsageSuccess'),
    reportCacheStats: async (variables, call) =>
      (await request<ReportCacheStatsMutation, ReportCacheStatsMutationVariables>(ReportCacheStatsDocument, variables, call))
        .reportCacheStats,
    getCacheStats: async (variables = {}, call) => (await request(LoraCacheStatsDocument, variables, call)).loraCacheStats,
    lorasStillValid: async (variables, call) =>
      (await request<LorasStillValidQuery, LorasStillValidQueryVariables>(LorasStillValidDocument, variables, call)).lorasStillValid,
    reportCacheEvent: async (variables, call) =>
      unwrap((await request(ReportCacheEventDocument, variables, call)).reportCacheEvent, 'CacheEvent'),
    getGrantKeys,
    uploadLora,
    uploadLoraResumable: async (input) =>
      unwrap(
        // the state is kept per user (the token's subject) unless the caller says whose it is
        await uploadResumable(request, { owner: tokenSubject(await token()), ...input }, options.fetch, timeoutMs),
        'UploadLoraSuccess',
      ) as unknown as UploadLoraResult,
    abortLoraUpload: (id) => abortResumable(request, id),
    uploadProgress: (variables) => subscribe(UploadProgressDocument, variables, (d) => d.uploadProgress),
    cacheEvents: (variables = {}) => subscribe(CacheEventsDocument, variables, (d) => d.cacheEvents),
    async close() {
      const client = ws;
      ws = undefined;
      await client?.dispose();
    },
  };
}
