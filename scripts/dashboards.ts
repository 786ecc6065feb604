import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { dashboards } from '../observability/grafana/dashboards.ts';

/** `npm run dashboards` writes observability/grafana/*.json; `--check` fails when one is stale. */
const dir = join(import.meta.dirname, '../observability/grafana');
const check = process.argv.includes('--check');
let stale = 0;
for (const [file, dashboard] of Object.entries(dashboards())) {
  const path = join(dir, file);
  const text = `${JSON.stringify(dashboard, null, 2)}\n`;
  if (!check) writeFileSync(path, text);
  else if (readFileSync(path, 'utf8') !== text) {
    console.error(`${path} is stale: run npm run dashboards`);
    stale++;
  }
}
if (stale) process.exit(1);
