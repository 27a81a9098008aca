/**
 * NestedAdam state: getState/setState, the safetensors-ready form, getWeights/setWeights and
 * getConfig/fromConfig. A restored optimizer must continue bit-identically.
 */
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { initBackend } from '../src/backend/index.js';
import { ArgumentError, FileFormatError, ShapeError } from '../src/errors.js';
import {
  NestedAdam,
  STATE_METADATA_KEY,
  stateFromTensors,
  stateToTensors,
  type NestedAdamOptions,
  type NestedAdamState,
} from '../src/optimizer/index.js';

const SHAPES = [[4, 3], [3, 5], [6], [2, 2], [5], [3, 3]];

function createVariables(prefix: string): tf.Variable[] {
  return SHAPES.map((shape, index) =>
    tf.tidy(() => {
      const size = shape.reduce((a, b) => a * b, 1);
      const values = Array.from({ length: size }, (_, i) => 1 + 0.5 * Math.sin(2.3 * index + 0.9 * i));
      return tf.variable(tf.tensor(values, shape), true, `${prefix}/layers.${index}/w`);
    }),
  );
}

function tierMapFor(variables: tf.Variable[]): Record<string, number> {
  return Object.fromEntries(variables.map((variable, index) => [variable.name, index % 3]));
}

/** Applies the gradients of `step`, a fixed formula of step, variable and element. */
function applyStep(optimizer: NestedAdam, variables: tf.Variable[], step: number): void {
  const gradients = variables.map((variable, index) =>
    tf.tidy(() => {
      const values = Array.from({ length: variable.size }, (_, i) => Math.cos(0.8 * step + 1.7 * index + 0.3 * i));
      return { name: variable.name, tensor: tf.tensor(values, variable.shape) };
    }),
  );
  optimizer.applyGradients(gradients);
  tf.dispose(gradients.map((gradient) => gradient.tensor));
}

function snapshot(variables: tf.Variable[]): Float32Array[] {
  return variables.map((variable) => variable.dataSync().slice() as Float32Array);
}

function restoreWeights(variables: tf.Variable[], weights: Float32Array[]): void {
  variables.forEach((variable, index) => {
    const value = tf.tensor(weights[index] as Float32Array, variable.shape);
    variable.assign(value);
    value.dispose();
  });
}

function thrown(action: () => unknown): unknown {
  try {
    action();
  } catch (error) {
    return error;
  }
  throw new Error('expected the action to throw');
}

async function thrownAsync(action: () => Promise<unknown>): Promise<unknown> {
  return action().then(
    () => {
      throw new Error('expected the action to reject');
    },
    (error: unknown) => error,
  );
}

describe.each(['cpu', 'wasm'] as const)('NestedAdam state round trip on %s', (backend) => {
  beforeAll(async () => {
    await initBackend({ backend });
  });

  afterAll(async () => {
    await initBackend({ backend: 'cpu' });
  });

  for (const inactiveGradients of ['accumulate', 'mean', 'drop'] as const) {
    it(`continues exactly after setState (${inactiveGradients})`, () => {
      const before = tf.memory().numTensors;
      const variables = createVariables(`${backend}_roundtrip_${inactiveGradients}`);
      const options: NestedAdamOptions = {
        learningRate: (step) => 0.05 / Math.sqrt(step),
        tierUpdateFrequencies: [1, 2, 4],
        tierMap: tierMapFor(variables),
        inactiveGradients,
      };

      // Uninterrupted run of 10 steps, saving the state and weights after step 5.
      const uninterrupted = new NestedAdam(options);
      for (let step = 1; step <= 5; step++) {
        applyStep(uninterrupted, variables, step);
      }
      const weightsAtFive = snapshot(variables);
      const state = uninterrupted.getState();
      for (let step = 6; step <= 10; step++) {
        applyStep(uninterrupted, variables, step);
      }
      const expected = snapshot(variables);

      // A fresh optimizer restored at step 5 takes steps 6 to 10.
      restoreWeights(variables, weightsAtFive);
      const restored = new NestedAdam(options);
      restored.setState(state);
      expect(restored.step).toBe(5);
      for (let step = 6; step <= 10; step++) {
        applyStep(restored, variables, step);
      }

      expect(snapshot(variables)).toEqual(expected);
      expect(restored.tierStats()).toEqual(uninterrupted.tierStats());
      expect(restored.iterations).toBe(10);

      tf.dispose(Object.values(state.tensors));
      uninterrupted.dispose();
      restored.dispose();
      tf.dispose(variables);
      expect(tf.memory().numTensors).toBe(before);
    });
  }

  it('round-trips through stateToTensors and JSON metadata', () => {
    const before = tf.memory().numTensors;
    const variables = createVariables(`${backend}_flat`);
    const options: NestedAdamOptions = { learningRate: 0.02, tierUpdateFrequencies: [1, 2, 4], tierMap: tierMapFor(variables) };

    const first = new NestedAdam(options);
    for (let step = 1; step <= 3; step++) {
      applyStep(first, variables, step);
    }
    const weightsAtThree = snapshot(variables);
    const state = first.getState();
    const { tensors, metadata } = stateToTensors(state);
    const storedMetadata = JSON.parse(JSON.stringify(metadata)) as Record<string, string>;
    for (let step = 4; step <= 8; step++) {
      applyStep(first, variables, step);
    }
    const expected = snapshot(variables);

    restoreWeights(variables, weightsAtThree);
    const second = new NestedAdam(options);
    second.setState(stateFromTensors(tensors, storedMetadata));
    for (let step = 4; step <= 8; step++) {
      applyStep(second, variables, step);
    }
    expect(snapshot(variables)).toEqual(expected);

    tf.dispose(Object.values(state.tensors));
    first.dispose();
    second.dispose();
    tf.dispose(variables);
    expect(tf.memory().numTensors).toBe(before);
  });

  it('continues exactly after setWeights', async () => {
    const before = tf.memory().numTensors;
    const variables = createVariables(`${backend}_weights`);
    const options: NestedAdamOptions = { learningRate: 0.02, tierUpdateFrequencies: [1, 2, 4], tierMap: tierMapFor(variables) };

    const first = new NestedAdam(options);
    for (let step = 1; step <= 6; step++) {
      applyStep(first, variables, step);
    }
    const weightsAtSix = snapshot(variables);
    const saved = (await first.getWeights()).map(({ name, tensor }) => ({ name, tensor: tf.clone(tensor) }));
    for (let step = 7; step <= 9; step++) {
      applyStep(first, variables, step);
    }
    const expected = snapshot(variables);

    restoreWeights(variables, weightsAtSix);
    const second = new NestedAdam(options);
    await second.setWeights(saved);
    for (let step = 7; step <= 9; step++) {
      applyStep(second, variables, step);
    }
    expect(snapshot(variables)).toEqual(expected);

    tf.dispose(saved.map((weight) => weight.tensor));
    first.dispose();
    second.dispose();
    tf.dispose(variables);
    expect(tf.memory().numTensors).toBe(before);
  });
});

describe('NestedAdam state contents', () => {
  beforeAll(async () => {
    await initBackend({ backend: 'cpu' });
  });

  it('keys slots by variable name', () => {
    const variables = createVariables('keys');
    const optimizer = new NestedAdam({ tierUpdateFrequencies: [1, 2, 4], tierMap: tierMapFor(variables) });
    applyStep(optimizer, variables, 1);
    const state = optimizer.getState();

    // Tier 0 (frequency 1) never accumulates; tiers 1 and 2 hold accum.
    const expectedKeys = variables.flatMap((variable, index) =>
      index % 3 === 0 ? [`${variable.name}/m`, `${variable.name}/v`] : [`${variable.name}/m`, `${variable.name}/v`, `${variable.name}/accum`],
    );
    expect(Object.keys(state.tensors).sort()).toEqual(expectedKeys.sort());
    variables.forEach((variable) => {
      expect(state.tensors[`${variable.name}/m`]?.shape).toEqual(variable.shape);
    });
    expect(state.step).toBe(1);
    expect(state.tierUpdateCounts).toEqual([1, 0, 0]);
    expect(state.hyperparameters).toEqual({
      learningRate: 1e-3,
      beta1: 0.9,
      beta2: 0.999,
      epsilon: 1e-8,
      weightDecay: 1e-2,
      tiers: [1, 2, 4].map((frequency) => ({ frequency, learningRateScale: 1, weightDecay: 1e-2 })),
      inactiveGradients: 'accumulate',
      unmappedTier: 0,
    });

    tf.dispose(Object.values(state.tensors));
    optimizer.dispose();
    tf.dispose(variables);
  });

  it('includes mapped variables before their first gradient', () => {
    const variables = createVariables('eager');
    const optimizer = new NestedAdam({ tierUpdateFrequencies: [1, 2, 4], inactiveGradients: 'drop', tierMap: tierMapFor(variables) });
    const state = optimizer.getState();

    expect(Object.keys(state.tensors)).toHaveLength(2 * variables.length);
    expect(Array.from(state.tensors[`${variables[1]?.name}/v`]?.dataSync() ?? [1])).toEqual(new Array(15).fill(0));
    expect(optimizer.tierStats().map((stats) => stats.parameterCount)).toEqual([0, 0, 0]);

    tf.dispose(Object.values(state.tensors));
    optimizer.dispose();
    tf.dispose(variables);
  });

  it('orders getWeights as tfjs does', async () => {
    const before = tf.memory().numTensors;
    const variables = createVariables('order');
    const optimizer = new NestedAdam({ tierUpdateFrequencies: [1, 2], tierMap: { [variables[0]?.name ?? '']: 0, [variables[1]?.name ?? '']: 1 } });
    const pair = variables.slice(0, 2);
    applyStep(optimizer, pair, 1);
    applyStep(optimizer, pair, 2);
    applyStep(optimizer, pair, 3);

    const weights = await optimizer.getWeights();
    const [a, b] = pair.map((variable) => variable.name);
    expect(weights.map((weight) => weight.name)).toEqual(['iter', `${a}/m`, `${b}/m`, `${a}/v`, `${b}/v`, `${b}/accum`]);
    expect(weights[0]?.tensor.dtype).toBe('int32');
    expect(Array.from(weights[0]?.tensor.dataSync() ?? [])).toEqual([3]);

    // The optimizer owns exported tensors until the next getWeights call.
    const second = await optimizer.getWeights();
    expect(weights.every((weight) => weight.tensor.isDisposed)).toBe(true);
    expect(second.some((weight) => weight.tensor.isDisposed)).toBe(false);

    // Its own weights restore into it unchanged.
    const firstMoment = second[1]?.tensor.dataSync().slice();
    await optimizer.setWeights(second);
    const third = await optimizer.getWeights();
    expect(third[1]?.tensor.dataSync()).toEqual(firstMoment);
    expect(optimizer.step).toBe(3);

    optimizer.dispose();
    tf.dispose(variables);
    expect(tf.memory().numTensors).toBe(before);
  });
});

describe('NestedAdam setState errors', () => {
  let variables: tf.Variable[] = [];
  let source: NestedAdam;
  let state: NestedAdamState;
  const options = (): NestedAdamOptions => ({ tierUpdateFrequencies: [1, 2, 4], tierMap: tierMapFor(variables) });

  beforeAll(async () => {
    await initBackend({ backend: 'cpu' });
    variables = createVariables('errors');
    source = new NestedAdam(options());
    for (let step = 1; step <= 4; step++) {
      applyStep(source, variables, step);
    }
    state = source.getState();
  });

  afterAll(() => {
    tf.dispose(Object.values(state.tensors));
    source.dispose();
    tf.dispose(variables);
  });

  function withoutKeys(prefix: string): NestedAdamState {
    const tensors = Object.fromEntries(Object.entries(state.tensors).filter(([key]) => !key.startsWith(prefix)));
    return { ...state, tensors };
  }

  it('rejects a missing variable', () => {
    const target = new NestedAdam(options());
    const error = thrown(() => target.setState(withoutKeys(`${variables[2]?.name}/`)));
    expect(error).toBeInstanceOf(ShapeError);
    expect((error as ShapeError).code).toBe('OPTIMIZER_STATE_MISSING_TENSOR');
    expect((error as Error).message).toContain(variables[2]?.name);
    expect(target.step).toBe(0);
    target.dispose();
  });

  it('rejects a missing slot', () => {
    const target = new NestedAdam(options());
    const name = variables[1]?.name ?? '';
    const { [`${name}/accum`]: _removed, ...tensors } = state.tensors;
    const error = thrown(() => target.setState({ ...state, tensors }));
    expect((error as ShapeError).code).toBe('OPTIMIZER_STATE_MISSING_TENSOR');
    expect((error as Error).message).toContain(`"${name}" (tier 1) has slots [m,v]`);
    target.dispose();
  });

  it('rejects a shape mismatch', () => {
    const target = new NestedAdam(options());
    const name = variables[0]?.name ?? '';
    const wrong = tf.zeros([3, 4]);
    const error = thrown(() => target.setState({ ...state, tensors: { ...state.tensors, [`${name}/m`]: wrong } }));
    expect(error).toBeInstanceOf(ShapeError);
    expect((error as ShapeError).code).toBe('OPTIMIZER_STATE_SHAPE_MISMATCH');
    expect((error as Error).message).toContain('shape [3,4]');
    expect((error as Error).message).toContain('shape [4,3]');
    wrong.dispose();
    target.dispose();
  });

  it('rejects an unknown variable and key', () => {
    const target = new NestedAdam(options());
    const extra = tf.zeros([2]);
    const unknownVariable = thrown(() =>
      target.setState({ ...state, tensors: { ...state.tensors, 'nowhere/m': extra, 'nowhere/v': extra } }),
    );
    expect((unknownVariable as ShapeError).code).toBe('OPTIMIZER_STATE_UNKNOWN_VARIABLE');
    const unknownKey = thrown(() => target.setState({ ...state, tensors: { ...state.tensors, 'nowhere/momentum': extra } }));
    expect((unknownKey as ShapeError).code).toBe('OPTIMIZER_STATE_UNKNOWN_KEY');
    extra.dispose();
    target.dispose();
  });

  it('rejects other tier frequencies', () => {
    const target = new NestedAdam({ ...options(), tierUpdateFrequencies: [1, 2, 8] });
    const error = thrown(() => target.setState(state));
    expect(error).toBeInstanceOf(ArgumentError);
    expect((error as ArgumentError).code).toBe('OPTIMIZER_STATE_MISMATCH');
    expect((error as Error).message).toContain('[1,2,4]');
    target.dispose();
  });

  it('rejects other inactiveGradients', () => {
    const target = new NestedAdam({ ...options(), inactiveGradients: 'drop' });
    const error = thrown(() => target.setState(state));
    expect((error as ArgumentError).code).toBe('OPTIMIZER_STATE_MISMATCH');
    expect((error as Error).message).toContain('"accumulate"');
    target.dispose();
  });

  it('rejects counts inconsistent with step', () => {
    const target = new NestedAdam(options());
    const error = thrown(() => target.setState({ ...state, tierUpdateCounts: [4, 2, 2] }));
    expect((error as ArgumentError).code).toBe('OPTIMIZER_STATE_MISMATCH');
    expect((error as Error).message).toContain('[4,2,1]');
    target.dispose();
  });

  it('rejects a tracked variable missing after steps', () => {
    const target = new NestedAdam({ tierUpdateFrequencies: [1, 2, 4] });
    applyStep(target, variables.slice(0, 1), 1);
    const other = new NestedAdam({ tierUpdateFrequencies: [1, 2, 4] });
    const otherState = other.getState();
    const error = thrown(() => target.setState({ ...otherState, step: 1, tierUpdateCounts: [1, 0, 0] }));
    expect((error as ShapeError).code).toBe('OPTIMIZER_STATE_MISSING_TENSOR');
    expect((error as Error).message).toContain(variables[0]?.name);
    other.dispose();
    target.dispose();
  });

  it('setWeights requires iter first', async () => {
    const target = new NestedAdam(options());
    const error = await thrownAsync(() => target.setWeights([{ name: 'x/m', tensor: state.tensors[`${variables[0]?.name}/m`] as tf.Tensor }]));
    expect((error as ShapeError).code).toBe('OPTIMIZER_STATE_MISSING_TENSOR');
    expect((error as Error).message).toContain('"iter"');
    target.dispose();
  });

  it('stateFromTensors rejects bad metadata', () => {
    const missing = thrown(() => stateFromTensors({}, {}));
    expect(missing).toBeInstanceOf(FileFormatError);
    expect((missing as FileFormatError).code).toBe('OPTIMIZER_STATE_INVALID');
    const badJson = thrown(() => stateFromTensors({}, { [STATE_METADATA_KEY]: '{' }));
    expect((badJson as Error).message).toContain('not valid JSON');
    const badFormat = thrown(() => stateFromTensors({}, { [STATE_METADATA_KEY]: '{"format":2}' }));
    expect((badFormat as Error).message).toContain('format is 2');
  });
});

describe('NestedAdam config', () => {
  beforeAll(async () => {
    await initBackend({ backend: 'cpu' });
  });

  it('round-trips getConfig and fromConfig', () => {
    const optimizer = new NestedAdam({
      learningRate: 0.003,
      beta1: 0.8,
      beta2: 0.95,
      epsilon: 1e-6,
      weightDecay: 0.1,
      tiers: [{ frequency: 1 }, { frequency: 3, learningRateScale: 0.5, weightDecay: 0 }],
      tierMap: new Map([
        ['config/a', 1],
        ['layers.0.self_attn/lora_a%', 0],
      ]),
      inactiveGradients: 'mean',
      unmappedTier: 1,
    });
    const config = optimizer.getConfig();
    expect(config).toEqual({
      learningRate: 0.003,
      beta1: 0.8,
      beta2: 0.95,
      epsilon: 1e-6,
      weightDecay: 0.1,
      tiers: [
        { frequency: 1, learningRateScale: 1, weightDecay: 0.1 },
        { frequency: 3, learningRateScale: 0.5, weightDecay: 0 },
      ],
      tierMap: { 'config/a': 1, 'layers.0.self%5Fattn/lora%5Fa%25': 0 },
      inactiveGradients: 'mean',
      unmappedTier: 1,
    });

    const copy = NestedAdam.fromConfig(NestedAdam, JSON.parse(JSON.stringify(config))) as NestedAdam;
    expect(copy).toBeInstanceOf(NestedAdam);
    expect(copy.getConfig()).toEqual(config);
    expect(copy.getClassName()).toBe('NestedAdam');
    expect(copy.tierOf('layers.0.self_attn/lora_a%')).toBe(0);
    expect(copy.tierOf('config/a')).toBe(1);
    optimizer.dispose();
    copy.dispose();
  });

  it('is registered for tfjs serialisation', () => {
    const registered = tf.serialization.SerializationMap.getMap().classNameMap['NestedAdam'];
    expect(registered?.[0]).toBe(NestedAdam);
    const optimizer = new NestedAdam({ tierUpdateFrequencies: [1] });
    expect(optimizer).toBeInstanceOf(tf.Optimizer);
    optimizer.dispose();
  });

  it('records a function learning rate at the next step', () => {
    const optimizer = new NestedAdam({ learningRate: (step) => 0.1 / step, tierUpdateFrequencies: [1] });
    expect(optimizer.getConfig()['learningRate']).toBe(0.1);
    optimizer.dispose();
  });
});
