/**
 * Finds every LoRA a ComfyUI workflow references. Pure: no I/O, never mutates its input, reads
 * only own properties of plain objects (so `__proto__` or `constructor` keys are plain data).
 *
 * Loaders understood (their input names and widget orders come from the loader spec the ComfyUI
 * package reads too, `comfyui/lora_vault_nodes/loader-spec.json`):
 * - `LoraVault_Lora_Loader` (this repository's node), `EmProps_Lora_Loader` and its class name
 *   `EmProps_Lora_Loader_Simple`: `lora_source` ("user" | "shared") and `lora_identifier` (a user
 *   LoRA id, or a shared file name; `lora_id` is accepted for the id), or the legacy `lora_name`.
 * - Stock `LoraLoader` / `LoraLoaderModelOnly`: `lora_name` names a shared-library file.
 */
import { AgentError } from './errors.ts';
import { IDENTIFIER_KEYS, nameWidgets, SOURCE_LOADERS, STOCK_LOADERS } from './loader-spec.ts';
import { normaliseLoraId, normaliseSharedName } from './lora-refs.ts';

export type WorkflowLoraRef = { source: 'user'; id: string; nodeIds: string[] } | { source: 'shared'; name: string; nodeIds: string[] };
export interface WorkflowScan {
  format: 'api' | 'nodes';
  refs: WorkflowLoraRef[];
  problems: { nodeId: string; message: string }[];
}

const MAX_NODES = 10_000;
const SKIPPED_MODES = new Set([2, 4]); // UI format: 2 = muted ("never"), 4 = bypassed
const NEITHER = 'neither an API-format workflow ({ "<id>": { class_type, inputs } }) nor a node list ({ nodes: [...] })';
const tooMany = () => new AgentError('INVALID_WORKFLOW', `the workflow has more than ${MAX_NODES} nodes`);

type Obj = Record<string, unknown>;
type Input = { kind: 'missing' } | { kind: 'linked' } | { kind: 'value'; value: unknown };
type Get = (key: string) => Input;

function isObj(value: unknown): value is Obj {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const proto: unknown = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

function own(obj: Obj, key: string): unknown {
  return Object.hasOwn(obj, key) ? obj[key] : undefined;
}

function preview(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value.length > 60 ? `${value.slice(0, 60)}…` : value);
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  return value === null ? 'null' : Array.isArray(value) ? 'an array' : `a ${typeof value}`;
}

/** "No LoRA selected": absent, null, blank, or ComfyUI's "None" choice. */
function isBlank(input: Input): boolean {
  if (input.kind === 'missing') return true;
  if (input.kind === 'linked') return false;
  const v = input.value;
  return v === null || v === undefined || (typeof v === 'string' && (v.trim() === '' || v.trim() === 'None'));
}

/** The first of `keys` holding something other than a blank; else the first present one. */
function pick(get: Get, keys: string[]): [string, Input] {
  const inputs = keys.map((key): [string, Input] => [key, get(key)]);
  return inputs.find(([, i]) => !isBlank(i)) ?? inputs.find(([, i]) => i.kind !== 'missing') ?? [keys[0] ?? '', { kind: 'missing' }];
}

type Found = { source: 'user'; id: string } | { source: 'shared'; name: string } | { problem: string } | null;
const LINKED = 'is linked to another node, not a literal value';

/** One loader node's inputs, whatever format they came from: a reference, a problem, or no LoRA. */
function readLoader(classType: string, get: Get): Found {
  const emprops = SOURCE_LOADERS.has(classType);
  const raw: Input = emprops ? get('lora_source') : { kind: 'missing' };
  if (raw.kind === 'linked') return { problem: `lora_source ${LINKED}` };
  const source = raw.kind === 'value' && (raw.value === 'user' || raw.value === 'shared') ? raw.value : undefined;
  if (!source && raw.kind === 'value' && !isBlank(raw)) return { problem: `unknown lora_source ${preview(raw.value)}` };
  if (source === 'user') {
    const [key, input] = pick(get, IDENTIFIER_KEYS);
    if (input.kind === 'missing') return { problem: 'user LoRA without lora_identifier' };
    if (input.kind === 'linked') return { problem: `${key} ${LINKED}` };
    const id = normaliseLoraId(input.value);
    return id === null ? { problem: `${key} ${preview(input.value)} is not a LoRA id (a positive integer)` } : { source, id };
  }
  // Shared: with an explicit source the new `lora_identifier` wins; legacy nodes use `lora_name`.
  const keys = source === 'shared' ? ['lora_identifier', 'lora_name'] : emprops ? ['lora_name', 'lora_identifier'] : ['lora_name'];
  const [key, input] = pick(get, keys);
  if (input.kind === 'linked') return { problem: `${key} ${LINKED}` };
  if (input.kind === 'missing' || isBlank(input)) return null; // "None" / empty: the loader passes the model through
  const name = normaliseSharedName(input.value);
  return name === null ? { problem: `${key} ${preview(input.value)} is not a safe relative LoRA file name` } : { source: 'shared', name };
}

class Collector {
  readonly refs: WorkflowLoraRef[] = [];
  readonly problems: WorkflowScan['problems'] = [];
  private readonly byKey = new Map<string, WorkflowLoraRef>();

  loader(nodeId: string, classType: string, get: Get): void {
    const found = readLoader(classType, get);
    if (found === null) return;
    if ('problem' in found) {
      this.problems.push({ nodeId, message: found.problem });
      return;
    }
    const key = found.source === 'user' ? `user:${found.id}` : `shared:${found.name}`;
    const seen = this.byKey.get(key);
    if (!seen) {
      const entry: WorkflowLoraRef = { ...found, nodeIds: [nodeId] };
      this.byKey.set(key, entry);
      this.refs.push(entry);
    } else if (!seen.nodeIds.includes(nodeId)) seen.nodeIds.push(nodeId);
  }
}

/** API-format input: `["4", 0]` is a link to output 0 of node "4". */
function namedGetter(values: Obj, linked: ReadonlySet<string> = new Set()): Get {
  return (key) => {
    if (linked.has(key)) return { kind: 'linked' };
    if (!Object.hasOwn(values, key)) return { kind: 'missing' };
    const value = values[key];
    const isLink =
      Array.isArray(value) && value.length === 2 && ['string', 'number'].includes(typeof value[0]) && typeof value[1] === 'number';
    return isLink ? { kind: 'linked' } : { kind: 'value', value };
  };
}

/** UI-format positional `widgets_values`, named by the loader spec's widget orders (legacy ones included). */
function positionalValues(classType: string, values: unknown[]): Obj {
  return nameWidgets(classType, values);
}

function scanUiNode(out: Collector, node: unknown, prefix: string, index: number): void {
  if (!isObj(node)) {
    out.problems.push({ nodeId: `${prefix}nodes[${index}]`, message: 'node is not an object' });
    return;
  }
  const rawId = own(node, 'id');
  const hasId = typeof rawId === 'string' || (typeof rawId === 'number' && Number.isFinite(rawId));
  const nodeId = prefix + (hasId ? String(rawId) : `nodes[${index}]`);
  const type = own(node, 'type') ?? own(node, 'class_type');
  if (typeof type !== 'string' || !(SOURCE_LOADERS.has(type) || STOCK_LOADERS.has(type))) return;
  const mode = own(node, 'mode');
  if (typeof mode === 'number' && SKIPPED_MODES.has(mode)) return;
  const inputs = own(node, 'inputs');
  const widgets = own(node, 'widgets_values');
  // A widget converted to an input slot and connected: its widgets_values entry is stale.
  const linked = new Set<string>();
  for (const slot of Array.isArray(inputs) ? inputs : []) {
    if (!isObj(slot) || own(slot, 'link') === null || own(slot, 'link') === undefined) continue;
    const widget = own(slot, 'widget');
    const name = isObj(widget) ? own(widget, 'name') : own(slot, 'name');
    if (typeof name === 'string') linked.add(name);
  }
  const values = isObj(inputs) ? inputs : isObj(widgets) ? widgets : Array.isArray(widgets) ? positionalValues(type, widgets) : {};
  out.loader(nodeId, type, namedGetter(values, linked));
}

function scanNodes(root: Obj, nodes: unknown[]): WorkflowScan {
  // Subgraph definitions (workflow schema 1.0) hold nodes too; their ids are "<subgraph id>:<node id>".
  const groups: [string, unknown[]][] = [['', nodes]];
  const definitions = own(root, 'definitions');
  const subgraphs = isObj(definitions) ? own(definitions, 'subgraphs') : undefined;
  for (const [i, sg] of (Array.isArray(subgraphs) ? subgraphs : []).entries()) {
    const inner = isObj(sg) ? own(sg, 'nodes') : undefined;
    const sgId = isObj(sg) ? own(sg, 'id') : undefined;
    if (Array.isArray(inner)) groups.push([`${typeof sgId === 'string' ? sgId : `subgraph[${i}]`}:`, inner]);
  }
  if (groups.reduce((n, [, list]) => n + list.length, 0) > MAX_NODES) throw tooMany();
  const out = new Collector();
  for (const [prefix, list] of groups) for (const [i, node] of list.entries()) scanUiNode(out, node, prefix, i);
  return { format: 'nodes', refs: out.refs, problems: out.problems };
}

function scanApi(prompt: Obj, keys: string[]): WorkflowScan {
  const out = new Collector();
  for (const nodeId of keys) {
    const node = prompt[nodeId];
    if (!isNode(node)) {
      out.problems.push({ nodeId, message: 'not a node (an object with a class_type)' });
      continue;
    }
    const classType = node.class_type as string;
    if (!SOURCE_LOADERS.has(classType) && !STOCK_LOADERS.has(classType)) continue;
    const inputs = own(node, 'inputs');
    out.loader(nodeId, classType, namedGetter(isObj(inputs) ? inputs : {}));
  }
  return { format: 'api', refs: out.refs, problems: out.problems };
}

function isNode(value: unknown): value is Obj {
  return isObj(value) && typeof own(value, 'class_type') === 'string';
}

/** Throws AgentError('INVALID_WORKFLOW', …) when the value is not a workflow at all (not an object, neither format, > 10,000 nodes). */
export function scanWorkflow(workflow: unknown): WorkflowScan {
  let value = workflow;
  for (let depth = 0; depth <= 3 && isObj(value); depth++) {
    const nodes = own(value, 'nodes');
    if (Array.isArray(nodes)) return scanNodes(value, nodes);
    const keys = Object.keys(value);
    if (keys.length > MAX_NODES) throw tooMany();
    const obj = value;
    if (keys.some((key) => isNode(obj[key]))) return scanApi(obj, keys);
    // Wrappers: ComfyUI's POST /prompt body `{ prompt, client_id, extra_data }`, and `{ workflow }`
    // as RunPod's worker-comfyui takes it.
    value = [own(obj, 'prompt'), own(obj, 'workflow')].find(isObj);
  }
  if (value === workflow && !isObj(value)) throw new AgentError('INVALID_WORKFLOW', 'a workflow must be a JSON object');
  throw new AgentError('INVALID_WORKFLOW', NEITHER);
}
