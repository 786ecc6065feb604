import { readFile, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { printSchema } from 'graphql';
import { buildSchema } from '../schema/index.ts';

/** Prints the Pothos schema's SDL to schema/schema.graphql. `--check` fails when the file is stale. */
const target = fileURLToPath(new URL('../schema/schema.graphql', import.meta.url));
const sdl = `${printSchema(buildSchema())}\n`;

if (process.argv.includes('--check')) {
  const current = await readFile(target, 'utf8').catch(() => '');
  if (current !== sdl) {
    console.error('schema/schema.graphql is stale: run `npm run schema:print` and commit the result.');
    process.exit(1);
  }
  console.log('schema/schema.graphql is current.');
} else {
  await writeFile(target, sdl);
  console.log(`wrote ${target}`);
}
