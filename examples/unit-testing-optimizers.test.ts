/**
 * How to unit-test your own NestedAdam setup with vitest and `nested-learning/testing`: the tier
 * schedule, the size of each tier's first update, and the absence of tensor leaks.
 *
 * Each test builds one variable per tier, feeds a constant gradient, and checks the optimizer against
 * numbers worked out by hand. Copy the pattern for your own tier maps and options.
 *
 * Run after `npm run build` (it imports the built package by name):
 *   npx vitest run examples/unit-testing-optimizers.test.ts
 */
import * as tf from '@tensorflow/tfjs';
import { initBackend, NestedAdam, type InactiveGradients } from 'nested-learning';
import { assertNoTensorLeaks, assertTensorsClose, captureWeights, weightChanges } from 'nested-learning/testing';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';

const FREQUENCIES = [1, 2, 4];
const LEARNING_RATE = 0.01;

/** Creates one variable per tier, named after its tier, filled with `initial`. */
function makeTierVariables(initial: number): tf.Variable[] {
  return FREQUENCIES.map((_, tier) => tf.variable(tf.fill([2, 3], initial), true, `tier${tier}/weight`));
}

function makeOptimizer(inactiveGradients: InactiveGradients): NestedAdam {
  return new NestedAdam({
    learningRate: LEARNING_RATE,
    weightDecay: 0,
    tierUpdateFrequencies: FREQUENCIES,
    tierMap: { 'tier0/weight': 0, 'tier1/weight': 1, 'tier2/weight': 2 },
    inactiveGradients,
  });
}

/** Applies a constant gradient of 0.5 to every variable and disposes the gradient tensors. */
function applyConstantGradient(optimizer: NestedAdam, variables: tf.Variable[]): void {
  const gradients = Object.fromEntries(variables.map((variable) => [variable.name, tf.fill(variable.shape, 0.5)]));
  optimizer.applyGradients(gradients);
  tf.dispose(Object.values(gradients));
}

let live: { optimizer: NestedAdam; variables: tf.Variable[] } | undefined;

beforeAll(async () => {
  await initBackend({ backend: 'cpu' });
});

afterEach(() => {
  live?.optimizer.dispose();
  tf.dispose(live?.variables ?? []);
  live = undefined;
});

describe('NestedAdam tiers [1, 2, 4]', () => {
  it('updates each tier on its schedule', () => {
    const variables = makeTierVariables(1);
    const optimizer = makeOptimizer('accumulate');
    live = { optimizer, variables };

    const stepsThatChanged: Record<string, number[]> = { 'tier0/weight': [], 'tier1/weight': [], 'tier2/weight': [] };
    for (let step = 1; step <= 8; step += 1) {
      const before = captureWeights(variables);
      applyConstantGradient(optimizer, variables);
      for (const change of weightChanges(before, captureWeights(variables))) {
        if (change.changed) {
          stepsThatChanged[change.name]?.push(step);
        }
      }
    }

    // Tier k updates at the steps that are multiples of its frequency, and is untouched otherwise.
    expect(stepsThatChanged['tier0/weight']).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(stepsThatChanged['tier1/weight']).toEqual([2, 4, 6, 8]);
    expect(stepsThatChanged['tier2/weight']).toEqual([4, 8]);
    expect(optimizer.tierStats().map((stats) => stats.updateCount)).toEqual([8, 4, 2]);
  });

  it.each(['accumulate', 'mean', 'drop'] as const)('first update moves weights by the learning rate (%s)', (mode) => {
    // Weights start at 0, so the float32 difference after - before is the update itself, unrounded.
    const variables = makeTierVariables(0);
    const optimizer = makeOptimizer(mode);
    live = { optimizer, variables };

    const firstUpdates: tf.Tensor[] = [];
    for (let step = 1; step <= 4; step += 1) {
      const before = variables.map((variable) => variable.clone());
      applyConstantGradient(optimizer, variables);
      // Tier k's first update is at step FREQUENCIES[k].
      FREQUENCIES.forEach((frequency, tier) => {
        if (step === frequency) {
          firstUpdates[tier] = tf.sub(variables[tier] as tf.Variable, before[tier] as tf.Tensor);
        }
      });
      tf.dispose(before);
    }

    // Bias correction uses each tier's own update count t = 1, so m_hat = g_window and
    // v_hat = g_window^2 whatever the window contains (0.5, or 2.0 accumulated over 4 steps, or their
    // mean 0.5). The step is lr * g / (|g| + 1e-8) = 0.01 * (1 - 2e-8) or closer, so every element
    // moves by -0.01 to a relative 1e-6.
    for (const [tier, update] of firstUpdates.entries()) {
      expect(update, `tier ${tier} has a first update`).toBeDefined();
      assertTensorsClose(update, -LEARNING_RATE, { rtol: 1e-6, atol: 0 });
    }
    tf.dispose(firstUpdates);
  });

  it('leaks no tensors per step', async () => {
    const variables = makeTierVariables(1);
    const optimizer = makeOptimizer('accumulate');
    live = { optimizer, variables };

    // The first step creates the optimizer's slots, so warm up one full period of [1, 2, 4] first.
    for (let step = 1; step <= 4; step += 1) {
      applyConstantGradient(optimizer, variables);
    }
    await assertNoTensorLeaks(() => {
      for (let step = 5; step <= 12; step += 1) {
        applyConstantGradient(optimizer, variables);
      }
    });
  });
});
