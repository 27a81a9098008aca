/**
 * Runs every example in `examples/` as a user would, against the built package: each one imports
 * `nested-learning` by name, which resolves to `dist/` through the package's own `exports`. Each
 * example checks its own results and exits non-zero when a check fails. This test asserts the exit
 * status and the output lines that show the example did its work.
 *
 * `examples/unit-testing-optimizers.test.ts` is a vitest file, which the vitest configuration
 * includes, so the suite runs it directly.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { beforeAll, describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const TSX_CLI = createRequire(import.meta.url).resolve('tsx/cli');
const EXAMPLE_TIMEOUT_MS = 120_000;

interface ExampleRun {
  status: number | null;
  output: string;
}

/** Runs `examples/<name>.ts` with tsx in a child process and returns its exit status and output. */
function runExample(name: string): ExampleRun {
  const result = spawnSync(process.execPath, [TSX_CLI, join('examples', `${name}.ts`)], {
    cwd: ROOT,
    encoding: 'utf8',
    timeout: EXAMPLE_TIMEOUT_MS - 5_000,
    env: { ...process.env, NODE_OPTIONS: '' },
  });
  return { status: result.status, output: `${result.stdout}${result.stderr}` };
}

/** Lines of the output that report a failed check, for the assertion message. */
function failedChecks(output: string): string {
  return output
    .split('\n')
    .filter((line) => line.startsWith('FAIL') || line.includes('Error'))
    .join('\n');
}

beforeAll(() => {
  for (const file of ['index.js', 'testing.js']) {
    if (!existsSync(join(ROOT, 'dist', file))) {
      throw new Error(`dist/${file} is missing; the examples import the built package. Run npm run build first.`);
    }
  }
});

/** Examples this file runs; the vitest file is run by the suite itself. */
const EXAMPLES = ['optimizer-only', 'custom-tier-map', 'continual-learning', 'resume', 'convert-adapters'];

describe('examples', () => {
  it('covers every example file', () => {
    const files = readdirSync(join(ROOT, 'examples')).filter((file) => file.endsWith('.ts') && !file.endsWith('.test.ts'));
    expect(files.map((file) => file.slice(0, -'.ts'.length)).sort()).toEqual([...EXAMPLES].sort());
  });

  it('optimizer-only trains a layers model and a manual loop', { timeout: EXAMPLE_TIMEOUT_MS }, () => {
    const run = runExample('optimizer-only');
    expect(run.status, failedChecks(run.output)).toBe(0);
    expect(run.output).toContain('ok   tier update counts are [80, 40, 20]');
    expect(run.output).toContain('ok   no tensors leaked across steps');
    expect(run.output).toContain('all checks passed');
  });

  it('custom-tier-map applies rules and a replaced map', { timeout: EXAMPLE_TIMEOUT_MS }, () => {
    const run = runExample('custom-tier-map');
    expect(run.status, failedChecks(run.output)).toBe(0);
    expect(run.output).toContain('ok   all 24 parameters are in the tier their rule gives');
    expect(run.output).toContain('tier 2: frequency 4, 2 updates, 4 parameters');
    expect(run.output).toContain('ok   step 8: 24 parameters of tiers [0, 1, 2] changed, and no others');
    expect(run.output).toContain('all checks passed');
  });

  it('continual-learning measures forgetting for both methods', { timeout: EXAMPLE_TIMEOUT_MS }, () => {
    const run = runExample('continual-learning');
    expect(run.status, failedChecks(run.output)).toBe(0);
    expect(run.output).toContain('ok   nested: forgetting = retainLoss - retainBaseline at every evaluation');
    expect(run.output).toContain('ok   plain-lora: eval_metrics.jsonl contains the same 4 evaluations as the events');
    expect(run.output).toMatch(/\| nested \| \d+\.\d{4} \| -?\d+\.\d{4} \|/);
    expect(run.output).toMatch(/\| plain-lora \| \d+\.\d{4} \| -?\d+\.\d{4} \|/);
    expect(run.output).toContain('all checks passed');
  });

  it('resume continues exactly after an abort', { timeout: EXAMPLE_TIMEOUT_MS }, () => {
    const run = runExample('resume');
    expect(run.status, failedChecks(run.output)).toBe(0);
    expect(run.output).toContain('ok   the run stopped at step 5 (stopped at 5)');
    expect(run.output).toContain('ok   losses of steps 6-12 match the uninterrupted run');
    expect(run.output).toContain('ok   the final adapters match');
    expect(run.output).toContain('all checks passed');
  });

  it('convert-adapters round-trips PEFT and mlx_lm', { timeout: EXAMPLE_TIMEOUT_MS }, () => {
    const run = runExample('convert-adapters');
    expect(run.status, failedChecks(run.output)).toBe(0);
    expect(run.output).toContain('ok   all 8 matrices are bit-identical after PEFT -> mlx_lm -> PEFT');
    expect(run.output).toContain('ok   the model gives the same logits with the PEFT and the mlx_lm adapter');
    expect(run.output).toContain('all checks passed');
  });
});
