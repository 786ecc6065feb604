import { randomBytes } from 'node:crypto';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLoraClient, type LoraClient } from '@lora-vault/sdk';
import { pino } from 'pino';
import { afterAll, beforeAll } from 'vitest';
import WebSocket from 'ws';
import { type Agent, type AgentOptions, buildAgent } from '../../cache-agent/app.ts';
import { type AgentConfig, loadAgentConfig } from '../../cache-agent/config.ts';
import type { LoraView } from '../../server/domain/lora.ts';
import { mintGrant } from './grants.ts';
import { newUserId, seedLora } from './seed.ts';
import { startTestServer, type TestServer } from './server.ts';

/**
 * A real cache agent in a temp ComfyUI folder, talking to a real test server through the SDK.
 * Small download parts and short retry delays so the fault paths run quickly.
 */

/** The published `lora-cache` bin, for tests that run it as operators do. */
export const LORA_CACHE_BIN = join(import.meta.dirname, '../../cache-agent/bin/lora-cache.mjs');

/** The environment of a `lora-cache` process for `comfyDir` against `server` (a machine token of its own). */
export async function cliEnv(server: TestServer, comfyDir: string, extra: Record<string, string> = {}): Promise<Record<string, string>> {
  return {
    PATH: process.env.PATH ?? '',
    LORA_VAULT_URL: server.graphqlUrl,
    LORA_VAULT_TOKEN: await server.tokens.machine(`cli-${comfyDir.slice(-6)}`),
    COMFYUI_DIR: comfyDir,
    MIN_FREE_SPACE_GB: '0',
    STATS_INTERVAL_SECONDS: '0',
    MODEL_CACHE_DB_CREATE: 'true',
    ...extra,
  };
}

export const FAST_DOWNLOADS = { partBytes: 64 * 1024, concurrency: 4, baseDelayMs: 20, maxDelayMs: 200, stallMs: 3000 } as const;

export async function agentConfig(server: TestServer, env: Record<string, string> = {}, comfyDir?: string): Promise<AgentConfig> {
  const dir = comfyDir ?? (await mkdtemp(join(tmpdir(), 'lora-agent-')));
  const machineId = `agent-${dir.slice(-6)}`;
  return loadAgentConfig({
    LORA_VAULT_URL: server.graphqlUrl,
    LORA_VAULT_TOKEN: await server.tokens.machine(machineId),
    MACHINE_ID: machineId,
    COMFYUI_DIR: dir,
    AGENT_PORT: '0',
    MIN_FREE_SPACE_GB: '0',
    STATS_INTERVAL_SECONDS: '0',
    MODEL_CACHE_DB_CREATE: 'true',
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent',
    ...env,
  });
}

export interface TestAgentOptions extends AgentOptions {
  env?: Record<string, string>;
  comfyDir?: string;
  listen?: boolean;
  subscribe?: boolean;
  /** Another API server than the pool's. */
  server?: TestServer;
}

export async function startTestAgent(server: TestServer, options: TestAgentOptions = {}): Promise<Agent> {
  const config = await agentConfig(server, options.env, options.comfyDir);
  const agent = buildAgent(config, {
    logger: pino({ level: config.logLevel }),
    downloadTuning: FAST_DOWNLOADS,
    ...options,
  });
  await agent.start({ listen: options.listen ?? false, subscribe: options.subscribe ?? false, schedule: false });
  return agent;
}

/** A user with LoRAs of exact sizes (random bytes: the seed path stores them as they are) and a job grant. */
export async function userWithLoras(
  server: TestServer,
  sizes: number[],
): Promise<{ userId: string; grant: string; loras: (LoraView & { bytes: Buffer })[] }> {
  const userId = newUserId();
  const loras = [];
  for (const size of sizes) {
    const bytes = randomBytes(size);
    loras.push({ ...(await seedLora(server.app, userId, { bytes })), bytes });
  }
  return { userId, grant: await mintGrant(server, userId), loras };
}

export async function userClient(server: TestServer, userId: string): Promise<LoraClient> {
  return createLoraClient({ url: server.graphqlUrl, token: await server.tokens.user(userId), webSocketImpl: WebSocket });
}

/** Agents a test file starts, all stopped by `stopAll()` in its afterAll. */
export function agentPool(server: () => TestServer) {
  const started: Agent[] = [];
  return {
    async start(options: TestAgentOptions = {}): Promise<Agent> {
      const agent = await startTestAgent(options.server ?? server(), options);
      started.push(agent);
      return agent;
    },
    async stopAll(): Promise<void> {
      for (const agent of started.splice(0)) await agent.stop().catch(() => {});
    },
  };
}

/**
 * The usual set-up of an agent test file: a test server started before its tests (handed to
 * `onServer`) and the pool of agents against it; after the tests the agents stop, then the server.
 */
export function serverWithAgents(onServer: (server: TestServer) => void): ReturnType<typeof agentPool> {
  let server: TestServer | undefined;
  const agents = agentPool(() => server as TestServer);
  beforeAll(async () => {
    server = await startTestServer();
    onServer(server);
  });
  afterAll(async () => {
    await agents.stopAll();
    await server?.stop();
  });
  return agents;
}

/** One request to an agent's local HTTP interface: status and JSON body (a string body is sent as is). */
export async function callAgent(agent: Agent, method: string, path: string, body?: unknown, contentType = 'application/json') {
  const res = await fetch(`${agent.address}${path}`, {
    method,
    headers: body === undefined ? {} : { 'content-type': contentType },
    ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
  });
  return { status: res.status, body: (await res.json()) as Record<string, any> };
}
