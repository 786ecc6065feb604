import { useCallback, useEffect, useMemo, useState } from 'react';
import { Provider } from 'urql';
import { SignIn } from './auth/SignIn.tsx';
import { claimsOf, storedToken, storeToken } from './auth/session.ts';
import { createStudioClient } from './client.ts';
import { LibraryPage } from './library/LibraryPage.tsx';
import { PickerPage } from './picker/PickerPage.tsx';

/** Signed out: the sign-in page. Signed in: the library (#/) or the picker demo (#/picker). */
export function App() {
  const [token, setToken] = useState<string | null>(() => storedToken());
  const signOut = useCallback(() => {
    storeToken(null);
    setToken(null);
  }, []);
  const signIn = useCallback((next: string) => {
    storeToken(next);
    setToken(next);
  }, []);
  const studio = useMemo(() => (token ? createStudioClient(token, signOut) : null), [token, signOut]);
  useEffect(() => () => studio?.dispose(), [studio]);
  const route = useHashRoute();

  if (!token || !studio) return <SignIn onSignIn={signIn} />;
  const claims = claimsOf(token);
  return (
    <Provider value={studio.client}>
      <header className="topbar">
        <h1>LoRA library</h1>
        <nav aria-label="Studio">
          <a href="#/" aria-current={route === 'library' ? 'page' : undefined}>
            Library
          </a>
          <a href="#/picker" aria-current={route === 'picker' ? 'page' : undefined}>
            LoRA picker
          </a>
        </nav>
        <p className="topbar__user">
          <span className="hide-narrow">Signed in as </span>
          <code title={claims.sub}>{claims.role === 'user' ? claims.sub?.slice(0, 8) : claims.role}</code>{' '}
          <button type="button" className="button button--quiet" onClick={signOut}>
            Sign out
          </button>
        </p>
      </header>
      <main>{route === 'picker' ? <PickerPage /> : <LibraryPage key={token} token={token} onUnauthenticated={signOut} />}</main>
    </Provider>
  );
}

const read = (): 'library' | 'picker' => (window.location.hash.startsWith('#/picker') ? 'picker' : 'library');

function useHashRoute(): 'library' | 'picker' {
  const [route, setRoute] = useState<'library' | 'picker'>(read);
  useEffect(() => {
    const onChange = () => setRoute(read());
    window.addEventListener('hashchange', onChange);
    return () => window.removeEventListener('hashchange', onChange);
  }, []);
  return route;
}
