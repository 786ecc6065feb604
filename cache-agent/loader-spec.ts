import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';

/**
 * The loader nodes' inputs and widget orders, read from the one spec file the ComfyUI package
 * reads too (`comfyui/lora_vault_nodes/loader-spec.json`). In the repository the agent reads it
 * there; the packed agent carries a copy made by `prepack` next to this file.
 */

const input = z.object({
  name: z.string().min(1),
  type: z.string().min(1),
  default: z.unknown().optional(),
  min: z.number().optional(),
  max: z.number().optional(),
  step: z.number().optional(),
});
const nodeSpec = z.object({
  displayName: z.string(),
  category: z.string(),
  aliasIfAbsent: z.boolean().optional(),
  required: z.array(input),
  optional: z.array(input),
  hidden: z.record(z.string(), z.string()),
});
const widgetRule = z.object({
  name: z.string(),
  classes: z.array(z.string()),
  length: z.number().int().optional(),
  at: z.number().int().optional(),
  oneOf: z.array(z.string()).optional(),
  findSource: z.boolean().optional(),
  order: z.array(z.string()).min(1),
});
const specSchema = z.object({
  sources: z.array(z.string()).min(1),
  nodes: z.record(z.string(), nodeSpec),
  idAliases: z.record(z.string(), z.string()),
  legacyClasses: z.record(z.string(), z.string()),
  stockLoaders: z.record(z.string(), z.array(z.string())),
  legacyWidgetOrders: z.array(widgetRule),
});
export type LoaderSpec = z.infer<typeof specSchema>;

export const LOADER_SPEC_FILE = 'loader-spec.json';
/** Where the spec is looked for: the packed copy first, then the repository's ComfyUI package. */
export const LOADER_SPEC_PATHS = [
  join(import.meta.dirname, LOADER_SPEC_FILE),
  join(import.meta.dirname, '../comfyui/lora_vault_nodes', LOADER_SPEC_FILE),
];

/** Types ComfyUI draws as widgets (kept in `widgets_values`); the others are link slots. */
const WIDGET_TYPES = new Set(['COMBO', 'STRING', 'FLOAT', 'INT', 'BOOLEAN']);

export function readLoaderSpec(paths: readonly string[] = LOADER_SPEC_PATHS): LoaderSpec {
  const file = paths.find((p) => existsSync(p));
  if (!file) throw new Error(`${LOADER_SPEC_FILE} not found (looked in ${paths.join(', ')})`);
  return specSchema.parse(JSON.parse(readFileSync(file, 'utf8')));
}

/** A node's widget names in `widgets_values` order: required then optional, widget types only. */
export function widgetOrder(node: LoaderSpec['nodes'][string]): string[] {
  return [...node.required, ...node.optional].filter((i) => WIDGET_TYPES.has(i.type)).map((i) => i.name);
}

export const loaderSpec = readLoaderSpec();

/** Classes whose loader reads `lora_source` / `lora_identifier` (ours, the EmProps key and its legacy class). */
export const SOURCE_LOADERS: ReadonlySet<string> = new Set([...Object.keys(loaderSpec.nodes), ...Object.keys(loaderSpec.legacyClasses)]);
export const STOCK_LOADERS: ReadonlySet<string> = new Set(Object.keys(loaderSpec.stockLoaders));
/** Input names that stand for `lora_identifier` in older workflows (`lora_id`). */
export const IDENTIFIER_KEYS = ['lora_identifier', ...Object.keys(loaderSpec.idAliases)];

/**
 * Names a UI-format node's positional `widgets_values` as the node that wrote it did: a legacy
 * order the values match (EmProps v2, the seed's unpublished order), else the class's own order.
 */
export function nameWidgets(classType: string, values: readonly unknown[]): Record<string, unknown> {
  const named: Record<string, unknown> = Object.create(null);
  const assign = (order: readonly string[], from = 0) =>
    order.forEach((name, i) => {
      if (from + i < values.length) named[name] = values[from + i];
    });
  for (const rule of loaderSpec.legacyWidgetOrders) {
    if (!rule.classes.includes(classType)) continue;
    if (rule.findSource) {
      const at = values.findIndex((v) => typeof v === 'string' && loaderSpec.sources.includes(v));
      if (at >= 0) {
        assign(rule.order, at);
        return named;
      }
      continue;
    }
    const value = rule.at === undefined ? undefined : values[rule.at];
    if ((rule.length === undefined || rule.length === values.length) && (!rule.oneOf || rule.oneOf.includes(value as string))) {
      assign(rule.order);
      return named;
    }
  }
  const own = loaderSpec.nodes[loaderSpec.legacyClasses[classType] ?? classType];
  assign(own ? widgetOrder(own) : (loaderSpec.stockLoaders[classType] ?? []));
  return named;
}
