import { generateKeyPairSync } from 'node:crypto';
import { Command } from 'commander';
import { parseGrantKeys } from '../server/auth/grant-keys.ts';

/**
 * `npm run -s grant-key`: prints a new Ed25519 private key for GRANT_SIGNING_KEY, as a one-line JWK
 * Set (`--pem`: PKCS#8 PEM). `--rotate "$GRANT_SIGNING_KEY"`: the new key first, the given keys after
 * it (they stay published so grants they signed verify until they expire; drop them after
 * GRANT_MAX_TTL_SECONDS).
 */
const program = new Command('grant-key')
  .description('Print a new Ed25519 grant signing key (GRANT_SIGNING_KEY)')
  .option('--pem', 'PKCS#8 PEM instead of a JWK Set')
  .option('--rotate <keys>', 'the current GRANT_SIGNING_KEY: print a JWK Set with the new key first, then these')
  .parse();
const opts = program.opts<{ pem?: boolean; rotate?: string }>();

const { privateKey } = generateKeyPairSync('ed25519');
if (opts.pem && !opts.rotate) {
  process.stdout.write(privateKey.export({ format: 'pem', type: 'pkcs8' }) as string);
} else {
  const fresh = privateKey.export({ format: 'jwk' });
  const kept = opts.rotate
    ? parseGrantKeys(opts.rotate).keys.map((k) => (k.privateKey ? { ...k.privateKey.export({ format: 'jwk' }), kid: k.kid } : k.publicJwk))
    : [];
  const keys = [{ ...fresh, kid: parseGrantKeys(JSON.stringify(fresh)).signing.kid }, ...kept];
  process.stdout.write(`${JSON.stringify({ keys })}\n`);
}
