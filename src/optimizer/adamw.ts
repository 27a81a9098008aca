/**
 * One AdamW step on tensors, as pure functions: tensors in, new tensors out, no state.
 *
 * The update follows `torch.optim.AdamW` (PyTorch 1.13, single-tensor path) in the same order:
 * decoupled weight decay, the two moment estimates, then the bias-corrected step.
 */
import * as tf from '@tensorflow/tfjs';

/** The scalars of one AdamW step, computed in float64 before they meet the float32 tensors. */
export interface AdamWCoefficients {
  beta1: number;
  beta2: number;
  epsilon: number;
  /** `learningRate / (1 - beta1^t)`, the step size after first-moment bias correction. */
  stepSize: number;
  /** `sqrt(1 - beta2^t)`, the square root of the second-moment bias correction. */
  secondMomentCorrectionSqrt: number;
  /** `1 - learningRate * weightDecay`, the decoupled weight-decay factor. */
  decayFactor: number;
}

/** Inputs of {@link adamwCoefficients}. */
export interface AdamWHyperparameters {
  learningRate: number;
  beta1: number;
  beta2: number;
  epsilon: number;
  weightDecay: number;
  /** The update count t of the parameters being updated, from 1 at their first update. */
  updateCount: number;
}

/** The tensors {@link adamwStep} returns. */
export interface AdamWStepResult {
  weight: tf.Tensor;
  firstMoment: tf.Tensor;
  secondMoment: tf.Tensor;
}

/** Computes the scalars of the AdamW step with update count `updateCount`. */
export function adamwCoefficients(hyperparameters: AdamWHyperparameters): AdamWCoefficients {
  const { learningRate, beta1, beta2, epsilon, weightDecay, updateCount } = hyperparameters;
  return {
    beta1,
    beta2,
    epsilon,
    stepSize: learningRate / (1 - beta1 ** updateCount),
    secondMomentCorrectionSqrt: Math.sqrt(1 - beta2 ** updateCount),
    decayFactor: 1 - learningRate * weightDecay,
  };
}

/**
 * Computes one AdamW step and returns the new weight and moments; the inputs are left unchanged.
 *
 * All four tensors have the same shape. Each paragraph runs in its own `tf.tidy`, so the
 * temporaries of one paragraph are freed before the next one allocates, which keeps the peak memory
 * of a step on a large flat tensor low.
 */
export function adamwStep(
  weight: tf.Tensor,
  gradient: tf.Tensor,
  firstMoment: tf.Tensor,
  secondMoment: tf.Tensor,
  coefficients: AdamWCoefficients,
): AdamWStepResult {
  const { beta1, beta2, epsilon, stepSize, secondMomentCorrectionSqrt, decayFactor } = coefficients;

  // Decoupled weight decay: w <- w * (1 - lr * wd). A factor of exactly 1 skips the multiplication.
  const decayed = decayFactor === 1 ? weight : tf.mul(weight, decayFactor);

  // First moment: m <- beta1 * m + (1 - beta1) * g.
  const newFirstMoment = tf.tidy(() => tf.add(tf.mul(firstMoment, beta1), tf.mul(gradient, 1 - beta1)));

  // Second moment: v <- beta2 * v + (1 - beta2) * g^2.
  const newSecondMoment = tf.tidy(() => tf.add(tf.mul(secondMoment, beta2), tf.mul(tf.square(gradient), 1 - beta2)));

  // Bias-corrected step: w <- w - (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps).
  const newWeight = tf.tidy(() => {
    const denominator = tf.add(tf.div(tf.sqrt(newSecondMoment), secondMomentCorrectionSqrt), epsilon);
    return tf.sub(decayed, tf.mul(tf.div(newFirstMoment, denominator), stepSize));
  });

  if (decayed !== weight) {
    decayed.dispose();
  }
  return { weight: newWeight, firstMoment: newFirstMoment, secondMoment: newSecondMoment };
}
