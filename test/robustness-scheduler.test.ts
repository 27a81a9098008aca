import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';

import { ArgumentError, NestedLearningError } from '../src/errors.js';
import { NestedAdam, type NestedAdamState } from '../src/optimizer/index.js';
import { ParameterTierScheduler, partitionContiguous, type ParameterList } from '../src/scheduler/index.js';

beforeAll(async () => {
  await tf.setBackend('cpu');
});

function thrown(run: () => unknown): NestedLearningError {
  try {
    run();
  } catch (error) {
    expect(NestedLearningError.isInstance(error)).toBe(true);
    return error as NestedLearningError;
  }
  throw new Error('expected an error');
}

describe('scheduler robustness', () => {
  it('step NaN names NaN', () => {
    // Guards against JSON.stringify turning NaN into "null" in the message.
    const scheduler = new ParameterTierScheduler({});

    const error = thrown(() => scheduler.activeTiers(Number.NaN));

    expect(error.message).toBe('step is NaN; it must be an integer of at least 1 (steps count optimizer steps from 1).');
  });

  it('assign rejects null', () => {
    // Guards against a bare TypeError from Object.entries(null).
    const scheduler = new ParameterTierScheduler({});

    const error = thrown(() => scheduler.assign(null as unknown as ParameterList));

    expect(error).toBeInstanceOf(ArgumentError);
    expect(error.code).toBe('SCHEDULER_INVALID_PARAMETER');
    expect(error.message).toBe('Parameters must be a list of { name, shape }, a Map or an object from name to shape, got null.');
  });

  it('partition rejects zero parts', () => {
    // Guards against partitionContiguous([1, 2], 0) returning [undefined, undefined] as run indices.
    const error = thrown(() => partitionContiguous([1, 2], 0));

    expect(error.code).toBe('SCHEDULER_INVALID_OPTION');
    expect(error.message).toBe('parts is 0; it must be an integer of at least 1.');
  });

  it('partition rejects NaN weights', () => {
    // Guards against a bare RangeError from BigInt(NaN).
    const error = thrown(() => partitionContiguous([4, Number.NaN, 4], 2));

    expect(error.message).toBe('weights[1] is NaN; every weight must be a non-negative integer (an element count).');
  });

  it('partition keeps working', () => {
    // Weights 1, 1, 2 in two runs: [1, 1] and [2] give equal shares of 2.
    expect(partitionContiguous([1, 1, 2], 2)).toEqual([0, 0, 1]);
  });
});

describe('optimizer robustness', () => {
  it('setState rejects null', () => {
    // Guards against a bare TypeError from destructuring null.
    const tensorsBefore = tf.memory().numTensors;
    const optimizer = new NestedAdam({ tierUpdateFrequencies: [1] });

    const error = thrown(() => optimizer.setState(null as unknown as NestedAdamState));
    optimizer.dispose();

    expect(error.code).toBe('OPTIMIZER_STATE_MISMATCH');
    expect(error.message).toContain('Cannot restore the NestedAdam state: it is null, not an object from getState()');
    expect(tf.memory().numTensors).toBe(tensorsBefore);
  });
});
