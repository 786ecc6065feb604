import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, rmdir, stat, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * Builds Studio into `studio/dist` (static files, served by the API at /studio/). With
 * `--if-stale` (what `npm start` runs first) it builds only when a source changed since the last
 * build: a sha256 over Studio's sources, the SDK files it bundles and the lockfile, kept in
 * `dist/.build-stamp`. Offline: Vite is an npm dependency and nothing is fetched. When Vite is
 * not installed (a production install without dev dependencies) it says so and exits 0: the API
 * still starts, and /studio/ says how to build.
 */

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const STUDIO = join(ROOT, 'studio');
const DIST = join(STUDIO, 'dist');
const STAMP = join(DIST, '.build-stamp');
/** Held (mkdir is atomic) while one process builds: parallel test files and starts wait instead of building over each other. */
const LOCK = join(STUDIO, '.build-lock');
const LOCK_STALE_MS = 120_000;
const SKIP = new Set(['dist', 'node_modules']);
const SDK_INPUTS = ['sdk/gql/graphql.ts', 'sdk/browser-upload.ts', 'sdk/errors.ts', 'sdk/package.json', 'package-lock.json'];

async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    if (SKIP.has(entry.name)) continue;
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await filesUnder(path)));
    else if (entry.isFile()) out.push(path);
  }
  return out;
}

export async function sourceHash(): Promise<string> {
  const files = [...(await filesUnder(STUDIO)), ...SDK_INPUTS.map((f) => join(ROOT, f))].sort();
  const hash = createHash('sha256');
  for (const file of files) {
    hash.update(relative(ROOT, file)).update('\0');
    hash.update(await readFile(file)).update('\0');
  }
  return hash.digest('hex');
}

/** Builds unless `ifStale` and the stamp matches; resolves with what it did. */
export async function buildStudio(options: { ifStale: boolean }): Promise<'built' | 'current' | 'no-vite'> {
  const hash = await sourceHash();
  const current = async () => options.ifStale && (await readFile(STAMP, 'utf8').catch(() => '')) === hash;
  if (await current()) return 'current';
  let vite: typeof import('vite');
  try {
    vite = await import('vite');
  } catch {
    return 'no-vite';
  }
  await takeLock();
  try {
    if (await current()) return 'current'; // another process built it while we waited
    await vite.build({ root: STUDIO, configFile: join(STUDIO, 'vite.config.ts'), logLevel: 'warn' });
    await writeFile(STAMP, hash);
    return 'built';
  } finally {
    await rmdir(LOCK).catch(() => {});
  }
}

async function takeLock(): Promise<void> {
  for (;;) {
    try {
      await mkdir(LOCK);
      return;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      const since = await stat(LOCK).then(
        (s) => Date.now() - s.mtimeMs,
        () => 0,
      );
      if (since > LOCK_STALE_MS)
        await rmdir(LOCK).catch(() => {}); // left by a killed build
      else await new Promise((r) => setTimeout(r, 200));
    }
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const started = Date.now();
  const outcome = await buildStudio({ ifStale: process.argv.includes('--if-stale') });
  if (outcome === 'built') console.error(`studio: built into studio/dist in ${Date.now() - started} ms`);
  else if (outcome === 'no-vite') console.error('studio: Vite is not installed (dev dependencies omitted): /studio/ is not built');
}
