/**
 * `lora-cache`: the agent's CLI. `start` runs the daemon; the other commands work on the same
 * `model_cache.db` and folder in-process (safe beside a running daemon: writes are short
 * transactions and downloads take the same lock files).
 */
import { readFileSync } from 'node:fs';
import { MultiBar, Presets } from 'cli-progress';
import { Command } from 'commander';
import { pino } from 'pino';
import { type Agent, buildAgent } from './app.ts';
import { AgentConfigError, loadAgentConfig } from './config.ts';
import { AgentError } from './errors.ts';
import { waitForIndex } from './index-wait.ts';
import { IndexMissingError } from './store.ts';

const program = new Command('lora-cache')
  .description('Just-in-time LoRA cache for GPU machines running ComfyUI (configuration: environment, see README)')
  .showHelpAfterError();

/** Builds the agent without the local interface, subscription or maintenance, runs `work`, stops. */
async function oneShot<T>(work: (agent: Agent) => Promise<T>): Promise<T> {
  const cfg = loadAgentConfig();
  // Logs go to stderr so stdout stays the command's JSON answer.
  const logger = pino({ level: cfg.commandLogLevel, base: { machineId: cfg.machineId } }, pino.destination(2));
  const agent = buildAgent(cfg, { logger });
  await agent.start({ listen: false, subscribe: false, schedule: false, maintain: false });
  try {
    return await work(agent);
  } finally {
    await agent.stop();
  }
}

function print(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

function progressBars() {
  if (!process.stderr.isTTY) return { onProgress: undefined, stop: () => {} };
  const bars = new MultiBar(
    { stream: process.stderr, format: ' {bar} {percentage}% | {mb}/{totalMb} MB', hideCursor: true },
    Presets.shades_classic,
  );
  let bar: ReturnType<MultiBar['create']> | null = null;
  return {
    onProgress: (done: number, total: number) => {
      const payload = { mb: (done / 1e6).toFixed(1), totalMb: (total / 1e6).toFixed(1) };
      bar ??= bars.create(total, 0, payload);
      bar.update(done, payload);
    },
    stop: () => bars.stop(),
  };
}

program
  .command('start')
  .description('run the daemon: local interface, invalidation, scheduled eviction and stats')
  .action(async () => {
    const cfg = loadAgentConfig();
    const logger = pino({ level: cfg.logLevel, base: { machineId: cfg.machineId } });
    await waitForIndex(cfg, logger);
    const agent = buildAgent(cfg, { logger });
    await agent.start();
    let stopping = false;
    const stop = async (signal: string) => {
      if (stopping) return;
      stopping = true;
      process.stderr.write(`lora-cache: ${signal}, stopping\n`);
      await agent.stop();
      process.exit(0);
    };
    process.on('SIGINT', () => void stop('SIGINT'));
    process.on('SIGTERM', () => void stop('SIGTERM'));
  });

program
  .command('ensure')
  .description('make one LoRA local and print its path')
  .argument('<lora>', 'a user LoRA id (with --grant), or shared:<file name>')
  .option('--grant <token>', 'the job grant (user LoRAs; default $LORA_GRANT)')
  .action(async (lora: string, opts: { grant?: string }) => {
    const bars = progressBars();
    const result = await oneShot((agent) => {
      const ref = lora.startsWith('shared:')
        ? { source: 'shared' as const, name: lora.slice('shared:'.length) }
        : { source: 'user' as const, id: lora, grant: opts.grant ?? agent.config.defaultGrant ?? '' };
      return agent.ensure(ref, bars.onProgress ? { onProgress: bars.onProgress } : {});
    }).finally(bars.stop);
    print(result);
  });

program
  .command('prefetch')
  .description('ensure every LoRA a ComfyUI workflow references (API or node-list format)')
  .argument('<workflow.json>', 'the workflow file')
  .option('--grant <token>', 'the job grant (default $LORA_GRANT)')
  .action(async (file: string, opts: { grant?: string }) => {
    let workflow: unknown;
    try {
      workflow = JSON.parse(readFileSync(file, 'utf8'));
    } catch (error) {
      throw new AgentError('INVALID_WORKFLOW', `cannot read ${file}: ${(error as Error).message}`);
    }
    const result = await oneShot((agent) => agent.prefetch(workflow, opts.grant ?? agent.config.defaultGrant ?? null));
    print(result);
    if (result.items.some((i) => i.error)) process.exitCode = 1;
  });

program
  .command('evict')
  .description('evict by age and down to the cap (plan first: --dry-run prints the plan only)')
  .option('--dry-run', 'print what would be evicted, change nothing')
  .action(async (opts: { dryRun?: boolean }) => print(await oneShot((agent) => agent.evict(Boolean(opts.dryRun)))));

program
  .command('stats')
  .description("print the cache's figures")
  .action(async () => print(await oneShot(async (agent) => agent.stats())));

program
  .command('verify')
  .description('re-hash every cached file; remove any whose size or sha256 differs from the index')
  .action(async () => {
    const report = await oneShot((agent) => agent.verify());
    print(report);
    if (report.corrupt.length || report.missing.length) process.exitCode = 1;
  });

program.parseAsync(process.argv).catch((error: unknown) => {
  if (error instanceof AgentConfigError || error instanceof IndexMissingError) process.stderr.write(`lora-cache: ${error.message}\n`);
  else if (error instanceof AgentError)
    process.stderr.write(
      `lora-cache: ${error.code}: ${error.message}\n${Object.keys(error.details).length ? `${JSON.stringify(error.details)}\n` : ''}`,
    );
  else process.stderr.write(`lora-cache: ${(error as Error)?.stack ?? String(error)}\n`);
  process.exitCode = 2;
});
