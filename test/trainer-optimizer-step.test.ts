import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';

import { initBackend } from '../src/backend/index.js';
import type { Batch } from '../src/data/index.js';
import type { NestedAdam } from '../src/optimizer/index.js';
import { runOptimizerStep, type MicroBatchGradients } from '../src/trainer/index.js';

beforeAll(async () => {
  await initBackend({ backend: 'cpu' });
});

/** An optimizer stand-in that records the learning rate and the gradients it receives. */
class RecordingOptimizer {
  learningRate = 0;
  calls: { learningRate: number; gradients: Record<string, number[]> }[] = [];

  applyGradients(gradients: tf.NamedTensorMap): void {
    const values = Object.fromEntries(Object.entries(gradients).map(([name, tensor]) => [name, Array.from(tensor.dataSync())]));
    this.calls.push({ learningRate: this.learningRate, gradients: values });
  }
}

/** A batch that only carries its target-token count; runOptimizerStep passes it through unread. */
function batchOf(tokenCount: number): Batch {
  return { tokenCount } as Batch;
}

/** Micro-batch results of the 1.25 case: 1 token with loss 2 and gradient [2, 0], 3 tokens with loss sum 3 and gradient [0, 6]. */
function microBatches(firstGradient: number[] = [2, 0]): (batch: Batch, index: number) => MicroBatchGradients {
  return (_batch, index) =>
    index === 0
      ? { lossSum: tf.scalar(2), tokenCount: 1, grads: { w: tf.tensor1d(firstGradient) } }
      : { lossSum: tf.scalar(3), tokenCount: 3, grads: { w: tf.tensor1d([0, 6]) } };
}

describe('runOptimizerStep', () => {
  it('weights micro-batches by tokens', () => {
    const before = tf.memory().numTensors;
    const optimizer = new RecordingOptimizer();

    const result = runOptimizerStep({
      batches: [batchOf(1), batchOf(3)],
      computeGradients: microBatches(),
      optimizer: optimizer as unknown as NestedAdam,
      learningRate: 0.01,
      maxGradNorm: 0,
    });

    // loss = (2 + 3) / (1 + 3) = 1.25, not the mean of the per-batch means (2 + 1) / 2 = 1.5.
    expect(result.loss).toBe(1.25);
    expect(result.tokens).toBe(4);
    // gradient = ([2, 0] + [0, 6]) / 4 = [0.5, 1.5]; its norm is sqrt(0.25 + 2.25) = sqrt(2.5).
    expect(result.gradNorm).toBeCloseTo(Math.sqrt(2.5), 6);
    expect(result.applied).toBe(true);
    expect(result.clipped).toBe(false);
    expect(optimizer.calls).toHaveLength(1);
    expect(optimizer.calls[0]?.learningRate).toBe(0.01);
    expect(optimizer.calls[0]?.gradients.w).toEqual([0.5, 1.5]);
    expect(tf.memory().numTensors).toBe(before);
  });

  it('clips to the maximum norm', () => {
    const optimizer = new RecordingOptimizer();
    const result = runOptimizerStep({
      batches: [batchOf(1), batchOf(3)],
      computeGradients: microBatches(),
      optimizer: optimizer as unknown as NestedAdam,
      learningRate: 0.01,
      maxGradNorm: 1,
    });

    // [0.5, 1.5] * 1 / sqrt(2.5) = [0.316228, 0.948683], a vector of norm 1.
    expect(result.clipped).toBe(true);
    const [first, second] = optimizer.calls[0]?.gradients.w ?? [];
    expect(first).toBeCloseTo(0.5 / Math.sqrt(2.5), 6);
    expect(second).toBeCloseTo(1.5 / Math.sqrt(2.5), 6);
  });

  it('norm below the maximum is unchanged', () => {
    const optimizer = new RecordingOptimizer();
    const result = runOptimizerStep({
      batches: [batchOf(1), batchOf(3)],
      computeGradients: microBatches(),
      optimizer: optimizer as unknown as NestedAdam,
      learningRate: 0.01,
      maxGradNorm: 2,
    });
    expect(result.clipped).toBe(false);
    expect(optimizer.calls[0]?.gradients.w).toEqual([0.5, 1.5]);
  });

  it('non-finite gradient skips the optimizer', () => {
    const before = tf.memory().numTensors;
    const optimizer = new RecordingOptimizer();

    const result = runOptimizerStep({
      batches: [batchOf(1), batchOf(3)],
      computeGradients: microBatches([Number.NaN, 0]),
      optimizer: optimizer as unknown as NestedAdam,
      learningRate: 0.01,
      maxGradNorm: 1,
    });

    expect(result.applied).toBe(false);
    expect(result.gradNorm).toBeNaN();
    expect(result.loss).toBe(1.25);
    expect(optimizer.calls).toHaveLength(0);
    expect(optimizer.learningRate).toBe(0);
    expect(tf.memory().numTensors).toBe(before);
  });

  it('failing micro-batch leaves no tensors', () => {
    const before = tf.memory().numTensors;
    const first = microBatches();
    expect(() =>
      runOptimizerStep({
        batches: [batchOf(1), batchOf(3)],
        computeGradients: (batch, index) => {
          if (index === 1) {
            throw new Error('out of memory');
          }
          return first(batch, index);
        },
        optimizer: new RecordingOptimizer() as unknown as NestedAdam,
        learningRate: 0.01,
        maxGradNorm: 1,
      }),
    ).toThrow('out of memory');
    expect(tf.memory().numTensors).toBe(before);
  });
});
