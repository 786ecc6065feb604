/**
 * The `sub` claim of a JWT bearer token, read without checking its signature: a namespace for
 * state kept on the caller's side (resumable uploads), never a credential. '' when unreadable.
 */
export function tokenSubject(token: string | null | undefined): string {
  try {
    const payload = token?.split('.')[1] ?? '';
    const json = atob(
      payload
        .replace(/-/g, '+')
        .replace(/_/g, '/')
        .padEnd(Math.ceil(payload.length / 4) * 4, '='),
    );
    const sub = (JSON.parse(json) as { sub?: unknown }).sub;
    return typeof sub === 'string' ? sub : '';
  } catch {
    return '';
  }
}
