/**
 * A separate client process for the resumable upload tests and bench/upload-restart.ts: uploads
 * PATH with the SDK's uploadLoraResumable to URL as TOKEN (the session id kept in the state file
 * beside the file); with CUT_AT (a fraction) it kills itself (SIGKILL, no cleanup) once that share
 * of the file is in storage, else prints the result and its run stats. STORAGE_ROUTE
 * (`from-host:port=to-host:port`) sends its connections to storage through a proxy
 * (storage-route.ts); CONCURRENCY sets the blocks in flight (default 2), NAME the LoRA's name,
 * IDLE_MS the Put Blocks' inactivity limit.
 */
import { createLoraClient, type ResumableRunStats } from '../../sdk/index.ts';
import { routeConnections } from './storage-route.ts';

const { URL: url, TOKEN: token, FILE_PATH: path, CUT_AT: cutAt } = process.env;
if (!url || !token || !path) throw new Error('URL, TOKEN and FILE_PATH are required');
routeConnections(process.env.STORAGE_ROUTE);
const client = createLoraClient({ url, token, timeoutMs: 600_000 });
const stats: ResumableRunStats = { bytesSent: 0, blocksSent: 0, blocksResumed: 0 };
const started = performance.now();
const result = await client.uploadLoraResumable({
  file: { path },
  name: process.env.NAME ?? 'resumed',
  concurrency: Number(process.env.CONCURRENCY ?? '2'),
  ...(process.env.IDLE_MS ? { idleTimeoutMs: Number(process.env.IDLE_MS) } : {}),
  stats,
  onProgress: (sent, total) => {
    if (cutAt && sent >= Number(cutAt) * total) process.kill(process.pid, 'SIGKILL');
  },
});
const ms = Math.round(performance.now() - started);
process.stdout.write(`${JSON.stringify({ loraId: result.lora.id, sha256: result.lora.sha256, stats, ms })}\n`);
await client.close();
