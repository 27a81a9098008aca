/**
 * Parts of the `nested-learning` command that run in-process: flag conversion, the comparison
 * statistics and report, progress formatting, and one training run checked for leaked tensors.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { isAbsolute, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import * as tf from '@tensorflow/tfjs';
import { describe, expect, it } from 'vitest';

import { describeResult, renderSvg, spread, summarizeComparison, type ComparisonRun } from '../src/cli/compare-report.js';
import { configOverrides, kebabCase, resolveConfig } from '../src/cli/config-options.js';
import { embeddedDefaultPaths } from '../src/index.js';
import { timestampName } from '../src/cli/names.js';
import { formatDuration, formatStepLine, ProgressDisplay } from '../src/cli/progress.js';
import { runTraining } from '../src/cli/run-training.js';
import { formatLayers } from '../src/cli/commands/tiers.js';
import { initBackend, type TrainMetricsRecord } from '../src/index.js';

const root = fileURLToPath(new URL('..', import.meta.url));

function stepRecord(step: number, activeTiers: number[]): TrainMetricsRecord {
  return {
    step,
    loss: 2.34567,
    learningRate: 1e-3,
    gradNorm: 1,
    activeTiers,
    tokens: 100,
    trainedTokens: 100 * step,
    tokensPerSecond: 812.4,
    stepTime: 0.1,
    elapsedTime: 0.1 * step,
    tierStats: [],
    skipped: false,
    skippedSteps: 0,
    timestamp: '2026-01-01T00:00:00.000Z',
  };
}

function comparisonRun(method: 'lora' | 'nested', seed: number, valLoss: number, forgetting: number): ComparisonRun {
  return {
    method,
    seed,
    tierUpdateFrequencies: method === 'lora' ? [1, 1, 1] : [1, 2, 4],
    steps: 10,
    valLoss,
    forgetting,
    trainingSeconds: 5,
    experimentFolder: `/runs/${method}-seed${seed}`,
    curve: [
      { step: 0, valLoss: 4, forgetting: 0 },
      { step: 10, valLoss, forgetting },
    ],
  };
}

describe('config flags', () => {
  it('kebab-cases field names', () => {
    expect(kebabCase('tierUpdateFrequencies')).toBe('tier-update-frequencies');
    expect(kebabCase('numSteps')).toBe('num-steps');
    expect(kebabCase('seed')).toBe('seed');
  });

  it('converts flag text to field values', () => {
    const overrides = configOverrides({
      numSteps: '50',
      tierUpdateFrequencies: '1, 2,4',
      earlyStop: true,
      saveBestOnly: 'false',
      tierMap: '{"model.layers.0.*": 0}',
      preset: 'balanced',
    });

    expect(overrides).toEqual({
      numSteps: '50',
      tierUpdateFrequencies: ['1', '2', '4'],
      earlyStop: true,
      saveBestOnly: false,
      tierMap: { 'model.layers.0.*': 0 },
    });
  });

  it('rejects invalid boolean and JSON values', () => {
    expect(() => configOverrides({ earlyStop: 'yes' })).toThrow(/Invalid value "yes" for --early-stop/);
    expect(() => configOverrides({ tierMap: '{not json' })).toThrow(/Invalid JSON for --tier-map/);
  });

  it('overrides the embedded default', async () => {
    const config = await resolveConfig({ numSteps: '50', tierUpdateFrequencies: '1,4,8', learningRate: '1e-4' });

    expect(config.numSteps).toBe(50);
    expect(config.tierUpdateFrequencies).toEqual([1, 4, 8]);
    expect(config.learningRate).toBe(1e-4);
    expect(config.baseModelPath).toBe(join(root, 'examples', 'models', 'tiny-qwen2'));
    expect(config.retainDataPath).toBe(join(root, 'examples', 'data', 'press', 'valid.jsonl'));
    expect(config.outputDir).toBe('./nested_learning/checkpoints');
  });

  it('applies a preset below the flags', async () => {
    const config = await resolveConfig({ preset: 'conservative', numSteps: '20' });

    expect(config.tierUpdateFrequencies).toEqual([1, 4, 8]);
    expect(config.numSteps).toBe(20);
  });

  it('reads a config file with overrides', async () => {
    const folder = await mkdtemp(join(tmpdir(), 'nested-learning-cli-config-'));
    const file = join(folder, 'run.yaml');
    await writeFile(file, 'base_model_path: model\ntrain_data_path: train.jsonl\nnum_steps: 7\nlora_rank: 4\n');
    try {
      const config = await resolveConfig({ config: file, loraRank: '16' });

      expect(config.numSteps).toBe(7);
      expect(config.loraRank).toBe(16);
      expect(config.baseModelPath).toBe('model');
    } finally {
      await rm(folder, { recursive: true, force: true });
    }
  });
});

describe('embedded default paths', () => {
  it('are absolute files of the package', () => {
    const paths = embeddedDefaultPaths();
    for (const path of Object.values(paths)) {
      expect(isAbsolute(path)).toBe(true);
    }
    expect(paths.trainDataPath).toBe(join(root, 'examples', 'data', 'fiction', 'train.jsonl'));
  });

  it('timestamp names sort by time', () => {
    expect(timestampName(new Date('2026-03-04T05:06:07.890Z'))).toBe('20260304-050607');
  });
});

describe('comparison statistics', () => {
  it('spread of three values', () => {
    // mean (1 + 2 + 4) / 3 = 2.3333; squared deviations 1.7778 + 0.1111 + 2.7778 = 4.6667;
    // sample variance 4.6667 / 2 = 2.3333, std sqrt(2.3333) = 1.5275.
    const result = spread([1, 2, 4]);

    expect(result.mean).toBeCloseTo(2.333333, 6);
    expect(result.std).toBeCloseTo(1.527525, 6);
    expect(result.min).toBe(1);
    expect(result.max).toBe(4);
    expect(result.count).toBe(3);
  });

  it('spread of one value', () => {
    expect(spread([3.5])).toEqual({ mean: 3.5, std: 0, min: 3.5, max: 3.5, count: 1 });
  });

  it('pairs runs by seed', () => {
    const runs = [
      comparisonRun('lora', 0, 3.0, 0.1),
      comparisonRun('nested', 0, 3.1, 0.05),
      comparisonRun('lora', 1, 3.2, 0.14),
      comparisonRun('nested', 1, 3.25, 0.12),
    ];
    const summary = summarizeComparison(runs, 10);

    expect(summary.seeds).toEqual([0, 1]);
    // Forgetting differences nested - LoRA: -0.05 and -0.02, mean -0.035, std sqrt(2 * 0.015^2) = 0.021213.
    expect(summary.difference.forgetting.mean).toBeCloseTo(-0.035, 9);
    expect(summary.difference.forgetting.std).toBeCloseTo(0.0212132, 6);
    // Validation-loss differences: 0.1 and 0.05, mean 0.075, std sqrt(2 * 0.025^2) = 0.035355.
    expect(summary.difference.valLoss.mean).toBeCloseTo(0.075, 9);
    expect(summary.difference.valLoss.std).toBeCloseTo(0.0353553, 6);
    expect(summary.nestedForgotLessIn).toBe(2);
    expect(summary.nestedLearnedMoreIn).toBe(0);
    expect(summary.lora.valLoss.mean).toBeCloseTo(3.1, 9);

    const sentences = describeResult(summary);
    expect(sentences[0]).toContain('forgot less than plain LoRA on average');
    expect(sentences[0]).toContain('forgot less in 2 of 2 seeds');
    expect(sentences[0]).toContain('larger than its standard deviation');
    expect(sentences[1]).toContain('ended higher than plain LoRA');
  });

  it('says when seeds do not separate the methods', () => {
    const runs = [
      comparisonRun('lora', 0, 3.0, 0.1),
      comparisonRun('nested', 0, 3.0, 0.05),
      comparisonRun('lora', 1, 3.0, 0.1),
      comparisonRun('nested', 1, 3.0, 0.2),
    ];
    const sentences = describeResult(summarizeComparison(runs, 10));

    expect(sentences[0]).toContain('forgot more than plain LoRA on average');
    expect(sentences[0]).toContain('do not separate the methods');
  });

  it('rejects a seed without both methods', () => {
    expect(() => summarizeComparison([comparisonRun('lora', 0, 3, 0.1)], 10)).toThrow('No nested run for seed 0.');
  });

  it('chart has both panels and curves', () => {
    const runs = [comparisonRun('lora', 0, 3.0, 0.1), comparisonRun('nested', 0, 3.1, 0.05)];
    const svg = renderSvg(runs, summarizeComparison(runs, 10));

    expect(svg).toContain('New-domain validation loss');
    expect(svg).toContain('Old-domain forgetting');
    // One run and one mean curve per method, in each of the two panels.
    expect(svg.match(/<polyline /g)).toHaveLength(8);
    expect(svg).not.toContain('NaN');
  });
});

describe('progress output', () => {
  it('plain step line', () => {
    expect(formatStepLine(stepRecord(100, [0]), 1000, 912)).toBe('Step 100/1000 | Loss: 2.3457 | Active tiers: [0] | ETA: 15.2m');
  });

  it('durations', () => {
    expect(formatDuration(undefined)).toBe('?');
    expect(formatDuration(42.4)).toBe('42s');
    expect(formatDuration(912)).toBe('15.2m');
    expect(formatDuration(4680)).toBe('1.3h');
  });

  it('plain lines at the first, every logEvery and the last step', () => {
    let text = '';
    const display = new ProgressDisplay({ stream: { write: (chunk: string) => (text += chunk), isTTY: false }, totalSteps: 5, logEvery: 2 });
    for (let step = 1; step <= 5; step++) {
      display.step(stepRecord(step, [0]));
    }

    expect(text.split('\n').filter((line) => line !== '').map((line) => line.split(' |')[0])).toEqual(['Step 1/5', 'Step 2/5', 'Step 4/5', 'Step 5/5']);
  });

  it('bar redrawn in place on a TTY', () => {
    let text = '';
    const display = new ProgressDisplay({ stream: { write: (chunk: string) => (text += chunk), isTTY: true, columns: 200 }, totalSteps: 4, logEvery: 1 });
    display.step(stepRecord(2, [0, 1]));
    display.line('Eval at step 2');
    display.finish();

    expect(text).toContain('\r\x1b[2K[############------------]  50% Step 2/4 | Loss: 2.3457 | Active tiers: [0, 1] | 812 tok/s | ETA: ?');
    expect(text.endsWith('\r\x1b[2KEval at step 2\n')).toBe(true);
  });

  it('layer ranges', () => {
    expect(formatLayers([0, 1, 2, 5, 7, 8])).toBe('0-2, 5, 7-8');
    expect(formatLayers([3])).toBe('3');
    expect(formatLayers([])).toBe('-');
  });
});

describe('runTraining', () => {
  it('trains, writes summary.json and leaks no tensors', async () => {
    const folder = await mkdtemp(join(tmpdir(), 'nested-learning-cli-run-'));
    const lines = (await readFile(join(root, 'examples', 'data', 'fiction', 'train.jsonl'), 'utf8')).split('\n').slice(0, 4).join('\n');
    await writeFile(join(folder, 'train.jsonl'), `${lines}\n`);
    let output = '';
    const stream = { write: (chunk: string) => (output += chunk), isTTY: false };

    try {
      const config = await resolveConfig({
        trainDataPath: join(folder, 'train.jsonl'),
        valDataPath: join(folder, 'train.jsonl'),
        retainDataPath: join(folder, 'train.jsonl'),
        outputDir: folder,
        experimentName: 'leaks',
        numSteps: '2',
        warmupSteps: '0',
        batchSize: '2',
        maxSeqLength: '32',
        evalEvery: '2',
        evalBatches: '1',
        backend: 'wasm',
      });
      // Initialising the backend first keeps its own tensors out of the count.
      await initBackend({ backend: 'wasm' });
      const before = tf.memory().numTensors;
      const summary = await runTraining({ config, terminal: { out: stream, err: stream, verbose: false } });

      expect(tf.memory().numTensors).toBe(before);
      expect(summary.steps).toBe(2);
      expect(summary.evaluations.map((record) => record.step)).toEqual([0, 2]);
      const written = JSON.parse(await readFile(join(folder, 'leaks', 'summary.json'), 'utf8')) as { valLoss: number };
      expect(written.valLoss).toBe(summary.lastEvaluation?.valLoss);
      expect(output).toContain('Step 2/2 | Loss: ');
    } finally {
      await rm(folder, { recursive: true, force: true });
    }
  });
});
