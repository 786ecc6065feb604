import { createHash, randomUUID } from 'node:crypto';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { MIGRATIONS_DIR, MigrationError, migrate, readMigrations } from '../../server/db/migrate.ts';

/** The migrator against fresh databases on the shared test PostgreSQL. */

const created: string[] = [];
async function freshDatabase(): Promise<string> {
  const name = `migrate_${randomUUID().replaceAll('-', '')}`;
  const admin = new pg.Client({ connectionString: inject('databaseUrl') });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  created.push(name);
  const url = new URL(inject('databaseUrl'));
  url.pathname = `/${name}`;
  return url.toString();
}

afterAll(async () => {
  const admin = new pg.Client({ connectionString: inject('databaseUrl') });
  await admin.connect();
  for (const name of created) await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  await admin.end();
});

describe('migrate', () => {
  it('applies every migration once, even when replicas start together, with Prisma-compatible bookkeeping', async () => {
    const url = await freshDatabase();
    const all = await readMigrations();
    const results = await Promise.all([migrate(url), migrate(url), migrate(url)]);
    expect(results.flatMap((r) => r.applied).sort()).toEqual(all.map((m) => m.name));
    expect(await migrate(url)).toEqual({ applied: [], alreadyApplied: all.length });

    const client = new pg.Client({ connectionString: url });
    await client.connect();
    const { rows } = await client.query(
      'SELECT migration_name, checksum, finished_at, applied_steps_count FROM _prisma_migrations ORDER BY migration_name',
    );
    const { rows: tables } = await client.query(`SELECT to_regclass('public.lora') AS lora, to_regclass('public.flat_file') AS flat_file`);
    await client.end();
    expect(tables[0]).toEqual({ lora: 'lora', flat_file: 'flat_file' });
    const firstSql = await readFile(join(MIGRATIONS_DIR, all[0]?.name ?? '', 'migration.sql'));
    expect(rows[0]).toMatchObject({
      migration_name: all[0]?.name,
      checksum: createHash('sha256').update(firstSql).digest('hex'),
      applied_steps_count: 1,
    });
    expect(rows[0].finished_at).toBeInstanceOf(Date);
  });

  it('refuses a migration that was edited after it was applied, and rolls back a failing one', async () => {
    const url = await freshDatabase();
    await migrate(url);
    const dir = await mkdtemp(join(tmpdir(), 'migrations-'));
    try {
      await cp(MIGRATIONS_DIR, dir, { recursive: true });
      const [first] = await readMigrations(dir);
      const file = join(dir, first?.name ?? '', 'migration.sql');
      await writeFile(file, `${await readFile(file, 'utf8')}\n-- edited\n`);
      await expect(migrate(url, dir)).rejects.toThrow(/changed after it was applied/);

      const broken = join(dir, '99990101000000_broken');
      await cp(join(dir, first?.name ?? ''), broken, { recursive: true });
      await writeFile(join(broken, 'migration.sql'), 'CREATE TABLE half_done (id int); SELECT * FROM no_such_table;');
      await cp(join(MIGRATIONS_DIR, first?.name ?? '', 'migration.sql'), file); // undo the edit
      await expect(migrate(url, dir)).rejects.toBeInstanceOf(MigrationError);
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      const { rows } = await client.query(`SELECT to_regclass('public.half_done') AS t`);
      await client.end();
      expect(rows[0].t).toBeNull();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
