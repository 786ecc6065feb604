/**
 * The real app (buildApp) in a process of its own, for bench/upload.ts: configured from the
 * environment like `npm start` with external services (DATABASE_URL, AZURE_STORAGE_CONNECTION_STRING,
 * JWT_SECRET are required), it prints one line `UPLOAD_SERVER_READY {"url":…,"pid":…}` once
 * listening, so the parent can measure this process's memory on its own.
 *
 * Stops (app.stop(), exit 0) on SIGTERM, and when the parent goes away (the IPC channel closes,
 * however the parent died). SIGINT is left to the parent while it is connected: Ctrl-C reaches
 * the whole process group, and the parent stops the server before the database it uses.
 */
import { buildApp } from '../server/app.ts';
import { runtimeConfig, SERVER_READY_PREFIX } from './harness.ts';

const app = buildApp(runtimeConfig(process.env));

let stopping: Promise<void> | undefined;
function stop(reason: string, code = 0): Promise<void> {
  stopping ??= app
    .stop()
    .catch((error: unknown) => {
      console.error(`upload-server: stop after ${reason} failed:`, error);
      code = 1;
    })
    .finally(() => process.exit(code));
  return stopping;
}

process.on('SIGTERM', () => void stop('SIGTERM'));
process.on('SIGINT', () => {
  if (!process.connected) void stop('SIGINT');
});
process.on('disconnect', () => void stop('parent disconnect'));

try {
  const url = await app.start();
  process.stdout.write(`${SERVER_READY_PREFIX}${JSON.stringify({ url, pid: process.pid })}\n`);
} catch (error) {
  console.error('upload-server: start failed:', error);
  await stop('start failure', 1);
}
