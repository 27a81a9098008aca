/**
 * Rotary position embeddings in the split-halves (`rotate_half`) convention of Hugging Face Llama
 * and Qwen2: dimension `j` of a head is rotated together with dimension `j + headDim / 2` by the
 * angle `position * invFreq[j]`.
 */
import * as tf from '@tensorflow/tfjs';

import { ConfigError } from '../errors.js';
import type { ModelConfig } from './types.js';

/**
 * Computes the inverse frequencies `1 / theta^(2j / headDim)` for `j < headDim / 2`, with the
 * `rope_scaling` types `linear` and `llama3` applied as `transformers` 4.44 `modeling_rope_utils.py`
 * does. Other scaling types raise a {@link ConfigError}.
 *
 * The values are computed in float64; `transformers` computes them in float32, which differs by
 * about 1e-7 relative.
 */
export function rotaryInverseFrequencies(config: ModelConfig): Float64Array {
  const dim = config.headDim;
  const half = dim / 2;
  const inverse = new Float64Array(half);
  for (let j = 0; j < half; j++) {
    inverse[j] = 1 / Math.pow(config.ropeTheta, (2 * j) / dim);
  }

  const scaling = config.ropeScaling;
  if (scaling === null) {
    return inverse;
  }
  const type = scaling['rope_type'] ?? scaling['type'] ?? 'default';

  if (type === 'default') {
    return inverse;
  }
  if (type === 'linear') {
    const factor = numberField(scaling, 'factor', type);
    return inverse.map((value) => value / factor);
  }
  if (type === 'llama3') {
    return llama3Frequencies(inverse, scaling);
  }

  throw new ConfigError(
    'MODEL_ROPE_SCALING_UNSUPPORTED',
    `Unsupported rope_scaling type "${String(type)}". Supported types: default, linear, llama3. ` +
      'Use a checkpoint without this rope_scaling, or remove rope_scaling from config.json when the sequences stay within the original context length.',
    { details: { ropeScaling: scaling } },
  );
}

function llama3Frequencies(inverse: Float64Array, scaling: Record<string, unknown>): Float64Array {
  const type = 'llama3';
  const factor = numberField(scaling, 'factor', type);
  const lowFreqFactor = numberField(scaling, 'low_freq_factor', type);
  const highFreqFactor = numberField(scaling, 'high_freq_factor', type);
  const originalContext = numberField(scaling, 'original_max_position_embeddings', type);

  const lowFreqWavelength = originalContext / lowFreqFactor;
  const highFreqWavelength = originalContext / highFreqFactor;

  return inverse.map((value) => {
    const wavelength = (2 * Math.PI) / value;
    // Short wavelengths (high frequencies) stay as they are, long ones are divided by the factor,
    // and the band in between interpolates smoothly between the two.
    if (wavelength < highFreqWavelength) {
      return value;
    }
    if (wavelength > lowFreqWavelength) {
      return value / factor;
    }
    const smooth = (originalContext / wavelength - lowFreqFactor) / (highFreqFactor - lowFreqFactor);
    return (1 - smooth) * (value / factor) + smooth * value;
  });
}

function numberField(scaling: Record<string, unknown>, field: string, type: string): number {
  const value = scaling[field];
  if (typeof value !== 'number' || !Number.isFinite(value)) {
    throw new ConfigError(
      'MODEL_ROPE_SCALING_INVALID',
      `rope_scaling of type "${type}" needs a numeric "${field}", but it is ${JSON.stringify(value)}. Fix config.json.`,
      { details: { ropeScaling: scaling, field } },
    );
  }
  return value;
}

/**
 * Cosine and sine tables of the rotary embedding, `[positions, headDim]` each, with the angle of
 * dimension `j` repeated at `j + headDim / 2` as `transformers` lays them out. The tables grow on demand
 * and are kept until {@link RotaryTables.dispose}.
 */
export class RotaryTables {
  private readonly inverseFrequencies: Float64Array;
  private readonly headDim: number;
  private cosTable: tf.Tensor2D | null = null;
  private sinTable: tf.Tensor2D | null = null;
  private readonly rotation: tf.Tensor2D;

  /**
   * Builds the tables for the first `initialLength` positions. Growing them later replaces two tensors
   * by two others, so the number of live tensors stays the same across forward passes.
   */
  constructor(config: ModelConfig, initialLength = 256) {
    this.inverseFrequencies = rotaryInverseFrequencies(config);
    this.headDim = config.headDim;
    this.rotation = tf.keep(rotateHalfMatrix(config.headDim));
    this.grow(initialLength);
  }

  /** Number of positions the tables cover now. */
  get length(): number {
    return this.cosTable?.shape[0] ?? 0;
  }

  /** Returns the `[cos, sin]` tables, grown to cover positions `0 .. count - 1`. */
  tables(count: number): [tf.Tensor2D, tf.Tensor2D] {
    if (this.cosTable === null || this.sinTable === null || this.cosTable.shape[0] < count) {
      this.grow(count);
    }
    return [this.cosTable as tf.Tensor2D, this.sinTable as tf.Tensor2D];
  }

  /** The `[headDim, headDim]` matrix `R` with `x @ R = rotate_half(x)`, built by {@link rotateHalfMatrix}. */
  get rotateHalf(): tf.Tensor2D {
    return this.rotation;
  }

  dispose(): void {
    this.cosTable?.dispose();
    this.sinTable?.dispose();
    this.rotation.dispose();
    this.cosTable = null;
    this.sinTable = null;
  }

  private grow(count: number): void {
    // Round up to a power of two so that generation does not rebuild the tables at every step.
    let size = Math.max(16, this.length);
    while (size < count) {
      size *= 2;
    }

    const dim = this.headDim;
    const half = dim / 2;
    const cos = new Float32Array(size * dim);
    const sin = new Float32Array(size * dim);
    for (let position = 0; position < size; position++) {
      for (let j = 0; j < half; j++) {
        const angle = position * (this.inverseFrequencies[j] as number);
        const c = Math.cos(angle);
        const s = Math.sin(angle);
        cos[position * dim + j] = c;
        cos[position * dim + j + half] = c;
        sin[position * dim + j] = s;
        sin[position * dim + j + half] = s;
      }
    }

    this.cosTable?.dispose();
    this.sinTable?.dispose();
    // The tables may grow inside a forward pass's tf.tidy, which must not dispose them.
    this.cosTable = tf.keep(tf.tensor2d(cos, [size, dim]));
    this.sinTable = tf.keep(tf.tensor2d(sin, [size, dim]));
  }
}

/**
 * Builds the `[dim, dim]` matrix `R` with `x @ R = rotate_half(x) = cat(-x2, x1)`. Each column has one
 * entry of +1 or -1, so the product is exact. On the wasm backend a matrix product with a constant
 * right operand is much faster than slicing the last axis into halves.
 */
export function rotateHalfMatrix(dim: number): tf.Tensor2D {
  const half = dim / 2;
  const values = new Float32Array(dim * dim);
  for (let j = 0; j < half; j++) {
    // Output column j takes -x[j + half], and output column j + half takes x[j].
    values[(j + half) * dim + j] = -1;
    values[j * dim + j + half] = 1;
  }
  return tf.tensor2d(values, [dim, dim]);
}
