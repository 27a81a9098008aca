/**
 * Token-level cross-entropy with a loss mask.
 */
import * as tf from '@tensorflow/tfjs';

import { ShapeError } from '../errors.js';

/** Result of {@link maskedCrossEntropy}. */
export interface MaskedCrossEntropy {
  /** Sum over counted positions of `-log softmax(logits)[label]`, weighted by the loss mask. */
  sum: tf.Scalar;
  /** Sum of the loss mask, which is the number of counted positions for a 0/1 mask. */
  tokenCount: number;
}

/**
 * Computes the summed cross-entropy of `logits` (`[batch, time, vocab]`) against `labels`
 * (`[batch, time]`, int32) where `lossMask` (`[batch, time]`) is non-zero. Labels are already the
 * shifted targets: position `t` predicts `labels[t]`. Labels at positions whose mask is 0 are ignored
 * and may hold any value (for example -100 or a padding id).
 *
 * The caller owns the returned scalar. To average over several micro-batches, divide the sum of
 * their sums by the sum of their token counts.
 *
 * The gradient with respect to `logits` is `(softmax(logits) - onehot(label)) * mask`. The log-sum-exp
 * is computed as `max(logits) - log(max(softmax(logits)))`, which reuses the softmax kernel and cannot
 * underflow because the largest probability is at least `1 / vocab`.
 */
export function maskedCrossEntropy(logits: tf.Tensor3D, labels: tf.Tensor2D, lossMask: tf.Tensor2D): MaskedCrossEntropy {
  const [batch, time, vocab] = logits.shape;
  checkShape('labels', labels.shape, [batch, time]);
  checkShape('lossMask', lossMask.shape, [batch, time]);

  const maskValues = lossMask.dataSync() as Float32Array;
  const labelValues = labels.dataSync();
  const cleanLabels = new Int32Array(batch * time);
  let tokenCount = 0;
  for (let i = 0; i < cleanLabels.length; i++) {
    const weight = maskValues[i] as number;
    if (weight === 0) {
      continue;
    }
    const label = labelValues[i] as number;
    if (!Number.isInteger(label) || label < 0 || label >= vocab) {
      throw new ShapeError(
        'MODEL_LABEL_OUT_OF_RANGE',
        `Label ${label} at row ${Math.floor(i / time)}, position ${i % time} is outside the vocabulary [0, ${vocab - 1}] ` +
          'but its loss mask is not 0. Set the mask to 0 there, or fix the tokenizer/model pairing.',
        { details: { label, row: Math.floor(i / time), position: i % time, vocabSize: vocab } },
      );
    }
    cleanLabels[i] = label;
    tokenCount += weight;
  }

  const sum = tf.tidy(() => {
    const labelTensor = tf.tensor1d(cleanLabels, 'int32');
    const maskColumn = tf.reshape(tf.cast(lossMask, 'float32'), [batch * time, 1]) as tf.Tensor2D;
    const flatLogits = tf.reshape(logits, [batch * time, vocab]) as tf.Tensor2D;
    return crossEntropySum(flatLogits, labelTensor, maskColumn);
  });
  return { sum, tokenCount };
}

/** Sums `mask * (logsumexp(logits) - logits[label])` over rows, with a hand-written gradient. */
function crossEntropySum(logits: tf.Tensor2D, labels: tf.Tensor1D, maskColumn: tf.Tensor2D): tf.Scalar {
  const vocab = logits.shape[1];
  const op = tf.customGrad((input, save) => {
    const probabilities = tf.softmax(logits);
    (save as tf.GradSaveFunc)([probabilities, labels, maskColumn]);
    const logSumExp = tf.sub(tf.max(logits, -1), tf.log(tf.max(probabilities, -1)));
    const rows = tf.range(0, labels.shape[0], 1, 'int32');
    const picked = tf.gatherND(logits, tf.stack([rows, labels], 1));
    const value = tf.sum(tf.mul(tf.sub(logSumExp, picked), tf.reshape(maskColumn, [-1])));
    return {
      value,
      gradFunc: (dy, saved) =>
        tf.tidy(() => {
          const [savedProbabilities, savedLabels, savedMask] = saved as [tf.Tensor2D, tf.Tensor1D, tf.Tensor2D];
          // NOTE: tfjs 4.22's wasm OneHot writes the integer bit pattern into float32 outputs, so the
          // one-hot matrix is built as int32 and cast.
          const target = tf.cast(tf.oneHot(savedLabels, vocab), 'float32');
          return tf.mul(tf.mul(tf.sub(savedProbabilities, target), savedMask), dy);
        }),
    };
  });
  return op(logits) as tf.Scalar;
}

function checkShape(name: string, actual: readonly number[], expected: readonly number[]): void {
  if (actual.length !== expected.length || actual.some((size, i) => size !== expected[i])) {
    throw new ShapeError(
      'MODEL_SHAPE_MISMATCH',
      `${name} has shape [${actual.join(', ')}], but the logits need [${expected.join(', ')}].`,
      { details: { name, actual, expected } },
    );
  }
}
