import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';

import type { NestedLearningConfigInput } from '../src/config/index.js';
import { NestedLoRATrainer } from '../src/trainer/index.js';
import { tinyConfig, writeTinyExperimentInputs, type TinyInputs } from './fixtures/trainer/tiny-model.js';

let root: string;
let inputs: TinyInputs;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'nl-trainer-files-'));
  inputs = await writeTinyExperimentInputs(root);
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

// Schemas written independently of the library's, so that a renamed or dropped field fails here.
// A number may be written as a JSON number or, when not finite, as one of three strings; never null.
const number = z.union([z.number(), z.enum(['NaN', 'Infinity', '-Infinity'])]);
const tierStats = z.array(
  z.strictObject({
    tier: z.number().int(),
    frequency: z.number().int(),
    updateCount: z.number().int(),
    parameterCount: z.number().int(),
    elementCount: z.number().int(),
  }),
);
const trainLine = z.strictObject({
  step: z.number().int().min(1),
  loss: number,
  learningRate: number,
  gradNorm: number,
  activeTiers: z.array(z.number().int()),
  tokens: z.number().int(),
  trainedTokens: z.number().int(),
  tokensPerSecond: number,
  stepTime: number,
  elapsedTime: number,
  tierStats,
  skipped: z.boolean(),
  skippedSteps: z.number().int(),
  timestamp: z.iso.datetime(),
});
const evalLine = z.strictObject({
  step: z.number().int().min(0),
  valLoss: number,
  valPerplexity: number,
  valTokens: z.number().int(),
  retainLoss: number,
  retainBaseline: number,
  forgetting: number,
  tierStats,
  timestamp: z.iso.datetime(),
});

async function readLines(path: string): Promise<unknown[]> {
  const text = await readFile(path, 'utf8');
  expect(text.endsWith('\n')).toBe(true);
  return text
    .trimEnd()
    .split('\n')
    .map((line) => JSON.parse(line) as unknown);
}

function runConfig(name: string, seed: number): NestedLearningConfigInput {
  return tinyConfig(inputs, join(root, 'out'), {
    experimentName: name,
    seed,
    numSteps: 4,
    evalEvery: 2,
    checkpointEvery: 2,
    valDataPath: inputs.validPath,
    retainDataPath: inputs.retainPath,
  });
}

describe('trainer output files', () => {
  it('metrics files match the schema', async () => {
    const before = tf.memory().numTensors;
    const trainer = new NestedLoRATrainer(runConfig('schema', 3));
    await trainer.setup();
    await trainer.train();
    trainer.dispose();
    expect(tf.memory().numTensors).toBe(before);

    const folder = join(root, 'out', 'schema');
    const trainLines = await readLines(join(folder, 'metrics', 'train_metrics.jsonl'));
    const evalLines = await readLines(join(folder, 'metrics', 'eval_metrics.jsonl'));
    expect(trainLines).toHaveLength(4);
    for (const line of trainLines) {
      expect(() => trainLine.parse(line)).not.toThrow();
    }
    expect(evalLines.map((line) => (line as { step: number }).step)).toEqual([0, 2, 4]);
    for (const line of evalLines) {
      expect(() => evalLine.parse(line)).not.toThrow();
    }

    // Forgetting is the retain loss minus the baseline measured at step 0.
    const evals = evalLines.map((line) => evalLine.parse(line));
    const baseline = evals[0]!.retainLoss as number;
    expect(evals[0]!.forgetting).toBe(0);
    for (const record of evals) {
      expect(record.retainBaseline).toBe(baseline);
      expect(record.forgetting).toBeCloseTo((record.retainLoss as number) - baseline, 12);
      expect(record.valPerplexity).toBeCloseTo(Math.exp(record.valLoss as number), 9);
    }
  });

  it('experiment folder has the documented layout', async () => {
    const folder = join(root, 'out', 'schema');
    expect((await readdir(folder)).sort()).toEqual(['checkpoints', 'config.json', 'metrics']);
    expect((await readdir(join(folder, 'checkpoints'))).sort()).toEqual(['best', 'checkpoint_0000002', 'checkpoint_0000004', 'final']);
    expect((await readdir(join(folder, 'checkpoints', 'final'))).sort()).toEqual([
      'adapter_config.json',
      'adapters.safetensors',
      'metadata.json',
      'optimizer.safetensors',
      'trainer_state.json',
    ]);

    const config = JSON.parse(await readFile(join(folder, 'config.json'), 'utf8')) as Record<string, unknown>;
    expect(config.tier_update_frequencies).toEqual([1, 2, 4]);
    expect(config.base_model_path).toBe(inputs.modelDir);

    const metadata = JSON.parse(await readFile(join(folder, 'checkpoints', 'final', 'metadata.json'), 'utf8')) as Record<string, unknown>;
    expect(metadata).toMatchObject({ step: 4, stopped: false, stopReason: 'completed', isFinal: true, libraryVersion: '0.1.0', backend: 'wasm' });
    expect(metadata.tierStats).toEqual([
      { tier: 0, frequency: 1, updateCount: 4, parameterCount: 4, elementCount: 224 },
      { tier: 1, frequency: 2, updateCount: 2, parameterCount: 4, elementCount: 224 },
      { tier: 2, frequency: 4, updateCount: 1, parameterCount: 4, elementCount: 224 },
    ]);

    const adapterConfig = JSON.parse(await readFile(join(folder, 'checkpoints', 'final', 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
    expect(adapterConfig).toMatchObject({
      fine_tune_type: 'lora',
      num_layers: 3,
      lora_parameters: { rank: 4, scale: 2, dropout: 0, keys: ['self_attn.q_proj', 'self_attn.v_proj'] },
    });
  });

  it('evaluation is deterministic for a seed', async () => {
    const before = tf.memory().numTensors;
    const losses = async (name: string, seed: number): Promise<number[]> => {
      const trainer = new NestedLoRATrainer(runConfig(name, seed));
      await trainer.setup();
      await trainer.train();
      // Evaluating again without training gives the same numbers as the evaluation at the last step.
      const again = trainer.evaluate();
      trainer.dispose();
      const lines = (await readLines(join(root, 'out', name, 'metrics', 'eval_metrics.jsonl'))).map((line) => evalLine.parse(line));
      expect(again.valLoss).toBe(lines.at(-1)!.valLoss);
      expect(again.retainLoss).toBe(lines.at(-1)!.retainLoss);
      return lines.flatMap((line) => [line.valLoss as number, line.retainLoss as number]);
    };

    const first = await losses('seed-a', 11);
    const second = await losses('seed-b', 11);
    const other = await losses('seed-c', 12);

    expect(second).toEqual(first);
    // Step 0 uses the fresh adapter (lora_b is zero), so only the later evaluations depend on the seed.
    expect(other.slice(0, 2)).toEqual(first.slice(0, 2));
    expect(other.slice(2)).not.toEqual(first.slice(2));
    expect(tf.memory().numTensors).toBe(before);
  });
});
