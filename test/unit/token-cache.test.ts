import { describe, expect, it } from 'vitest';
import { cachedTokenVerifier } from '../../server/auth/token-cache.ts';
import { createTokenVerifier, signToken } from '../../server/auth/tokens.ts';

const SECRET = 'unit-secret-unit-secret-unit-secret-0123456789';
const USER = '6a1f0c52-3b7e-4c1e-9a51-0d6e2f1b8c44';

/** The real HS256 verifier, counting the signature checks it is asked for. */
function countingVerifier() {
  const verify = createTokenVerifier({ secret: SECRET });
  const counted = {
    calls: 0,
    verify: (token: string) => {
      counted.calls++;
      return verify(token);
    },
  };
  return counted;
}

describe('cachedTokenVerifier', () => {
  it('checks a token once and serves it again from the cache', async () => {
    const inner = countingVerifier();
    const verify = cachedTokenVerifier(inner.verify);
    const token = await signToken(SECRET, { role: 'user', sub: USER });
    for (let i = 0; i < 5; i++) expect(await verify(token)).toEqual({ role: 'user', userId: USER });
    expect(inner.calls).toBe(1);
  });

  it('never serves a token past its exp, and remembers no failure', async () => {
    const inner = countingVerifier();
    const verify = cachedTokenVerifier(inner.verify);
    const token = await signToken(SECRET, { role: 'user', sub: USER }, 1);
    await verify(token);
    await new Promise((r) => setTimeout(r, 1_100 + 5_000)); // past exp and the verifier's 5 s clock tolerance
    await expect(verify(token)).rejects.toThrow(/invalid token/);
    await expect(verify(token)).rejects.toThrow(/invalid token/);
    expect(inner.calls).toBe(3);
    await expect(verify(`${token}x`)).rejects.toThrow(/invalid token/);
  }, 15_000);

  it('checks again after maxAgeMs, and keeps at most max tokens', async () => {
    const inner = countingVerifier();
    const verify = cachedTokenVerifier(inner.verify, { max: 2, maxAgeMs: 200 });
    const [a, b, c] = await Promise.all([1, 2, 3].map((n) => signToken(SECRET, { role: 'machine', sub: `gpu-${n}` })));
    for (const t of [a, b, c, a]) await verify(t as string); // c pushed a out
    expect(inner.calls).toBe(4);
    await new Promise((r) => setTimeout(r, 250));
    await verify(c as string);
    expect(inner.calls).toBe(5);
  });
});
