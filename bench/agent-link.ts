/**
 * bench:agent over a realistic link (issue 16 part 3): the agent's downloads and the plain `fetch`
 * baseline go through a throttling TCP proxy (bench/throttle-proxy.ts) in front of Azurite, so
 * one connection gets BENCH_LINK_MBPS (40 MB/s) and every request pays BENCH_LINK_RTT_MS (40 ms)
 * of round trip, as from a GPU VM to Blob Storage. The API is not throttled (it is not on the
 * data path). SAS URLs are pointed at the proxy by a wrapper around the machine's SDK client
 * (host and port only: the signature does not cover them).
 *
 * Figures, all in this run over the same proxy:
 *  - cold BENCH_AGENT_FILE_MB download: agent ensure ÷ one plain fetch of the SAS URL (target ≥ 2.5:
 *    parallel ranged GETs, each its own connection and cap);
 *  - a workflow of 3 LoRAs: prefetch ÷ 3 sequential ensures (target ≤ 0.5);
 *  - informational: the agent's cold download at other DOWNLOAD_CONCURRENCY × DOWNLOAD_PART_MB, and
 *    prefetch at other PREFETCH_CONCURRENCY (BENCH_LINK_SWEEP, BENCH_LINK_PREFETCH_SWEEP), which is
 *    what docs/decisions.md's defaults were chosen from.
 * Knobs: BENCH_LINK=0 (skip), BENCH_LINK_MBPS=40, BENCH_LINK_RTT_MS=40, BENCH_LINK_RUNS=2,
 *        BENCH_LINK_SWEEP="4x16,8x8,8x16,16x8", BENCH_LINK_PREFETCH_SWEEP="1,2"
 */
import type { LoraClient } from '../sdk/index.ts';
import { log, median, onCleanup } from './harness.ts';
import { startThrottleProxy } from './throttle-proxy.ts';

export const LINK_ENABLED = process.env.BENCH_LINK !== '0';
const LINK_MBPS = Number(process.env.BENCH_LINK_MBPS ?? '40');
const LINK_RTT_MS = Number(process.env.BENCH_LINK_RTT_MS ?? '40');
const LINK_RUNS = Number(process.env.BENCH_LINK_RUNS ?? '2');
const SWEEP = (process.env.BENCH_LINK_SWEEP ?? '4x16,8x8,8x16,16x8').split(',').filter(Boolean);
const PREFETCH_SWEEP = (process.env.BENCH_LINK_PREFETCH_SWEEP ?? '1,2').split(',').filter(Boolean);
const MIN_COLD_RATIO = 2.5;
const MAX_PREFETCH_RATIO = 0.5;

/** Agent configuration for a run (DOWNLOAD_CONCURRENCY, …); {} = the defaults. */
export type AgentEnv = Record<string, string>;

/** What bench/agent.ts lends this section (its runs, with a client and agent settings of ours). */
export interface LinkBenchDeps {
  machine: LoraClient;
  /** A machine client for an agent (a new one per agent: the agent closes it). */
  newMachineClient(): LoraClient;
  bigLoraId: string;
  grant: string;
  fileBytes: number;
  trioBytes: number;
  agentDownload(label: string, client: LoraClient, env: AgentEnv): Promise<{ mbps: number }>;
  plainDownload(label: string, rewrite: (url: string) => string): Promise<{ mbps: number }>;
  prefetchRun(label: string, client: LoraClient, env: AgentEnv): Promise<number>;
  sequentialRun(label: string, client: LoraClient, env: AgentEnv): Promise<number>;
}

export interface LinkResult {
  lines: string[];
  ok: boolean;
  /** For the RESULT line. */
  summary: string;
}

/** `client` with every SAS URL it hands out pointed at the proxy. */
function throughProxy(client: LoraClient, rewrite: (url: string) => string): LoraClient {
  return {
    ...client,
    getDownload: async (variables, options) => {
      const d = await client.getDownload(variables, options);
      return { ...d, url: rewrite(d.url) };
    },
    getSharedDownload: async (variables, options) => {
      const d = await client.getSharedDownload(variables, options);
      return { ...d, url: rewrite(d.url) };
    },
  };
}

export async function benchRealisticLink(deps: LinkBenchDeps): Promise<LinkResult> {
  const { url } = await deps.machine.getDownload({ id: deps.bigLoraId, grant: deps.grant });
  const target = new URL(url);
  const proxy = await startThrottleProxy(
    { host: target.hostname, port: Number(target.port) },
    { bytesPerSecond: LINK_MBPS * 1e6, rttMs: LINK_RTT_MS },
  );
  onCleanup('throttling proxy', () => proxy.close());
  const proxied = () => throughProxy(deps.newMachineClient(), proxy.rewrite);
  log(`5. over a throttling proxy (${LINK_MBPS} MB/s per connection, ${LINK_RTT_MS} ms RTT) on :${proxy.port}`);

  const agentMbps: number[] = [];
  const fetchMbps: number[] = [];
  for (let round = 0; round < LINK_RUNS; round++) {
    const order = round % 2 === 0 ? (['agent', 'fetch'] as const) : (['fetch', 'agent'] as const);
    for (const which of order) {
      if (which === 'agent') agentMbps.push((await deps.agentDownload(`link run ${round + 1} agent`, proxied(), {})).mbps);
      else fetchMbps.push((await deps.plainDownload(`link run ${round + 1} fetch`, proxy.rewrite)).mbps);
    }
  }
  const sweep: { setting: string; mbps: number }[] = [];
  for (const setting of SWEEP) {
    const [concurrency, partMb] = setting.split('x');
    const env = { DOWNLOAD_CONCURRENCY: String(concurrency), DOWNLOAD_PART_MB: String(partMb) };
    sweep.push({ setting, mbps: (await deps.agentDownload(`link sweep ${setting}`, proxied(), env)).mbps });
  }

  const prefetchMs: number[] = [];
  const sequentialMs: number[] = [];
  prefetchMs.push(await deps.prefetchRun('link round 1 prefetch', proxied(), {}));
  sequentialMs.push(await deps.sequentialRun('link round 1 sequential', proxied(), {}));
  sequentialMs.push(await deps.sequentialRun('link round 2 sequential', proxied(), {}));
  prefetchMs.push(await deps.prefetchRun('link round 2 prefetch', proxied(), {}));
  const prefetchSweep: { setting: string; ms: number }[] = [];
  for (const setting of PREFETCH_SWEEP) {
    prefetchSweep.push({ setting, ms: await deps.prefetchRun(`link prefetch ×${setting}`, proxied(), { PREFETCH_CONCURRENCY: setting }) });
  }
  await proxy.close();

  const coldRatio = median(agentMbps) / median(fetchMbps);
  const prefetchRatio = median(prefetchMs) / median(sequentialMs);
  const coldOk = coldRatio >= MIN_COLD_RATIO;
  const prefetchOk = prefetchRatio <= MAX_PREFETCH_RATIO;
  const f1 = (v: number) => v.toFixed(1);
  const f2 = (v: number) => v.toFixed(2);
  const verdict = (pass: boolean) => (pass ? 'PASS' : 'FAIL');
  const lines = [
    `5. over a throttling proxy: ${LINK_MBPS} MB/s per connection and direction, ${LINK_RTT_MS} ms added RTT (+1 RTT per new connection); ${proxy.connections()} connections in all`,
    `5a. cold download ${deps.fileBytes / 2 ** 20} MiB: agent ensure median ${f1(median(agentMbps))} MB/s (${agentMbps.map(f1).join(', ')}) │ ` +
      `baseline one fetch of the SAS URL median ${f1(median(fetchMbps))} MB/s (${fetchMbps.map(f1).join(', ')}) │ ratio ${f2(coldRatio)} │ ` +
      `target ≥ ${MIN_COLD_RATIO}: ${verdict(coldOk)}`,
    `    informational, agent at DOWNLOAD_CONCURRENCY×DOWNLOAD_PART_MB: ${sweep.map((s) => `${s.setting} ${f1(s.mbps)} MB/s`).join(', ')}`,
    `5b. workflow of 3 × ${deps.trioBytes / 2 ** 20} MiB: prefetch median ${f2(median(prefetchMs) / 1000)} s (${prefetchMs.map((v) => f2(v / 1000)).join(', ')}) │ ` +
      `baseline 3 sequential ensure median ${f2(median(sequentialMs) / 1000)} s (${sequentialMs.map((v) => f2(v / 1000)).join(', ')}) │ ` +
      `prefetch ÷ sequential ${f2(prefetchRatio)} │ target ≤ ${MAX_PREFETCH_RATIO}: ${verdict(prefetchOk)}`,
    `    informational, prefetch at PREFETCH_CONCURRENCY: ${prefetchSweep.map((p) => `${p.setting}: ${f2(p.ms / 1000)} s`).join(', ')}`,
  ];
  return {
    lines,
    ok: coldOk && prefetchOk,
    summary: `link cold ratio ${f2(coldRatio)}, link prefetch ÷ sequential ${f2(prefetchRatio)}`,
  };
}
