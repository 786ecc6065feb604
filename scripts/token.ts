import { Command, Option } from 'commander';
import { readOrCreateDevSecret } from '../server/auth/dev-secret.ts';
import { ROLES } from '../server/auth/principal.ts';
import { signToken } from '../server/auth/tokens.ts';
import { loadConfig } from '../server/config.ts';

/** `npm run -s token -- --role user --user <uuid>`: prints only a signed bearer token. */
const program = new Command('token')
  .description('Print a bearer token signed with JWT_SECRET (or the development secret under DATA_DIR)')
  .addOption(new Option('--role <role>', 'token role').choices(ROLES).makeOptionMandatory())
  .option('--user <uuid>', 'user id (role user)')
  .option('--machine <id>', 'machine id (role machine)')
  .option('--subject <id>', 'subject for admin/service tokens')
  .option('--ttl <seconds>', 'lifetime in seconds', '2592000')
  .parse();

const opts = program.opts<{ role: (typeof ROLES)[number]; user?: string; machine?: string; subject?: string; ttl: string }>();
const config = loadConfig();
const secret = config.auth.jwtSecret ?? (await readOrCreateDevSecret(config.dataDir));
const ttl = Number(opts.ttl);
if (!Number.isInteger(ttl) || ttl <= 0) program.error('--ttl must be a positive integer');

let sub: string;
switch (opts.role) {
  case 'user':
    if (!opts.user || !/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(opts.user)) {
      program.error('--role user needs --user <uuid>');
    }
    sub = opts.user as string;
    break;
  case 'machine':
    if (!opts.machine) program.error('--role machine needs --machine <id>');
    sub = opts.machine as string;
    break;
  default:
    sub = opts.subject ?? `${opts.role}-cli`;
}
process.stdout.write(`${await signToken(secret, { role: opts.role, sub, machineId: opts.machine }, ttl)}\n`);
