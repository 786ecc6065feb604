/**
 * Who is calling. Built once per request from the bearer token (auth/tokens.ts); the GraphQL
 * context adds the request's id (`x-request-id`), which the audit trail records.
 */
export type Principal = (
  | { role: 'anonymous' }
  | { role: 'user'; userId: string }
  | { role: 'admin'; subject: string }
  | { role: 'machine'; machineId: string }
  | { role: 'service'; subject: string }
) & { readonly requestId?: string };

export type Role = Exclude<Principal['role'], 'anonymous'>;
export const ROLES = ['user', 'admin', 'machine', 'service'] as const satisfies readonly Role[];

export const ANONYMOUS: Principal = Object.freeze({ role: 'anonymous' });

/** A short label for logs and the audit trail. */
export function actorOf(p: Principal): { role: string; id: string | null } {
  switch (p.role) {
    case 'anonymous':
      return { role: p.role, id: null };
    case 'user':
      return { role: p.role, id: p.userId };
    case 'machine':
      return { role: p.role, id: p.machineId };
    default:
      return { role: p.role, id: p.subject };
  }
}
