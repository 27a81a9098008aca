/**
 * The calibration pass of the `parameter_importance` strategy: squared gradients of the LoRA
 * parameters over some training batches, before any weight changes.
 */
import * as tf from '@tensorflow/tfjs';

import type { Batch } from '../data/index.js';
import { ImportanceAccumulator } from '../scheduler/index.js';
import type { ComputeGradients } from './optimizer-step.js';

/** Statistics of a calibration pass. */
export interface CalibrationResult {
  /** Per parameter: the sum over batches of `sum(g^2)`, g being the gradient of the batch's mean loss. */
  statistics: Record<string, { gradSquaredSum: number; count: number }>;
  /** Batches that contributed. */
  batches: number;
  /** Batches left out because a loss or gradient was not finite. */
  skippedBatches: number;
}

/**
 * Accumulates, for each parameter, `sum(g^2)` of the gradient g of each batch's mean loss (its loss
 * sum divided by its target tokens). A batch whose loss or any squared sum is not finite is left
 * out and counted. Leaves no tensors behind.
 */
export function calibrateImportance(batches: readonly Batch[], computeGradients: ComputeGradients): CalibrationResult {
  const accumulator = new ImportanceAccumulator();
  let used = 0;
  let skippedBatches = 0;

  batches.forEach((batch, index) => {
    const { lossSum, tokenCount, grads } = computeGradients(batch, index);
    const names = Object.keys(grads);
    const values = tf.tidy(() => {
      const scale = 1 / tokenCount;
      const squares = names.map((name) => tf.sum(tf.square(tf.mul(grads[name] as tf.Tensor, scale))));
      return tf.stack([tf.mul(lossSum, scale), ...squares]);
    });
    const read = values.dataSync();
    tf.dispose([values, lossSum, ...Object.values(grads)]);

    if (!Array.from(read).every(Number.isFinite)) {
      skippedBatches += 1;
      return;
    }
    names.forEach((name, position) => accumulator.add(name, read[position + 1] as number));
    used += 1;
  });

  return { statistics: accumulator.statistics(), batches: used, skippedBatches };
}
