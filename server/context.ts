import type DataLoader from 'dataloader';
import type { Logger } from 'pino';
import type { Principal } from './auth/principal.ts';
import type { Services } from './services/index.ts';
import type { WorkflowRef } from './services/loras.ts';

/** What every resolver gets: who is calling, the services, and per-request batch loaders. */
export interface Context {
  principal: Principal;
  services: Services;
  loaders: { workflowsUsing: DataLoader<string, WorkflowRef[]> };
  requestId: string;
  log: Logger;
}
