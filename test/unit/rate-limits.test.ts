import type { IncomingMessage } from 'node:http';
import { describe, expect, it } from 'vitest';
import { LoraSdkError, resultFromResponse } from '../../sdk/errors.ts';
import { loadConfig } from '../../server/config.ts';
import { clientIp } from '../../server/http/client-ip.ts';

describe('rate limit configuration (RATE_LIMIT_* = points/seconds)', () => {
  it('has generous documented defaults', () => {
    expect(loadConfig({})).toMatchObject({
      rateLimits: {
        uploads: { points: 200, windowSeconds: 3600 },
        userMutations: { points: 600, windowSeconds: 60 },
        machineMutations: { points: 20_000, windowSeconds: 60 },
        grants: { points: 6_000, windowSeconds: 60 },
        authFailures: { points: 100, windowSeconds: 300 },
        wsConnections: { points: 120, windowSeconds: 60 },
        wsOpenPerPrincipal: 32,
      },
      trustProxyHops: 0,
    });
  });

  it('parses points/seconds and refuses anything else, every problem at once', () => {
    expect(loadConfig({ RATE_LIMIT_USER_MUTATIONS: '5/2' }).rateLimits.userMutations).toEqual({ points: 5, windowSeconds: 2 });
    expect(() =>
      loadConfig({
        RATE_LIMIT_UPLOADS: '10',
        RATE_LIMIT_GRANTS: '0/60',
        RATE_LIMIT_AUTH_FAILURES: '5/0',
        RATE_LIMIT_WS_CONNECTIONS: '1.5/60',
      }),
    ).toThrow(/RATE_LIMIT_UPLOADS[\s\S]*RATE_LIMIT_GRANTS[\s\S]*RATE_LIMIT_AUTH_FAILURES[\s\S]*RATE_LIMIT_WS_CONNECTIONS/);
  });
});

describe('clientIp', () => {
  const req = (peer: string, forwarded?: string) =>
    ({
      socket: { remoteAddress: peer },
      headers: forwarded === undefined ? {} : { 'x-forwarded-for': forwarded },
    }) as unknown as IncomingMessage;

  it('is the socket peer without trusted proxies, whatever X-Forwarded-For claims', () => {
    expect(clientIp(req('10.0.0.5', '1.2.3.4'), 0)).toBe('10.0.0.5');
    expect(clientIp(req('::ffff:10.0.0.5'), 0)).toBe('10.0.0.5');
    expect(clientIp(req('::1'), 0)).toBe('::1');
  });

  it('takes the entry each trusted proxy appended, never one the client wrote', () => {
    expect(clientIp(req('10.0.0.1', '203.0.113.9'), 1)).toBe('203.0.113.9');
    expect(clientIp(req('10.0.0.1', 'spoofed, 203.0.113.9'), 1)).toBe('203.0.113.9');
    expect(clientIp(req('10.0.0.2', 'spoofed, 203.0.113.9, 10.0.0.1'), 2)).toBe('203.0.113.9');
    // fewer entries than trusted hops: the left-most there is (a proxy that sent none is misconfigured)
    expect(clientIp(req('10.0.0.1'), 1)).toBe('10.0.0.1');
  });
});

describe('the SDK exposes retryAfterSeconds', () => {
  it('from a thrown RATE_LIMITED, from a 429 with Retry-After and no GraphQL body, and from a union member', () => {
    const thrown = catchError(() =>
      resultFromResponse(
        200,
        JSON.stringify({ errors: [{ message: 'slow down', extensions: { code: 'RATE_LIMITED', retryAfterSeconds: 7 } }] }),
      ),
    );
    expect(thrown).toMatchObject({ kind: 'graphql', code: 'RATE_LIMITED', retryable: true, retryAfterSeconds: 7 });
    const bare = catchError(() => resultFromResponse(429, 'Too Many Requests', '12'));
    expect(bare).toMatchObject({ kind: 'network', code: 'HTTP_429', retryable: true, retryAfterSeconds: 12 });
    const member = LoraSdkError.domain({
      __typename: 'RateLimitedError',
      code: 'RATE_LIMITED',
      message: 'm',
      retryAfterSeconds: 3,
    } as never);
    expect(member).toMatchObject({ kind: 'domain', retryable: true, retryAfterSeconds: 3 });
    expect(LoraSdkError.domain({ __typename: 'NotFoundError', code: 'LORA_NOT_FOUND', message: 'm' }).retryAfterSeconds).toBeUndefined();
  });
});

function catchError(fn: () => unknown): LoraSdkError {
  try {
    fn();
  } catch (error) {
    return error as LoraSdkError;
  }
  throw new Error('did not throw');
}
