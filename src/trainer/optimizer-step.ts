/**
 * One optimizer step of the trainer: loss and gradients over the micro-batches of an accumulation
 * window, token-weighted averaging, global-norm clipping, and one `applyGradients` call.
 *
 * The arithmetic, for micro-batches i with loss sums L_i, target-token counts n_i and gradients
 * G_i of L_i (gradients of sums, not means):
 *
 *   loss     = sum_i L_i / N,  with N = sum_i n_i
 *   gradient = sum_i G_i / N   (the gradient of `loss`)
 *   gradNorm = ||gradient||_2 over all LoRA parameters together
 *   applied  = gradient * min(1, maxGradNorm / gradNorm)   (no clipping when maxGradNorm is 0)
 *
 * so a micro-batch with 1 target token and one with 3 weigh 1:3, as if they were one batch.
 */
import * as tf from '@tensorflow/tfjs';

import type { Batch } from '../data/index.js';
import { ArgumentError } from '../errors.js';
import type { NestedAdam } from '../optimizer/index.js';

/** Loss sum, target-token count and gradients of the LoRA parameters for one micro-batch. */
export interface MicroBatchGradients {
  /** Summed loss over the batch's target tokens. The step disposes it. */
  lossSum: tf.Scalar;
  tokenCount: number;
  /** Gradient of `lossSum` by LoRA parameter name. The step disposes them. */
  grads: Record<string, tf.Tensor>;
}

/** Computes loss and gradients of one micro-batch; the trainer wraps the model's `lossAndGradients`. */
export type ComputeGradients = (batch: Batch, microBatchIndex: number) => MicroBatchGradients;

/** Options of {@link runOptimizerStep}. */
export interface OptimizerStepOptions {
  /** The micro-batches of the accumulation window. */
  batches: readonly Batch[];
  computeGradients: ComputeGradients;
  optimizer: NestedAdam;
  /** Learning rate to set on the optimizer before it steps. */
  learningRate: number;
  /** Maximum global gradient norm; 0 turns clipping off. */
  maxGradNorm: number;
}

/** Outcome of one step. */
export interface OptimizerStepResult {
  /** Token-weighted mean loss over the window. */
  loss: number;
  /** Global L2 norm of the averaged gradient before clipping. */
  gradNorm: number;
  /** Target tokens over the window. */
  tokens: number;
  /** False when the loss or the gradient norm was not finite; the optimizer was then not called. */
  applied: boolean;
  /** True when clipping scaled the gradient down. */
  clipped: boolean;
}

/**
 * Runs one optimizer step. A non-finite loss or gradient norm never reaches the optimizer: its
 * weights, moments, accumulators and step counter stay as they were. Leaves no tensors behind.
 */
export function runOptimizerStep(options: OptimizerStepOptions): OptimizerStepResult {
  const { batches, computeGradients, optimizer, learningRate, maxGradNorm } = options;

  // 1) Sum loss sums and gradients over the micro-batches of the window.
  const { lossSum, gradSum, tokens } = accumulateMicroBatches(batches, computeGradients);

  try {
    // 2) Read the loss and the squared norm of the summed gradient with one device-to-host copy.
    const [lossSumValue, squaredNormOfSum] = readLossAndSquaredNorm(lossSum, gradSum);
    const loss = lossSumValue / tokens;
    const gradNorm = Math.sqrt(squaredNormOfSum) / tokens;
    if (!Number.isFinite(loss) || !Number.isFinite(gradNorm)) {
      return { loss, gradNorm, tokens, applied: false, clipped: false };
    }

    // 3) Average over target tokens and clip, as one multiplication per parameter.
    const clipped = maxGradNorm > 0 && gradNorm > maxGradNorm;
    const factor = (clipped ? maxGradNorm / gradNorm : 1) / tokens;

    // 4) One optimizer step at the scheduled learning rate.
    optimizer.learningRate = learningRate;
    tf.tidy(() => {
      const scaled: tf.NamedTensorMap = {};
      for (const [name, gradient] of Object.entries(gradSum)) {
        scaled[name] = tf.mul(gradient, factor);
      }
      optimizer.applyGradients(scaled);
    });
    return { loss, gradNorm, tokens, applied: true, clipped };
  } finally {
    tf.dispose([lossSum, ...Object.values(gradSum)]);
  }
}

function accumulateMicroBatches(
  batches: readonly Batch[],
  computeGradients: ComputeGradients,
): { lossSum: tf.Scalar; gradSum: Record<string, tf.Tensor>; tokens: number } {
  let lossSum: tf.Scalar | undefined;
  let gradSum: Record<string, tf.Tensor> = {};
  let tokens = 0;

  try {
    batches.forEach((batch, index) => {
      const part = computeGradients(batch, index);
      tokens += part.tokenCount;
      if (lossSum === undefined) {
        lossSum = part.lossSum;
        gradSum = part.grads;
        return;
      }

      const previousLoss = lossSum;
      lossSum = tf.add(previousLoss, part.lossSum) as tf.Scalar;
      tf.dispose([previousLoss, part.lossSum]);
      for (const [name, gradient] of Object.entries(part.grads)) {
        const previous = gradSum[name];
        gradSum[name] = previous === undefined ? gradient : tf.add(previous, gradient);
        if (previous !== undefined) {
          tf.dispose([previous, gradient]);
        }
      }
    });
  } catch (error) {
    tf.dispose([...(lossSum === undefined ? [] : [lossSum]), ...Object.values(gradSum)]);
    throw error;
  }

  if (lossSum === undefined) {
    throw new ArgumentError('TRAINER_NO_MICRO_BATCHES', 'runOptimizerStep needs at least one micro-batch; pass a non-empty batches list.');
  }
  return { lossSum, gradSum, tokens };
}

function readLossAndSquaredNorm(lossSum: tf.Scalar, gradSum: Record<string, tf.Tensor>): [number, number] {
  const values = tf.tidy(() => {
    const squares = Object.values(gradSum).map((gradient) => tf.sum(tf.square(gradient)));
    const squaredNorm = squares.length === 0 ? tf.scalar(0) : tf.addN(squares);
    return tf.stack([lossSum, squaredNorm]);
  });
  const [loss, squaredNorm] = values.dataSync();
  values.dispose();
  return [loss as number, squaredNorm as number];
}
