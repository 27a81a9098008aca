/**
 * Loss of the model on fixed batches, for validation and for the retain set that measures
 * forgetting.
 */
import * as tf from '@tensorflow/tfjs';

import type { Batch } from '../data/index.js';
import type { CausalLM } from '../model/index.js';

/** Token-weighted mean loss over some batches. */
export interface EvaluationLoss {
  /** Sum of the loss sums divided by the total target tokens; NaN when there are no target tokens. */
  loss: number;
  /** Target tokens over all batches. */
  tokens: number;
}

/**
 * Returns the token-weighted mean loss of `model` over `batches`, without dropout and without
 * gradients. The loss sums stay on the device until the end, so all batches together cost one
 * device-to-host copy of the result. Leaves no tensors behind.
 */
export function evaluateLoss(model: Pick<CausalLM, 'computeLoss'>, batches: readonly Batch[]): EvaluationLoss {
  let tokens = 0;
  let total: tf.Scalar = tf.scalar(0);

  for (const batch of batches) {
    const { lossSum, tokenCount } = model.computeLoss(batch);
    tokens += tokenCount;
    const next = tf.add(total, lossSum) as tf.Scalar;
    tf.dispose([total, lossSum]);
    total = next;
  }

  const sum = total.dataSync()[0] as number;
  total.dispose();
  return { loss: tokens === 0 ? Number.NaN : sum / tokens, tokens };
}
