/**
 * NestedAdam with every tier frequency 1 against torch.optim.AdamW.
 *
 * The expected weights come from test/fixtures/optimizer/adamw_reference.json, written by
 * make_fixtures.py in the same folder (PyTorch 1.13). Each case applies the fixture's float32
 * gradients for 20 steps and compares the weights after every step to 1e-6 relative.
 */
import * as tf from '@tensorflow/tfjs';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { initBackend } from '../src/backend/index.js';
import { NestedAdam } from '../src/optimizer/index.js';

interface ReferenceCase {
  name: string;
  beta1: number;
  beta2: number;
  epsilon: number;
  weightDecay: number;
  learningRates: number[];
  parameters: Array<{ name: string; shape: number[]; initial: number[] }>;
  gradients: Array<Record<string, number[]>>;
  expected: Array<Record<string, number[]>>;
}

const fixture = JSON.parse(
  readFileSync(new URL('./fixtures/optimizer/adamw_reference.json', import.meta.url), 'utf8'),
) as { steps: number; cases: ReferenceCase[] };

const RELATIVE_TOLERANCE = 1e-6;

/** Runs one fixture case with NestedAdam and returns the largest relative error over all steps. */
function runCase(reference: ReferenceCase, prefix: string, frequencies: number[]): number {
  const variables = reference.parameters.map((parameter) =>
    tf.tidy(() => tf.variable(tf.tensor(parameter.initial, parameter.shape), true, `${prefix}/${parameter.name}`)),
  );
  // Three tiers of frequency 1, with the parameters spread over them, behave as one AdamW.
  const tierMap = Object.fromEntries(variables.map((variable, index) => [variable.name, index % frequencies.length]));
  const optimizer = new NestedAdam({
    learningRate: (step) => reference.learningRates[step - 1] as number,
    beta1: reference.beta1,
    beta2: reference.beta2,
    epsilon: reference.epsilon,
    weightDecay: reference.weightDecay,
    tierUpdateFrequencies: frequencies,
    tierMap,
  });

  let maxRelativeError = 0;
  reference.gradients.forEach((stepGradients, stepIndex) => {
    const gradients = tf.tidy(() =>
      Object.fromEntries(
        reference.parameters.map((parameter, index) => [
          (variables[index] as tf.Variable).name,
          tf.tensor(stepGradients[parameter.name] as number[], parameter.shape),
        ]),
      ),
    );
    optimizer.applyGradients(gradients);
    tf.dispose(Object.values(gradients));

    reference.parameters.forEach((parameter, index) => {
      const actual = (variables[index] as tf.Variable).dataSync();
      const expected = (reference.expected[stepIndex] as Record<string, number[]>)[parameter.name] as number[];
      expected.forEach((value, element) => {
        const error = Math.abs((actual[element] as number) - value) / Math.abs(value);
        maxRelativeError = Math.max(maxRelativeError, error);
      });
    });
  });

  optimizer.dispose();
  tf.dispose(variables);
  return maxRelativeError;
}

describe('NestedAdam against torch.optim.AdamW', () => {
  beforeAll(async () => {
    await initBackend({ backend: 'cpu' });
  });

  afterAll(async () => {
    await initBackend({ backend: 'cpu' });
  });

  it('fixture has 20 steps and 4 cases', () => {
    expect(fixture.steps).toBe(20);
    expect(fixture.cases.map((reference) => reference.name)).toEqual([
      'pytorch_defaults',
      'large_steps',
      'no_weight_decay',
      'linear_decay_schedule',
    ]);
  });

  for (const reference of fixture.cases) {
    it(`matches ${reference.name} on cpu`, () => {
      const before = tf.memory().numTensors;
      const error = runCase(reference, `cpu_${reference.name}`, [1]);
      expect(error).toBeLessThanOrEqual(RELATIVE_TOLERANCE);
      expect(tf.memory().numTensors).toBe(before);
    });

    it(`matches ${reference.name} with three tiers of frequency 1`, () => {
      const before = tf.memory().numTensors;
      const error = runCase(reference, `tiers_${reference.name}`, [1, 1, 1]);
      expect(error).toBeLessThanOrEqual(RELATIVE_TOLERANCE);
      expect(tf.memory().numTensors).toBe(before);
    });
  }

  it('matches every case on wasm', async () => {
    await initBackend({ backend: 'wasm' });
    const before = tf.memory().numTensors;
    for (const reference of fixture.cases) {
      const error = runCase(reference, `wasm_${reference.name}`, [1, 1]);
      expect(error, reference.name).toBeLessThanOrEqual(RELATIVE_TOLERANCE);
    }
    expect(tf.memory().numTensors).toBe(before);
  });
});
