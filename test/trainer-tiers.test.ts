import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { NestedLoRATrainer } from '../src/trainer/index.js';
import { tinyConfig, writeTinyExperimentInputs, type TinyInputs } from './fixtures/trainer/tiny-model.js';

let root: string;
let inputs: TinyInputs;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'nl-trainer-tiers-'));
  inputs = await writeTinyExperimentInputs(root);
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

function readWeights(trainer: NestedLoRATrainer): Record<string, Float32Array> {
  const weights = trainer.model.getLoraWeights();
  const arrays = Object.fromEntries(Object.entries(weights).map(([name, tensor]) => [name, tensor.dataSync() as Float32Array]));
  tf.dispose(Object.values(weights));
  return arrays;
}

describe.each(['accumulate', 'drop'] as const)('tier schedule with %s', (inactiveGradients) => {
  it('tiers change only at their steps', async () => {
    const before = tf.memory().numTensors;
    const trainer = new NestedLoRATrainer(
      tinyConfig(inputs, join(root, inactiveGradients), { numSteps: 8, tierUpdateFrequencies: [1, 2, 4], inactiveGradients }),
    );
    await trainer.setup();

    // layer_depth over 3 layers of equal size: layer k in tier k.
    const tierMap = trainer.parameterTierMap;
    expect(tierMap.tiers.map((tier) => tier.layers)).toEqual([[0], [1], [2]]);

    const changedSteps: number[][] = [[], [], []];
    let previous = readWeights(trainer);
    trainer.on('step', (record) => {
      const current = readWeights(trainer);
      tierMap.tiers.forEach((tier) => {
        const changed = tier.parameterNames.some((name) =>
          (current[name] as Float32Array).some((value, index) => value !== (previous[name] as Float32Array)[index]),
        );
        if (changed) {
          changedSteps[tier.tier]!.push(record.step);
        }
      });
      previous = current;
    });
    await trainer.train();

    // Frequencies [1, 2, 4]: tier 0 every step, tier 1 at even steps, tier 2 at 4 and 8 only.
    expect(changedSteps[0]).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(changedSteps[1]).toEqual([2, 4, 6, 8]);
    expect(changedSteps[2]).toEqual([4, 8]);

    trainer.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });
});
