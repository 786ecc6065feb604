/**
 * The bearer token of this tab: kept in sessionStorage (gone when the tab closes, never a cookie,
 * so no request is authenticated by the browser on its own).
 */
const KEY = 'lora-vault.studio.token';

export function storedToken(): string | null {
  return sessionStorage.getItem(KEY);
}

export function storeToken(token: string | null): void {
  if (token) sessionStorage.setItem(KEY, token);
  else sessionStorage.removeItem(KEY);
}

/** The token's claims, for display only (the API verifies it). */
export function claimsOf(token: string): { sub?: string; role?: string; exp?: number } {
  try {
    const payload = token.split('.')[1] ?? '';
    const json = atob(
      payload
        .replace(/-/g, '+')
        .replace(/_/g, '/')
        .padEnd(Math.ceil(payload.length / 4) * 4, '='),
    );
    return JSON.parse(json) as { sub?: string; role?: string; exp?: number };
  } catch {
    return {};
  }
}
