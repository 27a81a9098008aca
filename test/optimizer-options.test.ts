/** NestedAdam option defaults and the validation of every option at construction. */
import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';

import { initBackend } from '../src/backend/index.js';
import { ArgumentError, NestedLearningError, ShapeError } from '../src/errors.js';
import { NESTED_ADAM_DEFAULTS, NestedAdam, type NestedAdamOptions } from '../src/optimizer/index.js';
import type { TierMap } from '../src/scheduler/types.js';

function constructionError(options: unknown): ArgumentError {
  try {
    new NestedAdam(options as NestedAdamOptions).dispose();
  } catch (error) {
    return error as ArgumentError;
  }
  throw new Error(`expected new NestedAdam(${JSON.stringify(options)}) to throw`);
}

describe('NestedAdam options', () => {
  beforeAll(async () => {
    await initBackend({ backend: 'cpu' });
  });

  it('defaults follow torch.optim.AdamW', () => {
    expect(NESTED_ADAM_DEFAULTS).toEqual({
      learningRate: 1e-3,
      beta1: 0.9,
      beta2: 0.999,
      epsilon: 1e-8,
      weightDecay: 1e-2,
      tierUpdateFrequencies: [1, 2, 4],
      inactiveGradients: 'accumulate',
      unmappedTier: 0,
    });
    const optimizer = new NestedAdam();
    expect(optimizer.getConfig()).toEqual({
      learningRate: 1e-3,
      beta1: 0.9,
      beta2: 0.999,
      epsilon: 1e-8,
      weightDecay: 1e-2,
      tiers: [1, 2, 4].map((frequency) => ({ frequency, learningRateScale: 1, weightDecay: 1e-2 })),
      tierMap: null,
      inactiveGradients: 'accumulate',
      unmappedTier: 0,
    });
    expect(optimizer.step).toBe(0);
    optimizer.dispose();
  });

  const invalid: Array<[string, unknown, string]> = [
    ['learningRate', { learningRate: -1 }, 'Invalid NestedAdam option learningRate: -1. Expected a finite number in [0, Infinity).'],
    ['learningRate NaN', { learningRate: Number.NaN }, 'option learningRate: NaN.'],
    ['learningRate string', { learningRate: '0.1' }, 'option learningRate: "0.1".'],
    ['beta1', { beta1: 1 }, 'Invalid NestedAdam option beta1: 1. Expected a finite number in [0, 1).'],
    ['beta2', { beta2: -0.1 }, 'Invalid NestedAdam option beta2: -0.1. Expected a finite number in [0, 1).'],
    ['epsilon', { epsilon: 0 }, 'Invalid NestedAdam option epsilon: 0. Expected a finite number in (0, Infinity).'],
    ['weightDecay', { weightDecay: -0.01 }, 'Invalid NestedAdam option weightDecay: -0.01. Expected a finite number in [0, Infinity).'],
    ['frequency zero', { tierUpdateFrequencies: [1, 0] }, 'option tierUpdateFrequencies[1]: 0. Expected an integer >= 1.'],
    ['frequency fraction', { tierUpdateFrequencies: [1.5] }, 'option tierUpdateFrequencies[0]: 1.5. Expected an integer >= 1.'],
    ['frequencies empty', { tierUpdateFrequencies: [] }, 'option tierUpdateFrequencies: []. Expected a non-empty array'],
    ['tiers empty', { tiers: [] }, 'option tiers: []. Expected a non-empty array'],
    ['tier frequency', { tiers: [{ frequency: 1 }, { frequency: -2 }] }, 'option tiers[1].frequency: -2. Expected an integer >= 1.'],
    ['tier scale', { tiers: [{ frequency: 1, learningRateScale: -1 }] }, 'option tiers[0].learningRateScale: -1.'],
    ['tier decay', { tiers: [{ frequency: 1, weightDecay: Number.POSITIVE_INFINITY }] }, 'option tiers[0].weightDecay: Infinity.'],
    ['both tier forms', { tiers: [{ frequency: 1 }], tierUpdateFrequencies: [1] }, 'both tierUpdateFrequencies and tiers are set'],
    ['tierMap tier', { tierUpdateFrequencies: [1, 2], tierMap: { a: 2 } }, 'option tierMap["a"]: 2. Expected an integer tier index from 0 to 1.'],
    ['tierMap Map tier', { tierUpdateFrequencies: [1, 2], tierMap: new Map([['b', -1]]) }, 'option tierMap["b"]: -1.'],
    ['tierMap array', { tierMap: [1, 2] }, 'option tierMap: [1, 2]. Expected a TierMap, a Map or a plain object'],
    ['inactiveGradients', { inactiveGradients: 'sum' }, 'option inactiveGradients: "sum". Expected one of accumulate, mean, drop.'],
    ['unmappedTier', { tierUpdateFrequencies: [1, 2], unmappedTier: 2 }, 'option unmappedTier: 2. Expected an integer tier index from 0 to 1.'],
    ['logger', { logger: { info() {} } }, 'option logger: an object. Expected an object with debug, info, warn and error methods.'],
    ['unknown option', { lr: 0.1 }, 'Unknown NestedAdam option "lr".'],
  ];

  it.each(invalid)('rejects invalid %s', (_label, options, message) => {
    const error = constructionError(options);
    expect(error).toBeInstanceOf(ArgumentError);
    expect(NestedLearningError.isInstance(error)).toBe(true);
    expect(error.code).toBe('OPTIMIZER_INVALID_OPTION');
    expect(error.message).toContain(message);
  });

  it('names the field in details', () => {
    const error = constructionError({ beta2: 2 });
    expect(error.details).toEqual({ field: 'beta2', value: 2 });
  });

  it('takes frequencies from a full TierMap', () => {
    const tierMap: TierMap = {
      numTiers: 2,
      frequencies: [1, 3],
      assignments: { 'full/a': 0, 'full/b': 1 },
      tiers: [],
      unassigned: [],
    };
    const optimizer = new NestedAdam({ tierMap });
    expect(optimizer.tierStats().map((stats) => stats.frequency)).toEqual([1, 3]);
    expect(optimizer.tierOf('full/b')).toBe(1);
    optimizer.dispose();

    const error = constructionError({ tierMap, tierUpdateFrequencies: [1, 2] });
    expect(error.message).toContain('its frequencies [1, 3] differ from the optimizer\'s tier frequencies [1, 2]');
  });

  it('rejects a bad learning rate setter value', () => {
    const optimizer = new NestedAdam();
    expect(() => {
      optimizer.learningRate = -0.5;
    }).toThrow('Invalid NestedAdam option learningRate: -0.5.');
    expect(optimizer.learningRate).toBe(1e-3);
    optimizer.dispose();
  });

  it('rejects a bad learning rate function result', () => {
    const before = tf.memory().numTensors;
    const variable = tf.tidy(() => tf.variable(tf.tensor1d([1]), true, 'options/lrfn'));
    const optimizer = new NestedAdam({ learningRate: (step) => (step === 2 ? Number.NaN : 0.1), tierUpdateFrequencies: [1] });
    const gradient = tf.tensor1d([1]);
    optimizer.applyGradients({ 'options/lrfn': gradient });
    const weightAfterOne = variable.dataSync()[0];

    let error: unknown;
    try {
      optimizer.applyGradients({ 'options/lrfn': gradient });
    } catch (caught) {
      error = caught;
    }
    expect((error as ArgumentError).code).toBe('OPTIMIZER_INVALID_OPTION');
    expect((error as Error).message).toContain('the function returned NaN for step 2');
    // The failed step changed nothing.
    expect(optimizer.step).toBe(1);
    expect(variable.dataSync()[0]).toBe(weightAfterOne);

    gradient.dispose();
    optimizer.dispose();
    variable.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });

  it('rejects gradients that do not fit', () => {
    const before = tf.memory().numTensors;
    const variable = tf.tidy(() => tf.variable(tf.zeros([2, 3]), true, 'options/fit'));
    const intVariable = tf.tidy(() => tf.variable(tf.zeros([2], 'int32'), true, 'options/int'));
    const optimizer = new NestedAdam({ tierUpdateFrequencies: [1] });
    const wrongShape = tf.zeros([3, 2]);
    const intGradient = tf.zeros([2], 'int32');

    expect(() => optimizer.applyGradients({ 'options/fit': wrongShape })).toThrow(ShapeError);
    expect(() => optimizer.applyGradients({ 'options/fit': wrongShape })).toThrow(
      'gradient of shape [3,2] for variable "options/fit" of shape [2,3]',
    );
    expect(() => optimizer.applyGradients({ 'options/missing': wrongShape })).toThrow('no tfjs variable has that name');
    expect(() => optimizer.applyGradients({ 'options/int': intGradient })).toThrow('of dtype int32');
    expect(optimizer.step).toBe(0);

    tf.dispose([wrongShape, intGradient]);
    optimizer.dispose();
    tf.dispose([variable, intVariable]);
    expect(tf.memory().numTensors).toBe(before);
  });
});
