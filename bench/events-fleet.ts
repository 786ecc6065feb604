/**
 * The subscriber fleet of `bench:events`, seen from the benchmark: N subscribers spread over P
 * client processes (bench/events-clients.ts), each driven over IPC; and the open-file limit of
 * the benchmark's child processes, raised for them alone (prlimit), never for the system.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { onCleanup } from './harness.ts';

/** Latency histogram bin width, ms (the events' `at` has ms precision). */
export const BIN_MS = 0.1;

const CLIENT = fileURLToPath(new URL('./events-clients.ts', import.meta.url));

/** Soft and hard open-file limits of this process. */
export function openFileLimits(): { soft: number; hard: number } {
  const line = /^Max open files\s+(\S+)\s+(\S+)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
  const value = (v: string | undefined) => (v === 'unlimited' ? Number.POSITIVE_INFINITY : Number(v));
  return { soft: value(line?.[1]), hard: value(line?.[2]) };
}

/**
 * `node args` as a command whose open-file limit is at least `needed`: unchanged when the soft
 * limit suffices, else through `prlimit --nofile` up to the hard limit (which a process may do
 * without privileges). Throws when even the hard limit is too low.
 */
export function withFileLimit(args: string[], needed: number): { command: string; args: string[] } {
  const { soft, hard } = openFileLimits();
  if (soft >= needed) return { command: process.execPath, args };
  if (hard < needed) throw new Error(`open-file hard limit ${hard} < ${needed}: lower BENCH_SUBSCRIBERS or raise the hard limit`);
  return {
    command: 'prlimit',
    args: [`--nofile=${needed}:${hard === Number.POSITIVE_INFINITY ? 'unlimited' : hard}`, '--', process.execPath, ...args],
  };
}

export interface FleetReport {
  deliveries: number;
  duplicates: number;
  unexpected: number;
  errors: string[];
  /** Merged histograms (bin → count, bins of BIN_MS). */
  fromAt: Map<number, number>;
  fromSend: Map<number, number>;
  /** CPU of the client processes since `mark()` (user + system), and the user part. */
  cpuSeconds: number;
  userSeconds: number;
}

export interface Fleet {
  /** Connects and subscribes `count` more subscribers, spread over the client processes. */
  add(count: number): Promise<void>;
  status(): Promise<{ minUpdates: number; deliveries: number }>;
  /** The clients' CPU is counted from here on (the measurement, not the connecting). */
  mark(): Promise<void>;
  report(sentAt: number[]): Promise<FleetReport>;
  close(): Promise<void>;
}

interface Client {
  child: ChildProcess;
  request<T>(message: Record<string, unknown>, reply: string): Promise<T>;
}

function startClient(needed: number): Client {
  const { command, args } = withFileLimit([...process.execArgv, CLIENT], needed);
  const child = spawn(command, args, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const waiting = new Map<string, (message: any) => void>();
  child.on('message', (message: { type: string }) => {
    const key = message.type === 'failed' ? 'opened' : message.type;
    const resolve = waiting.get(key);
    waiting.delete(key);
    resolve?.(message);
  });
  const exited = new Promise<never>((_, reject) =>
    child.once('exit', (code, signal) => reject(new Error(`a client process exited (${code ?? signal})`))),
  );
  exited.catch(() => {});
  return {
    child,
    request<T>(message: Record<string, unknown>, reply: string): Promise<T> {
      const answer = new Promise<T>((resolve) => waiting.set(reply, resolve));
      child.send(message);
      return Promise.race([answer, exited]);
    },
  };
}

/** Starts `processes` client processes (each allowed `perProcess` + headroom sockets), no subscriber yet. */
export function startFleet(options: {
  wsUrl: string;
  secret: string;
  processes: number;
  perProcess: number;
  loraIds: string[];
  query: string;
}): Fleet {
  const clients: Client[] = Array.from({ length: options.processes }, () => startClient(options.perProcess + 64));
  let next = 0;
  const fleet: Fleet = {
    async add(count) {
      const share = Math.ceil(count / clients.length);
      const opened = await Promise.all(
        clients.map((c, p) => {
          const n = Math.max(0, Math.min(share, count - p * share));
          const first = next + p * share;
          return c.request<{ type: string; error?: string }>(
            {
              type: 'open',
              wsUrl: options.wsUrl,
              secret: options.secret,
              first,
              count: n,
              loraIds: options.loraIds,
              query: options.query,
              binMs: BIN_MS,
            },
            'opened',
          );
        }),
      );
      next += count;
      const failed = opened.find((o) => o.type === 'failed');
      if (failed) throw new Error(`subscribers could not connect: ${failed.error}`);
    },
    async status() {
      const all = await Promise.all(
        clients.map((c) => c.request<{ minUpdates: number; deliveries: number }>({ type: 'status' }, 'status')),
      );
      return { minUpdates: Math.min(...all.map((s) => s.minUpdates)), deliveries: all.reduce((n, s) => n + s.deliveries, 0) };
    },
    async mark() {
      await Promise.all(clients.map((c) => c.request({ type: 'mark' }, 'marked')));
    },
    async report(sentAt) {
      const parts = await Promise.all(clients.map((c) => c.request<any>({ type: 'report', sentAt }, 'report')));
      const merged: FleetReport = {
        deliveries: 0,
        duplicates: 0,
        unexpected: 0,
        errors: [],
        fromAt: new Map(),
        fromSend: new Map(),
        cpuSeconds: 0,
        userSeconds: 0,
      };
      for (const p of parts) {
        merged.deliveries += p.deliveries;
        merged.duplicates += p.duplicates;
        merged.unexpected += p.unexpected;
        merged.cpuSeconds += p.cpuSeconds;
        merged.userSeconds += p.userSeconds;
        merged.errors.push(...p.errors);
        for (const [bin, n] of p.fromAt as [number, number][]) merged.fromAt.set(bin, (merged.fromAt.get(bin) ?? 0) + n);
        for (const [bin, n] of p.fromSend as [number, number][]) merged.fromSend.set(bin, (merged.fromSend.get(bin) ?? 0) + n);
      }
      return merged;
    },
    async close() {
      await Promise.all(
        clients.map(async (c) => {
          if (c.child.exitCode !== null || c.child.signalCode !== null) return;
          const gone = new Promise((r) => c.child.once('exit', r));
          c.child.send({ type: 'close' });
          const timer = setTimeout(() => c.child.kill('SIGKILL'), 5_000);
          await gone;
          clearTimeout(timer);
        }),
      );
    },
  };
  onCleanup('subscriber processes', () => fleet.close());
  return fleet;
}

/** Percentiles of a merged histogram, in ms (upper edge of the bin). */
export function percentiles(histogram: Map<number, number>): { p50: number; p90: number; p99: number; max: number } {
  const bins = [...histogram.entries()].sort((a, b) => a[0] - b[0]);
  const total = bins.reduce((n, [, c]) => n + c, 0);
  const at = (p: number) => {
    if (total === 0) return Number.NaN;
    const rank = Math.max(1, Math.ceil((p / 100) * total));
    let seen = 0;
    for (const [bin, count] of bins) {
      seen += count;
      if (seen >= rank) return (bin + 1) * BIN_MS;
    }
    return Number.NaN;
  };
  return { p50: at(50), p90: at(90), p99: at(99), max: bins.length ? ((bins.at(-1)?.[0] ?? 0) + 1) * BIN_MS : Number.NaN };
}
