import type { CORSOptions } from 'graphql-yoga';

/**
 * CORS for browser clients (CORS_ORIGINS). Only listed origins (or any, with `*`) get CORS
 * headers, and never `Access-Control-Allow-Credentials`: the API authenticates by the
 * `Authorization` header alone, so no cookie or HTTP auth ever needs to cross origins. An
 * unlisted origin gets no CORS headers at all, which browsers treat as a refusal.
 */
export function corsFor(allowedOrigins: readonly string[]): (request: Request) => CORSOptions {
  const any = allowedOrigins.includes('*');
  const allowed = new Set(allowedOrigins);
  return (request) => {
    const origin = request.headers.get('origin');
    if (origin === null || !(any || allowed.has(origin))) return false;
    return {
      origin: [origin],
      credentials: false,
      methods: ['GET', 'POST'],
      allowedHeaders: ['authorization', 'content-type', 'x-request-id', 'x-graphql-yoga-csrf', 'apollo-require-preflight'],
      exposedHeaders: ['x-request-id'],
      maxAge: 600,
    };
  };
}
