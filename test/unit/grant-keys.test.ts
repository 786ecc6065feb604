import { generateKeyPairSync } from 'node:crypto';
import { mkdtemp, readFile, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { calculateJwkThumbprint } from 'jose';
import { describe, expect, it } from 'vitest';
import { generateGrantKeyPem, parseGrantKeys, readOrCreateDevGrantKey } from '../../server/auth/grant-keys.ts';
import { ConfigError, loadConfig } from '../../server/config.ts';

/** GRANT_SIGNING_KEY's formats (server/auth/grant-keys.ts) and the start-up errors around it. */

const privateJwk = (pem: string, kid?: string) => {
  const set = parseGrantKeys(pem);
  return { ...set.signing.privateKey.export({ format: 'jwk' }), ...(kid ? { kid } : {}) };
};

describe('GRANT_SIGNING_KEY', () => {
  it('takes a PEM, a one-line PEM with literal \\n, a JWK or a JWK Set; the kid is the RFC 7638 thumbprint unless given', async () => {
    const pem = generateGrantKeyPem();
    const fromPem = parseGrantKeys(pem);
    expect(fromPem.signing.kid).toBe(await calculateJwkThumbprint(fromPem.signing.publicJwk));
    expect(fromPem.keys).toHaveLength(1);
    expect(parseGrantKeys(pem.trim().replaceAll('\n', '\\n')).signing.kid).toBe(fromPem.signing.kid);
    expect(parseGrantKeys(JSON.stringify(privateJwk(pem))).signing.kid).toBe(fromPem.signing.kid);
    expect(parseGrantKeys(JSON.stringify(privateJwk(pem, 'k-2026'))).signing.kid).toBe('k-2026');
    expect(fromPem.signing.publicJwk).not.toHaveProperty('d');
  });

  it('several keys: the first signs, all are published, later ones may be public only', () => {
    const a = generateGrantKeyPem();
    const b = generateGrantKeyPem();
    const twoPems = parseGrantKeys(`${a}\n${b}`);
    expect(twoPems.keys.map((k) => k.kid)).toEqual([parseGrantKeys(a).signing.kid, parseGrantKeys(b).signing.kid]);
    const set = parseGrantKeys(JSON.stringify({ keys: [privateJwk(a, 'new'), { ...parseGrantKeys(b).signing.publicJwk, kid: 'old' }] }));
    expect(set.signing.kid).toBe('new');
    expect(set.keys.map((k) => [k.kid, k.privateKey !== null])).toEqual([
      ['new', true],
      ['old', false],
    ]);
  });

  it('refuses what cannot sign Ed25519 grants, saying why and never echoing the key', () => {
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'pem', type: 'pkcs8' }) as string;
    const a = generateGrantKeyPem();
    const cases: [string, RegExp][] = [
      ['hello', /not a PEM key, a JWK or a JWK Set/],
      ['{"kty":"oct","k":"c2VjcmV0"}', /not an Ed25519 JWK/],
      ['{not json', /not valid JSON/],
      [rsa, /must be Ed25519, not rsa/],
      [JSON.stringify({ keys: [parseGrantKeys(a).signing.publicJwk] }), /first key signs .* must be a private key/],
      [JSON.stringify({ keys: [privateJwk(a, 'x'), privateJwk(generateGrantKeyPem(), 'x')] }), /share the kid "x"/],
      [JSON.stringify({ keys: [] }), /no key found/],
    ];
    for (const [value, message] of cases) {
      expect(() => parseGrantKeys(value), value.slice(0, 30)).toThrow(message);
      const error = (() => {
        try {
          loadConfig({ GRANT_SIGNING_KEY: value });
        } catch (e) {
          return e;
        }
      })();
      expect(error).toBeInstanceOf(ConfigError);
      expect((error as ConfigError).message).toMatch(/GRANT_SIGNING_KEY: /);
      if (value.length > 60) expect((error as ConfigError).message).not.toContain(value.slice(30, 60));
    }
  });

  it('GRANT_SECRET set is a start-up error naming GRANT_SIGNING_KEY; production without GRANT_SIGNING_KEY is one too', () => {
    expect(() => loadConfig({ GRANT_SECRET: 'x'.repeat(40), GRANT_SIGNING_KEY: generateGrantKeyPem() })).toThrow(
      /GRANT_SECRET: is retired[\s\S]*set GRANT_SIGNING_KEY/,
    );
    const prod = {
      NODE_ENV: 'production',
      DATABASE_URL: 'postgresql://h/db',
      AZURE_STORAGE_CONNECTION_STRING: 'x',
      JWT_SECRET: 'x'.repeat(32),
    };
    expect(() => loadConfig(prod)).toThrow(/GRANT_SIGNING_KEY: production needs GRANT_SIGNING_KEY/);
    expect(loadConfig({ ...prod, GRANT_SIGNING_KEY: generateGrantKeyPem() }).auth.grantKeys?.keys).toHaveLength(1);
  });

  it('development: a key is generated once into DATA_DIR (mode 0600) and reused, so the kid stays', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'grant-key-'));
    const [first, racing] = await Promise.all([readOrCreateDevGrantKey(dir), readOrCreateDevGrantKey(dir)]);
    expect(racing.signing.kid).toBe(first.signing.kid);
    expect((await readOrCreateDevGrantKey(dir)).signing.kid).toBe(first.signing.kid);
    expect((await stat(join(dir, 'grant-signing-key.pem'))).mode & 0o777).toBe(0o600);
    expect(parseGrantKeys(await readFile(join(dir, 'grant-signing-key.pem'), 'utf8')).signing.kid).toBe(first.signing.kid);
  });
});
