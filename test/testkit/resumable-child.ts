/**
 * A separate client process for the resumable upload tests: uploads PATH with the SDK's
 * uploadLoraResumable to URL as TOKEN; with CUT_AT (a fraction) it kills itself (SIGKILL, no
 * cleanup) once that share of the file is in storage, else prints the result and its run stats.
 */
import { createLoraClient, type ResumableRunStats } from '../../sdk/index.ts';

const { URL: url, TOKEN: token, FILE_PATH: path, CUT_AT: cutAt } = process.env;
if (!url || !token || !path) throw new Error('URL, TOKEN and FILE_PATH are required');
const client = createLoraClient({ url, token });
const stats: ResumableRunStats = { bytesSent: 0, blocksSent: 0, blocksResumed: 0 };
const result = await client.uploadLoraResumable({
  file: { path },
  name: 'resumed',
  concurrency: 2,
  stats,
  onProgress: (sent, total) => {
    if (cutAt && sent >= Number(cutAt) * total) process.kill(process.pid, 'SIGKILL');
  },
});
process.stdout.write(`${JSON.stringify({ loraId: result.lora.id, sha256: result.lora.sha256, stats })}\n`);
await client.close();
