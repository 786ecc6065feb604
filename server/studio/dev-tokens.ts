import type { IncomingMessage, ServerResponse } from 'node:http';
import { DEV_USERS } from '../auth/dev-identities.ts';
import { signToken } from '../auth/tokens.ts';

/**
 * Studio's development token picker: `GET /studio/dev-tokens` answers user tokens for the demo
 * users (or, with `?user=<uuid>`, for that user), signed with the development secret. Only built
 * when the server generated that secret itself (never in production, never with JWT_SECRET or
 * JWKS), and answered only to loopback clients: anyone who can reach it can act as any user.
 */

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
/** Short-lived: a picked token is for one development session. */
const DEV_TOKEN_TTL_SECONDS = 12 * 3600;

export function isLoopback(address: string | undefined): boolean {
  if (!address) return false;
  const v4 = address.startsWith('::ffff:') ? address.slice(7) : address;
  return address === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(v4);
}

export function createDevTokenHandler(secret: string): (req: IncomingMessage, res: ServerResponse) => void {
  return (req, res) => {
    const send = (status: number, body: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' });
      res.end(JSON.stringify(body));
    };
    if (!isLoopback(req.socket.remoteAddress)) {
      send(403, { error: 'development tokens are handed out to this machine only' });
      return;
    }
    const user = new URL(req.url ?? '/', 'http://localhost').searchParams.get('user');
    if (user !== null && !UUID.test(user)) {
      send(400, { error: 'user must be a UUID' });
      return;
    }
    const wanted = user === null ? DEV_USERS : [{ label: `User ${user.toLowerCase()}`, userId: user.toLowerCase() }];
    void Promise.all(
      wanted.map(async (u) => ({ ...u, token: await signToken(secret, { role: 'user', sub: u.userId }, DEV_TOKEN_TTL_SECONDS) })),
    ).then((identities) => send(200, { identities }));
  };
}
