/**
 * Choice of the next token from a row of logits: greedy, or sampled after temperature, top-k and
 * top-p filtering, in that order (the order of the `transformers` logits warpers).
 */
import type { SeededRandom } from './random.js';

/** Sampling settings of {@link sampleToken}. */
export interface SamplingOptions {
  /** Softmax temperature. 0 picks the most likely token. */
  temperature: number;
  /** Keep only the `topK` most likely tokens, and the tokens tied with the k-th. 0 keeps all. */
  topK: number;
  /** Keep the smallest set of most likely tokens whose probabilities sum to at least `topP`. 1 keeps all. */
  topP: number;
}

/** Returns the index of the largest value, the first one on ties. */
export function argMax(values: ArrayLike<number>): number {
  let best = 0;
  let bestValue = -Infinity;
  for (let i = 0; i < values.length; i++) {
    const value = values[i] as number;
    if (value > bestValue) {
      bestValue = value;
      best = i;
    }
  }
  return best;
}

/** Picks the next token from one row of logits. */
export function sampleToken(logits: ArrayLike<number>, options: SamplingOptions, random: SeededRandom): number {
  if (options.temperature === 0) {
    return argMax(logits);
  }
  if (options.topK === 0 && options.topP >= 1) {
    return sampleUnfiltered(logits, options.temperature, random);
  }

  // Candidates sorted by logit, highest first, and by token id among equal logits.
  const order = Array.from({ length: logits.length }, (_, i) => i);
  order.sort((a, b) => (logits[b] as number) - (logits[a] as number) || a - b);

  let count = order.length;
  if (options.topK > 0 && options.topK < count) {
    const threshold = logits[order[options.topK - 1] as number] as number;
    count = options.topK;
    while (count < order.length && logits[order[count] as number] === threshold) {
      count++;
    }
  }

  const maxLogit = logits[order[0] as number] as number;
  const weights = new Float64Array(count);
  let total = 0;
  for (let i = 0; i < count; i++) {
    const weight = Math.exp(((logits[order[i] as number] as number) - maxLogit) / options.temperature);
    weights[i] = weight;
    total += weight;
  }

  if (options.topP < 1) {
    // Keep tokens until the cumulative probability reaches topP, the token that crosses it included.
    let cumulative = 0;
    let nucleusSize = 0;
    while (nucleusSize < count) {
      cumulative += (weights[nucleusSize] as number) / total;
      nucleusSize++;
      if (cumulative >= options.topP) {
        break;
      }
    }
    count = nucleusSize;
    total = 0;
    for (let i = 0; i < count; i++) {
      total += weights[i] as number;
    }
  }

  let target = random.nextFloat() * total;
  for (let i = 0; i < count; i++) {
    target -= weights[i] as number;
    if (target < 0) {
      return order[i] as number;
    }
  }
  return order[count - 1] as number;
}

/** Samples from the whole softmax in token-id order, which needs no sort over the vocabulary. */
function sampleUnfiltered(logits: ArrayLike<number>, temperature: number, random: SeededRandom): number {
  const maxLogit = logits[argMax(logits)] as number;
  const weights = new Float64Array(logits.length);
  let total = 0;
  for (let i = 0; i < logits.length; i++) {
    const weight = Math.exp(((logits[i] as number) - maxLogit) / temperature);
    weights[i] = weight;
    total += weight;
  }

  // Rounding can leave target >= 0 after the last token; the last token with a weight is then chosen.
  let target = random.nextFloat() * total;
  let lastWeighted = 0;
  for (let i = 0; i < weights.length; i++) {
    const weight = weights[i] as number;
    target -= weight;
    if (target < 0) {
      return i;
    }
    if (weight > 0) {
      lastWeighted = i;
    }
  }
  return lastWeighted;
}
