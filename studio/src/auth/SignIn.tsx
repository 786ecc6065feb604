import { type FormEvent, useEffect, useState } from 'react';
import { DEV_TOKENS_URL } from '../config.ts';
import { newUuid } from '../shared/format.ts';

/**
 * Sign-in: against a development server (`npm start` on its generated secret) a picker of demo
 * users whose tokens the server mints; everywhere, Studio's own bearer token pasted in.
 */

interface DevIdentity {
  label: string;
  userId: string;
  token: string;
}

async function fetchDevIdentities(user?: string): Promise<DevIdentity[] | null> {
  const url = user ? `${DEV_TOKENS_URL}?user=${encodeURIComponent(user)}` : DEV_TOKENS_URL;
  const response = await fetch(url, { headers: { accept: 'application/json' } }).catch(() => null);
  if (!response?.ok) return null;
  const body = (await response.json().catch(() => null)) as { identities?: DevIdentity[] } | null;
  return body?.identities ?? null;
}

export function SignIn({ onSignIn }: { onSignIn: (token: string) => void }) {
  const [identities, setIdentities] = useState<DevIdentity[] | null | undefined>(undefined);
  const [pasted, setPasted] = useState('');
  const [otherUser, setOtherUser] = useState('');
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    void fetchDevIdentities().then(setIdentities);
  }, []);

  const signInAs = async (userId: string) => {
    const found = await fetchDevIdentities(userId);
    if (found?.[0]) onSignIn(found[0].token);
    else setError('The server did not hand out a token for that user id (it must be a UUID).');
  };
  const submitToken = (event: FormEvent) => {
    event.preventDefault();
    const token = pasted.trim().replace(/^Bearer\s+/i, '');
    if (token.split('.').length !== 3) setError('That does not look like a bearer token (three parts separated by dots).');
    else onSignIn(token);
  };

  return (
    <main className="signin" aria-labelledby="signin-heading">
      <h1 id="signin-heading">Sign in to your LoRA library</h1>
      {error && <p role="alert">{error}</p>}
      {identities && (
        <section aria-labelledby="dev-heading" className="signin__dev" data-testid="dev-picker">
          <h2 id="dev-heading">Development users</h2>
          <p>This server runs on its development secret and hands out tokens to this machine.</p>
          <ul className="signin__users">
            {identities.map((i) => (
              <li key={i.userId}>
                <button type="button" className="button button--primary" onClick={() => onSignIn(i.token)}>
                  Sign in as {i.label}
                </button>{' '}
                <code>{i.userId}</code>
              </li>
            ))}
            <li>
              <button type="button" className="button" onClick={() => void signInAs(newUuid())}>
                Sign in as a new, empty user
              </button>
            </li>
          </ul>
          <form
            className="signin__other"
            onSubmit={(e) => {
              e.preventDefault();
              void signInAs(otherUser.trim());
            }}
          >
            <label htmlFor="dev-user-id">Another user id</label>
            <input id="dev-user-id" value={otherUser} placeholder="UUID" onChange={(e) => setOtherUser(e.target.value)} />
            <button type="submit" className="button">
              Sign in as this user
            </button>
          </form>
        </section>
      )}
      <form className="signin__token" onSubmit={submitToken}>
        <h2>Bearer token</h2>
        <label htmlFor="bearer-token">Your Studio bearer token</label>
        <textarea id="bearer-token" rows={3} value={pasted} onChange={(e) => setPasted(e.target.value)} spellCheck={false} />
        <button type="submit" className="button">
          Sign in with this token
        </button>
      </form>
    </main>
  );
}
