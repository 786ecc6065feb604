import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

/**
 * The Prometheus alerting rules (observability/prometheus): valid for promtool, and each alert
 * fires on its figures and not on a healthy neighbour (lora-vault.rules.test.yml). promtool comes
 * with Debian's `prometheus` package (.ci/run installs it).
 */

const DIR = join(import.meta.dirname, '../../observability/prometheus');

function promtool(...args: string[]): string {
  return execFileSync('promtool', args, { cwd: DIR, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

describe('alert rules', () => {
  it('pass promtool check rules', () => {
    expect(promtool('check', 'rules', 'lora-vault.rules.yml')).toMatch(/SUCCESS: 10 rules found/);
  });

  it("pass promtool's unit tests", () => {
    expect(promtool('test', 'rules', 'lora-vault.rules.test.yml')).toMatch(/SUCCESS/);
  });
});
