/**
 * Key/value cache of a decoder, for generation one token at a time.
 */
import * as tf from '@tensorflow/tfjs';

import { ShapeError } from '../errors.js';

/**
 * Keys and values of the positions a {@link CausalLM} has already processed, per layer, with the
 * attention mask of those positions. Pass the same cache to consecutive `forward` calls; each call
 * appends its positions. The cache owns its tensors: call {@link KVCache.dispose} when done.
 */
export class KVCache {
  private readonly keys: (tf.Tensor4D | null)[];
  private readonly values: (tf.Tensor4D | null)[];
  private maskValues: Float32Array = new Float32Array(0);
  private batch: number | null = null;
  private cachedLength = 0;

  constructor(numLayers: number) {
    this.keys = new Array<tf.Tensor4D | null>(numLayers).fill(null);
    this.values = new Array<tf.Tensor4D | null>(numLayers).fill(null);
  }

  /** Number of cached positions per sequence. */
  get length(): number {
    return this.cachedLength;
  }

  /** Number of sequences, or null before the first forward pass. */
  get batchSize(): number | null {
    return this.batch;
  }

  /** Attention mask of the cached positions, `[batchSize, length]` row-major, 1 for real tokens and 0 for padding. */
  get attentionMask(): Float32Array {
    return this.maskValues;
  }

  /** Returns the cached keys and values of a layer, `[batch, kvHeads, length, headDim]` each, or null. */
  layer(index: number): { key: tf.Tensor4D; value: tf.Tensor4D } | null {
    const key = this.keys[index] ?? null;
    const value = this.values[index] ?? null;
    return key === null || value === null ? null : { key, value };
  }

  /**
   * Checks that `batchSize` sequences can be appended. Called by the model before it changes anything.
   * @internal
   */
  checkBatch(batchSize: number): void {
    if (this.batch !== null && this.batch !== batchSize) {
      throw new ShapeError(
        'MODEL_CACHE_BATCH_MISMATCH',
        `The key/value cache holds ${this.batch} sequences, but the input has ${batchSize}. Use a new KVCache for a new batch.`,
        { details: { cached: this.batch, input: batchSize } },
      );
    }
  }

  /**
   * Replaces a layer's keys and values. The cache keeps the new tensors out of any enclosing tf.tidy and
   * disposes the ones they replace.
   * @internal
   */
  setLayer(index: number, key: tf.Tensor4D, value: tf.Tensor4D): void {
    const oldKey = this.keys[index];
    const oldValue = this.values[index];
    this.keys[index] = tf.keep(key);
    this.values[index] = tf.keep(value);
    if (oldKey && oldKey !== key) {
      oldKey.dispose();
    }
    if (oldValue && oldValue !== value) {
      oldValue.dispose();
    }
  }

  /**
   * Records that positions with the given full mask (`[batchSize, newLength]`, covering cached and new
   * positions) are now cached.
   * @internal
   */
  commit(batchSize: number, fullMask: Float32Array, newLength: number): void {
    this.batch = batchSize;
    this.maskValues = fullMask;
    this.cachedLength = newLength;
  }

  /** Disposes every cached tensor and empties the cache. */
  dispose(): void {
    for (let i = 0; i < this.keys.length; i++) {
      this.keys[i]?.dispose();
      this.values[i]?.dispose();
      this.keys[i] = null;
      this.values[i] = null;
    }
    this.maskValues = new Float32Array(0);
    this.batch = null;
    this.cachedLength = 0;
  }
}
