import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

// These tests load the built package (`npm test` builds it first through the `pretest` script),
// the way an application that installed it from npm would.
const root = fileURLToPath(new URL('..', import.meta.url));

const PUBLIC_NAMES = ['NestedAdam', 'ParameterTierScheduler', 'NestedLearningConfig', 'NestedLoRATrainer'];

function runNode(args: string[]): string {
  return execFileSync(process.execPath, args, { cwd: root, encoding: 'utf8' });
}

describe('built package', () => {
  it('has ESM, CommonJS and declaration files', () => {
    for (const file of ['dist/index.js', 'dist/index.cjs', 'dist/index.d.ts', 'dist/index.d.cts']) {
      expect(existsSync(`${root}/${file}`), file).toBe(true);
    }
  });

  it('imports public names from ESM', () => {
    const script =
      `import * as nl from 'nested-learning';` +
      `console.log(JSON.stringify(${JSON.stringify(PUBLIC_NAMES)}.map((n) => [n, typeof nl[n]])));`;
    const output = runNode(['--input-type=module', '-e', script]);
    expect(Object.fromEntries(JSON.parse(output) as [string, string][])).toEqual({
      NestedAdam: 'function',
      ParameterTierScheduler: 'function',
      NestedLearningConfig: 'object',
      NestedLoRATrainer: 'function',
    });
  });

  it('requires public names from CommonJS', () => {
    const script =
      `const nl = require('nested-learning');` +
      `console.log(JSON.stringify(${JSON.stringify(PUBLIC_NAMES)}.map((n) => [n, typeof nl[n]])));`;
    const output = runNode(['--input-type=commonjs', '-e', script]);
    expect(Object.fromEntries(JSON.parse(output) as [string, string][])).toEqual({
      NestedAdam: 'function',
      ParameterTierScheduler: 'function',
      NestedLearningConfig: 'object',
      NestedLoRATrainer: 'function',
    });
  });

  it('shares the tfjs engine with the caller', () => {
    // A tensor made by the caller's tfjs must be accepted by the library's optimizer, which
    // only works when both sides resolved the same @tensorflow/tfjs module.
    const script = [
      `import * as tf from '@tensorflow/tfjs';`,
      `import { NestedAdam } from 'nested-learning';`,
      `await tf.setBackend('cpu');`,
      `const w = tf.variable(tf.tensor1d([1, 2]), true, 'w');`,
      `const opt = new NestedAdam({ learningRate: 0.1, weightDecay: 0, tierUpdateFrequencies: [1], tierMap: { w: 0 } });`,
      `opt.applyGradients({ w: tf.tensor1d([1, -1]) });`,
      `console.log(JSON.stringify(Array.from(w.dataSync())));`,
    ].join('\n');
    const output = runNode(['--input-type=module', '-e', script]);
    const [a, b] = JSON.parse(output) as number[];
    // One Adam step with a constant gradient moves each weight by learningRate against the gradient sign.
    expect(a).toBeCloseTo(0.9, 6);
    expect(b).toBeCloseTo(2.1, 6);
  });
});

describe('embedded default paths', () => {
  it('point at the shipped model and data', () => {
    const script =
      `import { existsSync } from 'node:fs';` +
      `import { embeddedDefaultPaths } from 'nested-learning';` +
      `const paths = embeddedDefaultPaths();` +
      `console.log(JSON.stringify(Object.entries(paths).map(([key, path]) => [key, existsSync(path)])));`;
    const output = runNode(['--input-type=module', '-e', script]);
    expect(Object.fromEntries(JSON.parse(output) as [string, boolean][])).toEqual({
      baseModelPath: true,
      trainDataPath: true,
      valDataPath: true,
      retainDataPath: true,
    });
  });
});

describe('published files', () => {
  it('include the embedded default model and data', () => {
    // `nested-learning train` with no config reads these from the installed package, so a tarball
    // without them would fail on first use.
    const output = execFileSync('npm', ['pack', '--dry-run', '--json'], { cwd: root, encoding: 'utf8' });
    const files = new Set((JSON.parse(output) as { files: { path: string }[] }[])[0]!.files.map((f) => f.path));
    for (const path of [
      'dist/cli.js',
      'examples/models/tiny-qwen2/config.json',
      'examples/models/tiny-qwen2/model.safetensors',
      'examples/models/tiny-qwen2/tokenizer.json',
      'examples/models/tiny-qwen2/tokenizer_config.json',
      'examples/data/press/valid.jsonl',
      'examples/data/fiction/train.jsonl',
      'examples/data/fiction/valid.jsonl',
    ]) {
      expect(files.has(path), path).toBe(true);
    }
  });
});
