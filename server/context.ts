import DataLoader from 'dataloader';
import type { Principal } from './auth/principal.ts';
import type { Services } from './services/index.ts';
import type { WorkflowRef } from './services/loras.ts';

/** What every resolver gets: who is calling, the services, and per-request batch loaders. */
export interface Context {
  principal: Principal;
  services: Services;
  loaders: RequestLoaders;
  requestId: string;
}

/**
 * A request's batch loaders, each made on first use: a `loras` page that does not select
 * `workflowsUsing` makes none (bench:api:profile, docs/decisions.md).
 */
export class RequestLoaders {
  #workflowsUsing: DataLoader<string, WorkflowRef[]> | undefined;

  constructor(private readonly services: Services) {}

  get workflowsUsing(): DataLoader<string, WorkflowRef[]> {
    this.#workflowsUsing ??= new DataLoader((ids: readonly string[]) => this.services.loras.workflowsUsing(ids));
    return this.#workflowsUsing;
  }
}
