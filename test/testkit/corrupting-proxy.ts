import { randomBytes } from 'node:crypto';
import { Agent, createServer, type IncomingMessage, request, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { type BlobClient, BlobSASPermissions, type ContainerClient } from '@azure/storage-blob';
import { sha256 } from './hashes.ts';

/**
 * An HTTP proxy in front of Azurite that injects storage faults on request: error statuses for the
 * server's blob calls (storage-faults, auth tests) and damaged downloads for the cache agent's
 * downloader. Rules are checked in the order added; the first one with uses left (and whose
 * `match` accepts the request) applies. Every request is logged with what was done to it.
 * Point a server at it with `azuriteConnectionString(proxy.port)`, or a SAS URL with
 * `proxy.url(sasUrl)` (the signature does not cover the host).
 */
export type Fault =
  /** Send the headers and this many body bytes, then destroy the socket. */
  | { kind: 'truncate'; afterBytes: number }
  /** Flip one bit of the byte at this absolute blob offset (only responses covering it use the rule up). */
  | { kind: 'flipBit'; offset: number; bit?: number }
  /** Forward without Range and If-Range: storage answers 200 with the whole blob. */
  | { kind: 'stripRange' }
  /** Replace the response's ETag. */
  | { kind: 'etag'; etag: string }
  /** Answer this status with an Azure-style XML error, without asking storage. */
  | { kind: 'status'; status: number; retryAfterSeconds?: number }
  /** Send the response headers, then nothing (until the client gives up). */
  | { kind: 'stall' }
  /** Wait this long before forwarding. */
  | { kind: 'delay'; ms: number }
  /** Forward once `until` settles (the test decides when, e.g. to hold a completion mid-way). */
  | { kind: 'hold'; until: Promise<unknown> };

export type FaultKind = Fault['kind'];

export interface ProxiedRequest {
  method: string;
  url: string;
  range: string | null;
  ifRange: string | null;
  /** The Azure SDK's range header (`bytes=a-b`), for the server's own reads. */
  msRange: string | null;
}

export interface ProxyLogEntry extends ProxiedRequest {
  /** Status sent to the client (0 if none was sent). */
  status: number;
  /** The fault applied, if any. */
  fault: FaultKind | null;
  /** Response body bytes sent to the client so far. */
  bytes: number;
  /** The exchange is over (response finished, or either side closed). */
  closed: boolean;
}

export interface FaultRule {
  fault: Fault;
  /** How many requests to damage. @default 1 (`Infinity`: every matching request) */
  times?: number;
  /** @default every GET */
  match?: (req: ProxiedRequest) => boolean;
}

export interface CorruptingProxy {
  port: number;
  /** Every request so far, in arrival order. */
  log: ProxyLogEntry[];
  /** Most requests that were in flight at once. */
  maxInFlight: number;
  /** Requests in flight now (a storage read its client stopped without closing stays in flight). */
  readonly inFlight: number;
  add(rule: FaultRule): void;
  /** Drops the rules, the log and the counters. */
  reset(): void;
  /** Requests so far that had this fault applied. */
  count(kind: FaultKind): number;
  /** The same URL through the proxy. */
  url(sasUrl: string): string;
  close(): Promise<void>;
}

const ERROR_CODES: Record<number, string> = { 403: 'AuthenticationFailed', 404: 'BlobNotFound', 500: 'InternalError', 503: 'ServerBusy' };

export async function startCorruptingProxy(targetPort: number): Promise<CorruptingProxy> {
  let rules: { fault: Fault; left: number; match: (req: ProxiedRequest) => boolean }[] = [];
  let inFlight = 0;
  const upstreamAgent = new Agent({ keepAlive: true });

  const proxy: CorruptingProxy = {
    port: 0,
    log: [],
    maxInFlight: 0,
    get inFlight() {
      return inFlight;
    },
    add(rule) {
      rules.push({ fault: rule.fault, left: rule.times ?? 1, match: rule.match ?? ((r) => r.method === 'GET') });
    },
    reset() {
      rules = [];
      proxy.log = [];
      proxy.maxInFlight = 0;
    },
    count: (kind) => proxy.log.filter((e) => e.fault === kind).length,
    url(sasUrl) {
      const url = new URL(sasUrl);
      url.host = `127.0.0.1:${proxy.port}`;
      return url.toString();
    },
    close: async () => {
      server.closeAllConnections();
      upstreamAgent.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };

  const handle = (req: IncomingMessage, res: ServerResponse): void => {
    const info: ProxiedRequest = {
      method: req.method ?? 'GET',
      url: req.url ?? '/',
      range: req.headers.range ?? null,
      ifRange: (req.headers['if-range'] as string | undefined) ?? null,
      msRange: (req.headers['x-ms-range'] as string | undefined) ?? null,
    };
    const entry: ProxyLogEntry = { ...info, status: 0, fault: null, bytes: 0, closed: false };
    proxy.log.push(entry);
    proxy.maxInFlight = Math.max(proxy.maxInFlight, ++inFlight);
    res.once('close', () => {
      inFlight--;
      entry.closed = true;
    });
    const rule = rules.find((r) => r.left > 0 && r.match(info));
    const fault = rule?.fault;
    const use = () => {
      if (rule === undefined || fault === undefined) return;
      rule.left--;
      entry.fault = fault.kind;
    };
    if (fault?.kind !== 'flipBit') use(); // a bit flip is used up only by a response covering its offset

    if (fault?.kind === 'status') {
      req.resume();
      const code = ERROR_CODES[fault.status] ?? 'InjectedFault';
      const headers: Record<string, string> = { 'content-type': 'application/xml' };
      if (fault.retryAfterSeconds !== undefined) headers['retry-after'] = String(fault.retryAfterSeconds);
      entry.status = fault.status;
      res.writeHead(fault.status, headers);
      res.end(`<?xml version="1.0" encoding="utf-8"?><Error><Code>${code}</Code><Message>injected</Message></Error>`);
      return;
    }
    const headers = { ...req.headers };
    if (fault?.kind === 'stripRange') {
      delete headers.range;
      delete headers['if-range'];
    }
    const forward = () => {
      const upstream = request(
        { host: '127.0.0.1', port: targetPort, method: info.method, path: info.url, headers, agent: upstreamAgent },
        (up) => {
          const status = up.statusCode ?? 502;
          entry.status = status;
          const outHeaders = { ...up.headers };
          if (fault?.kind === 'etag') outHeaders.etag = fault.etag;
          res.writeHead(status, outHeaders);
          if (fault?.kind === 'stall') {
            res.flushHeaders();
            up.pause(); // holds the upstream connection until the client gives up
            return;
          }
          let sent = 0;
          const start = status === 206 ? Number(/bytes (\d+)-/.exec(up.headers['content-range'] ?? '')?.[1] ?? 0) : 0;
          up.on('data', (chunk: Buffer) => {
            let out = chunk;
            if (fault?.kind === 'flipBit' && rule !== undefined && rule.left > 0) {
              const at = fault.offset - (start + sent);
              if (at >= 0 && at < chunk.length) {
                use();
                out = Buffer.from(chunk);
                out[at] = (out[at] ?? 0) ^ (1 << (fault.bit ?? 0));
              }
            }
            if (fault?.kind === 'truncate' && sent + out.length >= fault.afterBytes) {
              up.removeAllListeners('data');
              up.pause();
              const keep = fault.afterBytes - sent;
              sent += keep;
              res.flushHeaders();
              if (keep > 0) res.write(out.subarray(0, keep), () => res.destroy());
              else res.destroy();
              return;
            }
            sent += out.length;
            entry.bytes = sent;
            if (!res.write(out)) {
              up.pause();
              res.once('drain', () => up.resume());
            }
          });
          up.on('end', () => res.end());
          up.on('error', () => res.destroy());
        },
      );
      upstream.on('error', () => res.destroy());
      res.once('close', () => {
        if (!res.writableFinished) upstream.destroy();
      });
      req.pipe(upstream);
    };
    if (fault?.kind === 'delay') setTimeout(forward, fault.ms);
    else if (fault?.kind === 'hold') void fault.until.then(forward, forward);
    else forward();
  };

  const server: Server = createServer(handle);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  proxy.port = (server.address() as AddressInfo).port;
  return proxy;
}

// ---------------------------------------------------------------------------------------------
// Blobs to download

export interface TestBlob {
  name: string;
  data: Buffer;
  sha256: string;
  etag: string;
  /** A read SAS URL valid from a minute ago for `ttlMs`. */
  sas(ttlMs?: number): Promise<string>;
}

export { sha256 };

/** Uploads `bytes` random bytes as a block blob. */
export async function uploadRandomBlob(container: ContainerClient, name: string, bytes: number): Promise<TestBlob> {
  const data = randomBytes(bytes);
  const blob = container.getBlockBlobClient(name);
  const uploaded = await blob.uploadData(data);
  return {
    name,
    data,
    sha256: sha256(data),
    etag: uploaded.etag ?? '',
    sas: (ttlMs) => readSas(blob, ttlMs),
  };
}

/** A read SAS URL valid from a minute ago (clock skew) for `ttlMs` (Azure truncates it to whole seconds). */
export function readSas(blob: BlobClient, ttlMs = 3_600_000): Promise<string> {
  return blob.generateSasUrl({
    permissions: BlobSASPermissions.parse('r'),
    startsOn: new Date(Date.now() - 60_000),
    expiresOn: new Date(Date.now() + ttlMs),
  });
}

/** The same bytes with one bit flipped, as the proxy's flipBit fault delivers them. */
export function flipped(data: Buffer, offset: number, bit = 0): Buffer {
  const copy = Buffer.from(data);
  copy[offset] = (copy[offset] ?? 0) ^ (1 << bit);
  return copy;
}

/** The test Azurite (from the global setup's connection string) behind a new corrupting proxy. */
export async function proxyToTestAzurite(connectionString: string): Promise<CorruptingProxy> {
  return startCorruptingProxy(Number(/BlobEndpoint=http:\/\/127\.0\.0\.1:(\d+)/.exec(connectionString)?.[1]));
}
