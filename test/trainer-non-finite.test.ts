import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { initBackend } from '../src/backend/index.js';
import { TrainingError } from '../src/errors.js';
import { CausalLM, loadCheckpointWeights, loadModelConfig } from '../src/model/index.js';
import { NestedLoRATrainer, type ErrorEventRecord, type TrainMetricsRecord } from '../src/trainer/index.js';
import { tinyConfig, writeTinyExperimentInputs, type TinyInputs } from './fixtures/trainer/tiny-model.js';

let root: string;
let inputs: TinyInputs;

beforeAll(async () => {
  await initBackend({ backend: 'wasm' });
  root = await mkdtemp(join(tmpdir(), 'nl-trainer-nan-'));
  inputs = await writeTinyExperimentInputs(root);
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

/**
 * Builds the model that `tinyConfig` describes, with `lossAndGradients` replaced so that the
 * micro-batch calls listed in `poisonedCalls` (counted from 1) return a NaN gradient for one parameter.
 */
async function modelWithNaNGradients(poisonedCalls: (call: number) => boolean): Promise<CausalLM> {
  const config = await loadModelConfig(inputs.modelDir);
  const weights = await loadCheckpointWeights(inputs.modelDir, config);
  const model = CausalLM.fromWeights({
    config,
    weights,
    lora: { rank: 4, scale: 2, targetModules: ['q_proj', 'v_proj'], seed: 3 },
  });

  const original = model.lossAndGradients.bind(model);
  let calls = 0;
  model.lossAndGradients = (batch, options) => {
    calls += 1;
    const result = original(batch, options);
    if (poisonedCalls(calls)) {
      const name = 'model.layers.1.self_attn.q_proj.lora_b';
      const clean = result.grads[name] as tf.Tensor;
      result.grads[name] = tf.fill(clean.shape, Number.NaN);
      clean.dispose();
    }
    return result;
  };
  return model;
}

function readWeights(model: CausalLM): Record<string, Float32Array> {
  const weights = model.getLoraWeights();
  const arrays = Object.fromEntries(Object.entries(weights).map(([name, tensor]) => [name, tensor.dataSync() as Float32Array]));
  tf.dispose(Object.values(weights));
  return arrays;
}

describe('non-finite steps', () => {
  it('NaN gradient skips the step', async () => {
    const before = tf.memory().numTensors;
    const model = await modelWithNaNGradients((call) => call === 3);
    const trainer = new NestedLoRATrainer(tinyConfig(inputs, join(root, 'single'), { numSteps: 6 }), { model });
    await trainer.setup();

    const records: TrainMetricsRecord[] = [];
    const weightsAfter: Record<string, Float32Array>[] = [readWeights(model)];
    trainer.on('step', (record) => {
      records.push(record);
      weightsAfter.push(readWeights(model));
    });
    const done = await trainer.train();

    // Step 3 is skipped: the weights after it equal the weights after step 2, bit for bit.
    const third = records[2]!;
    expect(third.skipped).toBe(true);
    expect(third.gradNorm).toBeNaN();
    expect(Number.isFinite(third.loss)).toBe(true);
    expect(third.activeTiers).toEqual([]);
    expect(weightsAfter[3]).toEqual(weightsAfter[2]);
    expect(weightsAfter[2]).not.toEqual(weightsAfter[1]);

    // The tier clock does not advance on a skipped step: training step 4 is optimizer step 3.
    expect(records.map((record) => record.activeTiers)).toEqual([[0], [0, 1], [], [0], [0, 1, 2], [0]]);
    expect(records.map((record) => record.skippedSteps)).toEqual([0, 0, 1, 1, 1, 1]);
    expect(done.skippedSteps).toBe(1);
    expect(done.reason).toBe('completed');

    trainer.dispose();
    model.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });

  it('consecutive NaN steps stop the run', async () => {
    const before = tf.memory().numTensors;
    const model = await modelWithNaNGradients((call) => call >= 5);
    const settings = { numSteps: 12, checkpointEvery: 2, maxConsecutiveNonFiniteSteps: 3 };
    const trainer = new NestedLoRATrainer(tinyConfig(inputs, join(root, 'repeated'), settings), { model });
    await trainer.setup();

    const errors: ErrorEventRecord[] = [];
    trainer.on('error', (record) => errors.push(record));
    const run = trainer.train();

    // Steps 5, 6 and 7 are non-finite; the third in a row stops the run.
    await expect(run).rejects.toThrow(TrainingError);
    await expect(run).rejects.toThrow(/not finite for 3 steps in a row .* The last complete checkpoint is .*checkpoint_0000006 \(step 6\)/);
    expect(errors).toHaveLength(1);
    expect(errors[0]!.code).toBe('TRAINING_NON_FINITE');
    expect(errors[0]!.step).toBe(7);
    expect(trainer.step).toBe(7);
    trainer.dispose();
    model.dispose();

    // The last checkpoint is intact and resumes.
    const resumed = new NestedLoRATrainer(tinyConfig(inputs, join(root, 'repeated'), { ...settings, resume: true }));
    await resumed.setup();
    expect(resumed.resumedFromCheckpoint).toBe(join(root, 'repeated', 'run', 'checkpoints', 'checkpoint_0000006'));
    expect(resumed.step).toBe(6);
    const done = await resumed.train();
    expect(done.step).toBe(12);
    expect(done.skippedSteps).toBe(2);
    resumed.dispose();

    expect(tf.memory().numTensors).toBe(before);
  });
});
