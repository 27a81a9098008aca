import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { readSafetensors } from '../src/io/index.js';
import { EvalMetricsRecordSchema, NestedLoRATrainer, readMetricsFile, TrainMetricsRecordSchema } from '../src/trainer/index.js';
import { tinyConfig, writeTinyExperimentInputs, type TinyInputs } from './fixtures/trainer/tiny-model.js';

let root: string;
let inputs: TinyInputs;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'nl-trainer-resume-'));
  inputs = await writeTinyExperimentInputs(root);
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

/** Reads every tensor of a safetensors file as plain arrays, disposing the tensors. */
async function readArrays(path: string): Promise<Record<string, Float32Array>> {
  const { tensors } = await readSafetensors(path);
  const arrays = Object.fromEntries(Object.entries(tensors).map(([name, tensor]) => [name, tensor.dataSync() as Float32Array]));
  tf.dispose(Object.values(tensors));
  return arrays;
}

function maxAbsDifference(left: Record<string, Float32Array>, right: Record<string, Float32Array>): number {
  expect(Object.keys(left).sort()).toEqual(Object.keys(right).sort());
  let max = 0;
  for (const [name, values] of Object.entries(left)) {
    const other = right[name] as Float32Array;
    values.forEach((value, index) => {
      max = Math.max(max, Math.abs(value - (other[index] as number)));
    });
  }
  return max;
}

describe.each(['accumulate', 'drop'] as const)('exact resume with %s', (inactiveGradients) => {
  it('8 + stop + resume + 12 equals 20 straight', async () => {
    const before = tf.memory().numTensors;
    const outputDir = join(root, inactiveGradients);
    const settings = {
      numSteps: 20,
      gradientAccumulationSteps: 2,
      warmupSteps: 4,
      lrSchedule: 'cosine',
      inactiveGradients,
      loraDropout: 0.1,
      evalEvery: 5,
      checkpointEvery: 5,
      valDataPath: inputs.validPath,
      retainDataPath: inputs.retainPath,
    };

    // An uninterrupted run of 20 steps.
    const straight = new NestedLoRATrainer(tinyConfig(inputs, outputDir, { ...settings, experimentName: 'straight' }));
    await straight.setup();
    await straight.train();
    straight.dispose();

    // The same run, stopped after step 8 ...
    const first = new NestedLoRATrainer(tinyConfig(inputs, outputDir, { ...settings, experimentName: 'resumed' }));
    await first.setup();
    first.on('step', (record) => {
      if (record.step === 8) {
        first.stop();
      }
    });
    const stopped = await first.train();
    first.dispose();
    expect(stopped.reason).toBe('stopped');
    expect(stopped.step).toBe(8);

    // ... and resumed from its latest checkpoint for the remaining 12.
    const second = new NestedLoRATrainer(tinyConfig(inputs, outputDir, { ...settings, experimentName: 'resumed', resume: true }));
    await second.setup();
    expect(second.resumedFromCheckpoint).toBe(join(outputDir, 'resumed', 'checkpoints', 'final'));
    expect(second.step).toBe(8);
    const done = await second.train();
    second.dispose();
    expect(done.reason).toBe('completed');
    expect(done.step).toBe(20);

    const straightSteps = await readMetricsFile(join(outputDir, 'straight', 'metrics', 'train_metrics.jsonl'), TrainMetricsRecordSchema);
    const resumedSteps = await readMetricsFile(join(outputDir, 'resumed', 'metrics', 'train_metrics.jsonl'), TrainMetricsRecordSchema);
    expect(resumedSteps.map((record) => record.step)).toEqual(Array.from({ length: 20 }, (_, index) => index + 1));
    straightSteps.forEach((record, index) => {
      const resumed = resumedSteps[index]!;
      expect(Math.abs(resumed.loss - record.loss)).toBeLessThanOrEqual(1e-6);
      expect(resumed.learningRate).toBe(record.learningRate);
      expect(resumed.activeTiers).toEqual(record.activeTiers);
      expect(resumed.tokens).toBe(record.tokens);
      expect(resumed.trainedTokens).toBe(record.trainedTokens);
    });
    // Warmup: 4 steps of 1e-2 * s / 4, then cosine decay.
    expect(straightSteps.slice(0, 5).map((record) => record.learningRate)).toEqual([2.5e-3, 5e-3, 7.5e-3, 1e-2, 1e-2]);

    const straightEvals = await readMetricsFile(join(outputDir, 'straight', 'metrics', 'eval_metrics.jsonl'), EvalMetricsRecordSchema);
    const resumedEvals = await readMetricsFile(join(outputDir, 'resumed', 'metrics', 'eval_metrics.jsonl'), EvalMetricsRecordSchema);
    expect(resumedEvals.map((record) => record.step)).toEqual([0, 5, 10, 15, 20]);
    expect(straightEvals.map((record) => record.step)).toEqual([0, 5, 10, 15, 20]);
    straightEvals.forEach((record, index) => {
      expect(Math.abs(resumedEvals[index]!.valLoss! - record.valLoss!)).toBeLessThanOrEqual(1e-6);
      expect(Math.abs(resumedEvals[index]!.forgetting! - record.forgetting!)).toBeLessThanOrEqual(1e-6);
    });

    const straightAdapter = await readArrays(join(outputDir, 'straight', 'checkpoints', 'final', 'adapters.safetensors'));
    const resumedAdapter = await readArrays(join(outputDir, 'resumed', 'checkpoints', 'final', 'adapters.safetensors'));
    expect(maxAbsDifference(straightAdapter, resumedAdapter)).toBeLessThanOrEqual(1e-6);
    const straightOptimizer = await readArrays(join(outputDir, 'straight', 'checkpoints', 'final', 'optimizer.safetensors'));
    const resumedOptimizer = await readArrays(join(outputDir, 'resumed', 'checkpoints', 'final', 'optimizer.safetensors'));
    expect(maxAbsDifference(straightOptimizer, resumedOptimizer)).toBeLessThanOrEqual(1e-6);

    expect(tf.memory().numTensors).toBe(before);
  });
});
