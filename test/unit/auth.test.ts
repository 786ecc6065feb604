import { SignJWT } from 'jose';
import { describe, expect, it } from 'vitest';
import { generateGrantKeyPem, parseGrantKeys } from '../../server/auth/grant-keys.ts';
import { createGrantSigner, type GrantError } from '../../server/auth/grants.ts';
import { createTokenVerifier, InvalidTokenError, signToken } from '../../server/auth/tokens.ts';

const SECRET = 'unit-test-secret-unit-test-secret-unit';
const USER = '7f0c7f9e-6f2c-4a3e-9d7a-2b1f3c4d5e6f';

describe('bearer tokens', () => {
  const verify = createTokenVerifier({ secret: SECRET });

  it('round-trips every role', async () => {
    expect(await verify(await signToken(SECRET, { role: 'user', sub: USER.toUpperCase() }))).toEqual({ role: 'user', userId: USER });
    expect(await verify(await signToken(SECRET, { role: 'machine', sub: 'gpu-1', machineId: 'gpu-1' }))).toEqual({
      role: 'machine',
      machineId: 'gpu-1',
    });
    expect(await verify(await signToken(SECRET, { role: 'admin', sub: 'ops' }))).toEqual({ role: 'admin', subject: 'ops' });
    expect(await verify(await signToken(SECRET, { role: 'service', sub: 'dispatcher' }))).toEqual({
      role: 'service',
      subject: 'dispatcher',
    });
  });

  it('rejects other secrets, expiry, unknown roles and non-UUID users', async () => {
    const key = new TextEncoder().encode(SECRET);
    const cases = [
      await signToken('another-secret-another-secret-another', { role: 'admin', sub: 'x' }),
      await new SignJWT({ role: 'admin' })
        .setProtectedHeader({ alg: 'HS256' })
        .setIssuer('lora-vault')
        .setExpirationTime(Math.floor(Date.now() / 1000) - 60)
        .sign(key),
      await new SignJWT({ role: 'root' }).setProtectedHeader({ alg: 'HS256' }).setIssuer('lora-vault').sign(key),
      await new SignJWT({ role: 'admin' }).setProtectedHeader({ alg: 'HS256' }).setIssuer('someone-else').sign(key),
      await new SignJWT({ role: 'user' }).setProtectedHeader({ alg: 'HS256' }).setIssuer('lora-vault').setSubject('not-a-uuid').sign(key),
      'not.a.jwt',
    ];
    for (const token of cases) await expect(verify(token)).rejects.toBeInstanceOf(InvalidTokenError);
  });
});

describe('job grants', () => {
  const keys = parseGrantKeys(generateGrantKeyPem());
  const signer = createGrantSigner(keys);

  it('names one user and job until it expires', async () => {
    const { token } = await signer.sign({ userId: USER, jobId: 'job-1', ttlSeconds: 60 });
    const grant = await signer.verify(token);
    expect(grant).toMatchObject({ userId: USER, jobId: 'job-1' });
    expect(grant.expiresAt.getTime()).toBeGreaterThan(Date.now() + 50_000);
  });

  it('says why a grant is refused', async () => {
    const other = createGrantSigner(parseGrantKeys(generateGrantKeyPem()));
    const reasons = async (token: string | null) =>
      signer.verify(token).then(
        () => 'ok',
        (e: GrantError) => e.reason,
      );
    expect(await reasons(null)).toBe('missing');
    expect(await reasons('garbage')).toBe('malformed');
    expect(await reasons((await other.sign({ userId: USER, jobId: 'j', ttlSeconds: 60 })).token)).toBe('bad-signature');
    expect(await reasons((await signer.sign({ userId: USER, jobId: 'j', ttlSeconds: -10 })).token)).toBe('expired');
    // a bearer token is not a grant (audience differs, and HS256 is not accepted)
    expect(await reasons(await signToken(SECRET, { role: 'user', sub: USER }))).toBe('malformed');
  });

  it('rotation: grants of every published key verify, the first key signs', async () => {
    const older = parseGrantKeys(generateGrantKeyPem());
    const oldGrant = (await createGrantSigner(older).sign({ userId: USER, jobId: 'old', ttlSeconds: 60 })).token;
    const newer = parseGrantKeys(generateGrantKeyPem());
    // new key first, old key kept published (public part only is enough)
    const jwks = JSON.stringify({
      keys: [{ ...newer.signing.privateKey.export({ format: 'jwk' }), kid: newer.signing.kid }, older.signing.publicJwk],
    });
    const rotated = createGrantSigner(parseGrantKeys(jwks));
    expect(await rotated.verify(oldGrant)).toMatchObject({ jobId: 'old' });
    const fresh = (await rotated.sign({ userId: USER, jobId: 'new', ttlSeconds: 60 })).token;
    expect(JSON.parse(Buffer.from(fresh.split('.')[0] as string, 'base64url').toString())).toMatchObject({
      alg: 'EdDSA',
      kid: newer.signing.kid,
    });
    // the old key alone does not know the new one
    expect(
      await createGrantSigner(older)
        .verify(fresh)
        .catch((e: GrantError) => e.reason),
    ).toBe('bad-signature');
  });
});
