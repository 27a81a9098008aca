import { AssertionError } from 'node:assert';

import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';

import { ArgumentError } from '../src/errors.js';
import {
  assertNoTensorLeaks,
  assertTensorsClose,
  captureWeights,
  checkTensorLeaks,
  compareTensors,
  memorySnapshot,
  weightChanges,
} from '../src/testing/index.js';

beforeAll(async () => {
  await tf.setBackend('cpu');
});

describe('compareTensors', () => {
  it('passes values within tolerance', () => {
    const actual = tf.tensor2d([[1, 2], [3, 4]]);
    // |4.00002 - 4| = 2e-5 <= 1e-8 + 1e-5 * 4.00002 = 4.0e-5, so the default tolerance passes.
    const result = compareTensors(actual, [[1, 2], [3, 4.00002]]);
    expect(result.pass).toBe(true);
    expect(result.mismatchCount).toBe(0);
    expect(result.elementCount).toBe(4);
    expect(result.maxAbsoluteError).toBeCloseTo(2e-5, 9);
    actual.dispose();
  });

  it('reports the worst element', () => {
    const actual = tf.tensor2d([[1, 2.001], [3, 4.5]]);
    // rtol 1e-3, atol 0: [0, 1] has error 0.001 <= 0.002 (passes), [1, 1] has error 0.5 > 0.004.
    const result = compareTensors(actual, [[1, 2], [3, 4]], { rtol: 1e-3, atol: 0 });
    expect(result.pass).toBe(false);
    expect(result.mismatchCount).toBe(1);
    expect(result.worst?.index).toEqual([1, 1]);
    expect(result.worst?.expected).toBe(4);
    expect(result.worst?.allowed).toBeCloseTo(0.004, 12);
    expect(result.maxAbsoluteError).toBeCloseTo(0.5, 6);
    expect(result.maxRelativeError).toBeCloseTo(0.125, 6);
    expect(result.message).toContain('Worst at [1, 1]');
    actual.dispose();
  });

  it('applies the allclose rule at its boundary', () => {
    const actual = tf.tensor1d([1.5]);
    // 1.5 and 1 are exact in float32, so the error is exactly 0.5.
    expect(compareTensors(actual, [1], { rtol: 0, atol: 0.5 }).pass).toBe(true);
    expect(compareTensors(actual, [1], { rtol: 0, atol: 0.4999 }).pass).toBe(false);
    // rtol scales with |expected|: 0.5 <= 0 + 0.25 * 2 passes against expected 2.
    const larger = tf.tensor1d([2.5]);
    expect(compareTensors(larger, [2], { rtol: 0.25, atol: 0 }).pass).toBe(true);
    tf.dispose([actual, larger]);
  });

  it('rejects a different shape', () => {
    const actual = tf.tensor2d([[1, 2], [3, 4]]);
    const result = compareTensors(actual, [1, 2, 3, 4]);
    expect(result.pass).toBe(false);
    expect(result.message).toBe('Shapes differ: actual [2, 2] (4 values), expected shape [4].');
    actual.dispose();
  });

  it('compares typed arrays by element count', () => {
    const actual = tf.tensor2d([[1, 2], [3, 4]]);
    expect(compareTensors(actual, new Float32Array([1, 2, 3, 4])).pass).toBe(true);
    expect(compareTensors(actual, new Float32Array([1, 2, 3])).pass).toBe(false);
    actual.dispose();
  });

  it('compares a number with every element', () => {
    const zeros = tf.zeros([3, 2]);
    expect(compareTensors(zeros, 0).pass).toBe(true);
    const result = compareTensors(zeros, 1);
    expect(result.mismatchCount).toBe(6);
    zeros.dispose();
  });

  it('compares with a tensor', () => {
    const actual = tf.tensor1d([1, 2, 3]);
    const expected = tf.tensor1d([1, 2, 3.5]);
    const result = compareTensors(actual, expected);
    expect(result.pass).toBe(false);
    expect(result.worst?.index).toEqual([2]);
    tf.dispose([actual, expected]);
  });

  it('treats NaN as unequal unless asked', () => {
    const actual = tf.tensor1d([1, Number.NaN]);
    expect(compareTensors(actual, [1, Number.NaN]).pass).toBe(false);
    expect(compareTensors(actual, [1, Number.NaN], { equalNaN: true }).pass).toBe(true);
    expect(compareTensors(actual, [1, 2], { equalNaN: true }).pass).toBe(false);
    actual.dispose();
  });

  it('accepts equal infinities only', () => {
    const actual = tf.tensor1d([Number.POSITIVE_INFINITY, 1]);
    expect(compareTensors(actual, [Number.POSITIVE_INFINITY, 1]).pass).toBe(true);
    expect(compareTensors(actual, [Number.NEGATIVE_INFINITY, 1]).pass).toBe(false);
    expect(compareTensors(actual, [1e30, 1]).pass).toBe(false);
    // A finite value never matches an infinite expected one, however large rtol is.
    const finite = tf.tensor1d([5]);
    expect(compareTensors(finite, [Number.POSITIVE_INFINITY], { rtol: 1 }).pass).toBe(false);
    finite.dispose();
    actual.dispose();
  });

  it('rejects ragged expected values', () => {
    const actual = tf.tensor2d([[1, 2], [3, 4]]);
    const error = (() => {
      try {
        compareTensors(actual, [[1, 2], [3]]);
        return undefined;
      } catch (caught) {
        return caught;
      }
    })();
    expect(error).toBeInstanceOf(ArgumentError);
    expect((error as ArgumentError).code).toBe('TESTING_INVALID_EXPECTED');
    actual.dispose();
  });

  it('rejects a negative tolerance', () => {
    const actual = tf.tensor1d([1]);
    expect(() => compareTensors(actual, [1], { rtol: -1 })).toThrow('Invalid tolerance rtol: -1');
    actual.dispose();
  });

  it('leaves no tensors behind', () => {
    const actual = tf.tensor1d([1, 2]);
    const expected = tf.tensor1d([1, 2]);
    const before = tf.memory().numTensors;
    compareTensors(actual, expected);
    compareTensors(actual, [1, 3]);
    expect(tf.memory().numTensors).toBe(before);
    tf.dispose([actual, expected]);
  });
});

describe('assertTensorsClose', () => {
  it('throws an AssertionError on mismatch', () => {
    const actual = tf.tensor1d([1, 2]);
    expect(() => assertTensorsClose(actual, [1, 2])).not.toThrow();
    let caught: unknown;
    try {
      assertTensorsClose(actual, [1, 2.5]);
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(AssertionError);
    expect((caught as AssertionError).message).toContain('1 of 2 elements differ');
    expect((caught as AssertionError).expected).toEqual([1, 2.5]);
    actual.dispose();
  });
});

describe('checkTensorLeaks', () => {
  it('counts tensors left alive', async () => {
    const keptTensors: tf.Tensor[] = [];
    const report = await checkTensorLeaks(() => {
      keptTensors.push(tf.ones([2]), tf.zeros([3]));
      return 'done';
    });
    expect(report.result).toBe('done');
    expect(report.leakedTensors).toBe(2);
    // float32: (2 + 3) elements * 4 bytes.
    expect(report.leakedBytes).toBe(20);
    tf.dispose(keptTensors);
  });

  it('counts nothing for tidy work', async () => {
    const report = await checkTensorLeaks(async () => {
      await Promise.resolve();
      tf.tidy(() => {
        tf.add(tf.ones([4]), 1);
      });
    });
    expect(report.leakedTensors).toBe(0);
    expect(report.newVariables).toEqual([]);
  });

  it('lists new variables', async () => {
    let variable: tf.Variable | undefined;
    const report = await checkTensorLeaks(() => {
      variable = tf.variable(tf.zeros([2]), true, 'testing_helpers/new_variable');
    });
    expect(report.newVariables).toEqual(['testing_helpers/new_variable']);
    variable?.dispose();
  });
});

describe('assertNoTensorLeaks', () => {
  it('throws with the counts', async () => {
    const keptTensors: tf.Tensor[] = [];
    const failure = await assertNoTensorLeaks(() => {
      keptTensors.push(tf.ones([2]));
    }).catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(AssertionError);
    expect((failure as Error).message).toContain('1 tensor(s) (8 bytes) stayed alive, 0 allowed');
    tf.dispose(keptTensors);
  });

  it('returns the result within the allowance', async () => {
    const tensor = await assertNoTensorLeaks(() => tf.ones([2]), { allowedTensors: 1 });
    expect(tensor.shape).toEqual([2]);
    tensor.dispose();
  });

  it('rejects new variables unless allowed', async () => {
    const failure = await assertNoTensorLeaks(() => tf.variable(tf.zeros([1]), true, 'testing_helpers/keptTensors'), {
      allowedTensors: 2,
    }).catch((error: unknown) => error);
    expect((failure as Error).message).toContain('1 new variable(s) stayed registered: testing_helpers/keptTensors');
    tf.engine().registeredVariables['testing_helpers/keptTensors']?.dispose();

    const variable = await assertNoTensorLeaks(() => tf.variable(tf.zeros([1]), true, 'testing_helpers/allowed'), {
      allowedTensors: 2,
      allowNewVariables: true,
    });
    variable.dispose();
  });

  it('rejects an invalid allowance', async () => {
    const failure = await assertNoTensorLeaks(() => undefined, { allowedTensors: -1 }).catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(ArgumentError);
  });
});

describe('memorySnapshot', () => {
  it('matches tf.memory', () => {
    const snapshot = memorySnapshot();
    expect(snapshot.numTensors).toBe(tf.memory().numTensors);
    expect(snapshot.numBytes).toBe(tf.memory().numBytes);
  });
});

describe('weightChanges', () => {
  it('measures each variable', () => {
    const weight = tf.variable(tf.tensor1d([1, 2, 3]), true, 'testing_helpers/weight');
    const bias = tf.variable(tf.tensor1d([0.5]), true, 'testing_helpers/bias');
    const before = captureWeights([weight, bias]);
    weight.assign(tf.tensor1d([1, 2.5, 2]));

    const changes = weightChanges(before, captureWeights([weight, bias]));
    // weight: |2.5 - 2| = 0.5 and |2 - 3| = 1, so the max is 1 and the mean (0 + 0.5 + 1) / 3 = 0.5.
    expect(changes).toEqual([
      { name: 'testing_helpers/weight', maxAbsoluteChange: 1, meanAbsoluteChange: 0.5, changed: true },
      { name: 'testing_helpers/bias', maxAbsoluteChange: 0, meanAbsoluteChange: 0, changed: false },
    ]);
    tf.dispose([weight, bias]);
  });

  it('keeps snapshots independent of later updates', () => {
    const weight = tf.variable(tf.tensor1d([1]), true, 'testing_helpers/independent');
    const before = captureWeights({ w: weight });
    weight.assign(tf.tensor1d([7]));
    expect(before.get('w')?.values[0]).toBe(1);
    weight.dispose();
  });

  it('rejects snapshots of other tensors', () => {
    const a = tf.tensor1d([1, 2]);
    const b = tf.tensor1d([1, 2, 3]);
    expect(() => weightChanges(captureWeights({ a }), captureWeights({ b }))).toThrow('"a" is in the first snapshot but not in the second');
    expect(() => weightChanges(captureWeights({ a }), captureWeights({ a: b }))).toThrow('changed shape from [2] to [3]');
    tf.dispose([a, b]);
  });
});
