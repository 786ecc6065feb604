import type { GraphQLSchema } from 'graphql';
import { builder } from './builder.ts';
import './scalars.ts';
import './errors.ts';
import './modules/quotas.ts';
import './modules/loras.ts';
import './modules/machines.ts';
import './modules/uploads.ts';
import './modules/upload-sessions.ts';
import './modules/events.ts';
import './modules/owner-downloads.ts';
import './modules/accounts.ts';
import './modules/audit.ts';
import './modules/metrics.ts';

let schema: GraphQLSchema | undefined;

/** The executable schema (built once; modules register their types on import). */
export function buildSchema(): GraphQLSchema {
  schema ??= builder.toSchema({ sortSchema: true });
  return schema;
}
