import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { extname, resolve, sep } from 'node:path';

/**
 * Serves the built Studio (`studio/dist`, made by `npm run studio:build` or on `npm start`) under
 * `/studio/`: hashed assets cached for a year, `index.html` for every other page path (the app
 * routes itself), a strict Content-Security-Policy (same-origin scripts, styles, API and
 * WebSocket; `connect-src` adds Blob Storage's origin, where uploads PUT their blocks), GET and HEAD only, and no path outside the folder (traversal, NUL, bad escapes: 404).
 */

export const STUDIO_PATH = '/studio';

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.json': 'application/json; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.woff2': 'font/woff2',
  '.txt': 'text/plain; charset=utf-8',
};

function securityHeaders(connectOrigins: readonly string[]) {
  const connect = ["'self'", ...connectOrigins].join(' ');
  return {
    'content-security-policy': `default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src ${connect}; frame-ancestors 'none'; base-uri 'none'; form-action 'none'`,
    'x-content-type-options': 'nosniff',
    'referrer-policy': 'no-referrer',
  };
}

/** `connectOrigins`: origins the page may fetch besides its own (Blob Storage's, for resumable uploads). */
export function createStudioStaticHandler(
  distDir: string,
  connectOrigins: readonly string[] = [],
): (req: IncomingMessage, res: ServerResponse, path: string) => void {
  const root = resolve(distDir);
  const security = securityHeaders(connectOrigins);
  const notFound = (res: ServerResponse, message = 'Not found') => {
    res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8', ...security });
    res.end(message);
  };
  const sendFile = async (req: IncomingMessage, res: ServerResponse, file: string, cache: string): Promise<boolean> => {
    const info = await stat(file).catch(() => null);
    if (!info?.isFile()) return false;
    res.writeHead(200, {
      'content-type': TYPES[extname(file)] ?? 'application/octet-stream',
      'content-length': info.size,
      'cache-control': cache,
      ...security,
    });
    if (req.method === 'HEAD') res.end();
    else createReadStream(file).pipe(res);
    return true;
  };
  return (req, res, path) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain; charset=utf-8' });
      res.end('Method not allowed');
      return;
    }
    if (path === STUDIO_PATH) {
      res.writeHead(308, { location: `${STUDIO_PATH}/` });
      res.end();
      return;
    }
    let relative: string;
    try {
      relative = decodeURIComponent(path.slice(STUDIO_PATH.length + 1));
    } catch {
      notFound(res);
      return;
    }
    const file = resolve(root, relative);
    if (relative.includes('\0') || (file !== root && !file.startsWith(root + sep))) {
      notFound(res);
      return;
    }
    void (async () => {
      const immutable = relative.startsWith('assets/');
      if (relative && (await sendFile(req, res, file, immutable ? 'public, max-age=31536000, immutable' : 'no-cache'))) return;
      // a page path of the app (no file extension) gets the app; a missing asset is a 404
      if (extname(relative) && relative !== 'index.html') return notFound(res);
      if (await sendFile(req, res, resolve(root, 'index.html'), 'no-cache')) return;
      notFound(res, 'Studio is not built: run `npm run studio:build` (npm start builds it when its sources changed).');
    })().catch(() => {
      if (!res.headersSent) notFound(res);
      else res.destroy();
    });
  };
}
