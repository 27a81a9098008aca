/**
 * Hand-worked checks of the pieces of the decoder: the masked cross-entropy, rotary frequencies,
 * token sampling and the seeded generator.
 */
import * as tf from '@tensorflow/tfjs';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import { initBackend } from '../src/backend/index.js';
import { ConfigError, ShapeError } from '../src/errors.js';
import { maskedCrossEntropy, rotaryInverseFrequencies, type ModelConfig } from '../src/model/index.js';
import { SeededRandom } from '../src/model/random.js';
import { argMax, sampleToken } from '../src/model/sampling.js';

// Every test must leave the number of live tensors as it found it.
let tensorsAtStart = 0;
beforeEach(() => {
  tensorsAtStart = tf.memory().numTensors;
});
afterEach(() => {
  expect(tf.memory().numTensors).toBe(tensorsAtStart);
});

describe.each(['cpu', 'wasm'] as const)('maskedCrossEntropy on %s', (backend) => {
  // Row 0: logits [0, ln 2, ln 3], softmax [1/6, 2/6, 3/6], label 2, loss -ln(1/2) = ln 2.
  // Row 1: equal logits, softmax [1/3, 1/3, 1/3], label 0, loss ln 3.
  // Row 2: masked out; its label -100 is ignored.
  // Sum = ln 2 + ln 3 = ln 6 = 1.791759; tokenCount = 2.
  const logitsValues = [[[0, Math.log(2), Math.log(3)], [0.5, 0.5, 0.5], [5, -5, 0]]];
  const labelValues = [[2, 0, -100]];
  const maskValues = [[1, 1, 0]];

  it('sums the counted token losses', async () => {
    await initBackend({ backend });
    const before = tf.memory().numTensors;
    const logits = tf.tensor3d(logitsValues);
    const labels = tf.tensor2d(labelValues, undefined, 'int32');
    const mask = tf.tensor2d(maskValues);

    const result = maskedCrossEntropy(logits, labels, mask);

    expect(result.tokenCount).toBe(2);
    expect(result.sum.dataSync()[0]).toBeCloseTo(Math.log(6), 5);
    tf.dispose([logits, labels, mask, result.sum]);
    expect(tf.memory().numTensors).toBe(before);
  });

  it('has gradient softmax minus one-hot', async () => {
    await initBackend({ backend });
    const labels = tf.tensor2d(labelValues, undefined, 'int32');
    const mask = tf.tensor2d(maskValues);
    const logits = tf.tensor3d(logitsValues);
    const gradient = tf.grad((x: tf.Tensor) => maskedCrossEntropy(x as tf.Tensor3D, labels, mask).sum)(logits);

    // Row 0: [1/6, 2/6, 3/6] - [0, 0, 1] = [1/6, 1/3, -1/2]; row 1: [1/3 - 1, 1/3, 1/3]; row 2: masked, 0.
    const expected = [1 / 6, 1 / 3, -1 / 2, -2 / 3, 1 / 3, 1 / 3, 0, 0, 0];
    Array.from(gradient.dataSync()).forEach((value, i) => expect(value).toBeCloseTo(expected[i] as number, 6));
    tf.dispose([labels, mask, logits, gradient]);
  });

  it('rejects a counted label outside the vocabulary', async () => {
    await initBackend({ backend });
    const logits = tf.tensor3d(logitsValues);
    const labels = tf.tensor2d([[2, 3, 0]], undefined, 'int32');
    const mask = tf.tensor2d(maskValues);

    expect(() => maskedCrossEntropy(logits, labels, mask)).toThrow(ShapeError);
    expect(() => maskedCrossEntropy(logits, labels, mask)).toThrow(/Label 3 at row 0, position 1/);
    tf.dispose([logits, labels, mask]);
  });
});

describe('rotaryInverseFrequencies', () => {
  const base: ModelConfig = {
    modelType: 'llama',
    hiddenSize: 32,
    intermediateSize: 64,
    numHiddenLayers: 1,
    numAttentionHeads: 4,
    numKeyValueHeads: 4,
    headDim: 8,
    rmsNormEps: 1e-6,
    ropeTheta: 10000,
    ropeScaling: null,
    vocabSize: 10,
    tieWordEmbeddings: false,
    attentionBias: false,
    mlpBias: false,
    torchDtype: undefined,
    maxPositionEmbeddings: undefined,
    bosTokenId: undefined,
    eosTokenId: undefined,
  };

  it('follows theta^(-2j/d)', () => {
    // 10000^(-0/8), 10000^(-2/8), 10000^(-4/8), 10000^(-6/8) = 1, 0.1, 0.01, 0.001.
    const expected = [1, 0.1, 0.01, 0.001];
    Array.from(rotaryInverseFrequencies(base)).forEach((value, i) => expect(value).toBeCloseTo(expected[i] as number, 12));
  });

  it('divides by the linear factor', () => {
    const scaled = rotaryInverseFrequencies({ ...base, ropeScaling: { type: 'linear', factor: 4 } });
    const expected = [0.25, 0.025, 0.0025, 0.00025];
    Array.from(scaled).forEach((value, i) => expect(value).toBeCloseTo(expected[i] as number, 12));
  });

  it('applies the llama3 bands', () => {
    const scaled = rotaryInverseFrequencies({
      ...base,
      ropeScaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 16 },
    });
    // Wavelengths 2*pi/f: 6.283, 62.83, 628.3, 6283. Band edges: 16 / 4 = 4 and 16 / 1 = 16.
    // j = 0 lies between them: smooth = (16 / 6.283185 - 1) / (4 - 1) = 0.515493, and
    // f = (1 - smooth) * 1 / 8 + smooth * 1 = 0.060563 + 0.515493 = 0.576056.
    // j = 1..3 lie above 16 and are divided by 8.
    const smooth = (16 / (2 * Math.PI) - 1) / 3;
    const expected = [(1 - smooth) / 8 + smooth, 0.0125, 0.00125, 0.000125];
    Array.from(scaled).forEach((value, i) => expect(value).toBeCloseTo(expected[i] as number, 12));
    expect(scaled[0]).toBeCloseTo(0.576056, 6);
  });

  it('rejects unsupported scaling types', () => {
    const call = (): Float64Array => rotaryInverseFrequencies({ ...base, ropeScaling: { rope_type: 'yarn', factor: 4 } });
    expect(call).toThrow(ConfigError);
    expect(call).toThrow(/Unsupported rope_scaling type "yarn"/);
  });

  it('rejects a scaling without its factor', () => {
    expect(() => rotaryInverseFrequencies({ ...base, ropeScaling: { type: 'linear' } })).toThrow(/numeric "factor"/);
  });
});

describe('sampleToken', () => {
  // Probabilities 0.1, 0.2, 0.3, 0.4 at temperature 1.
  const logits = Float32Array.from([1, 2, 3, 4].map(Math.log));

  function frequencies(options: { temperature: number; topK: number; topP: number }, draws: number): number[] {
    const random = new SeededRandom(123);
    const counts = [0, 0, 0, 0];
    for (let i = 0; i < draws; i++) {
      const token = sampleToken(logits, options, random);
      counts[token] = (counts[token] as number) + 1;
    }
    return counts.map((count) => count / draws);
  }

  it('picks the first maximum greedily', () => {
    expect(argMax([1, 5, 5, 2])).toBe(1);
    expect(sampleToken(logits, { temperature: 0, topK: 0, topP: 1 }, new SeededRandom(0))).toBe(3);
  });

  it('samples in proportion to the probabilities', () => {
    // 20000 draws: the standard deviation of each frequency is at most sqrt(0.25 / 20000) = 0.0035.
    const observed = frequencies({ temperature: 1, topK: 0, topP: 1 }, 20000);
    [0.1, 0.2, 0.3, 0.4].forEach((p, i) => expect(Math.abs((observed[i] as number) - p)).toBeLessThan(0.015));
  });

  it('keeps the k most likely tokens', () => {
    // Tokens 3 and 2 remain, renormalised: 0.4 / 0.7 = 0.571 and 0.3 / 0.7 = 0.429.
    const observed = frequencies({ temperature: 1, topK: 2, topP: 1 }, 20000);
    expect(observed[0]).toBe(0);
    expect(observed[1]).toBe(0);
    expect(Math.abs((observed[3] as number) - 4 / 7)).toBeLessThan(0.015);
  });

  it('keeps the nucleus that reaches top-p', () => {
    // Sorted: 0.4 (cumulative 0.4 < 0.5), then 0.3 (0.7 >= 0.5): tokens 3 and 2 remain.
    const observed = frequencies({ temperature: 1, topK: 0, topP: 0.5 }, 20000);
    expect(observed[0]).toBe(0);
    expect(observed[1]).toBe(0);
    expect(Math.abs((observed[3] as number) - 4 / 7)).toBeLessThan(0.015);
  });

  it('sharpens with a low temperature', () => {
    // Temperature 0.5 squares the odds: weights 1, 4, 9, 16 over 30.
    const observed = frequencies({ temperature: 0.5, topK: 0, topP: 1 }, 20000);
    [1, 4, 9, 16].forEach((weight, i) => expect(Math.abs((observed[i] as number) - weight / 30)).toBeLessThan(0.015));
  });

  it('keeps tokens tied with the k-th', () => {
    const tied = Float32Array.from([0, 1, 1, 0]);
    const random = new SeededRandom(9);
    const seen = new Set<number>();
    for (let i = 0; i < 200; i++) {
      seen.add(sampleToken(tied, { temperature: 1, topK: 1, topP: 1 }, random));
    }
    expect([...seen].sort()).toEqual([1, 2]);
  });
});

describe('SeededRandom', () => {
  it('repeats a sequence for a seed', () => {
    const first = new SeededRandom(42);
    const second = new SeededRandom(42);
    const other = new SeededRandom(43);
    const a = Array.from({ length: 5 }, () => first.nextUint32());
    const b = Array.from({ length: 5 }, () => second.nextUint32());
    const c = Array.from({ length: 5 }, () => other.nextUint32());

    expect(a).toEqual(b);
    expect(a).not.toEqual(c);
  });

  it('draws floats in [0, 1) with mean 1/2', () => {
    const random = new SeededRandom(1);
    const values = Array.from({ length: 10000 }, () => random.nextFloat());
    const mean = values.reduce((sum, value) => sum + value, 0) / values.length;

    expect(Math.min(...values)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...values)).toBeLessThan(1);
    // The standard deviation of the mean of 10000 uniforms is sqrt(1/12 / 10000) = 0.0029.
    expect(Math.abs(mean - 0.5)).toBeLessThan(0.01);
  });
});
