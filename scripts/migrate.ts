import { loadConfig } from '../server/config.ts';
import { migrate } from '../server/db/migrate.ts';

/** `npm run db:migrate`: apply pending migrations to DATABASE_URL (what the server does at start). */
const { databaseUrl } = loadConfig();
if (!databaseUrl) {
  console.error('DATABASE_URL is not set (the embedded database is migrated by `npm start` itself).');
  process.exit(1);
}
const result = await migrate(databaseUrl);
console.log(result.applied.length ? `applied: ${result.applied.join(', ')}` : `up to date (${result.alreadyApplied} migrations)`);
