import { createHash } from 'node:crypto';
import { readdir, readFile, writeFile } from 'node:fs/promises';
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
  if (options.ifStale && (await readFile(STAMP, 'utf8').catch(() => '')) === hash) return 'current';
  let vite: typeof import('vite');
  try {
    vite = await import('vite');
  } catch {
    return 'no-vite';
  }
  await vite.build({ root: STUDIO, configFile: join(STUDIO, 'vite.config.ts'), logLevel: 'warn' });
  await writeFile(STAMP, hash);
  return 'built';
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const started = Date.now();
  const outcome = await buildStudio({ ifStale: process.argv.includes('--if-stale') });
  if (outcome === 'built') console.error(`studio: built into studio/dist in ${Date.now() - started} ms`);
  else if (outcome === 'no-vite') console.error('studio: Vite is not installed (dev dependencies omitted): /studio/ is not built');
}
