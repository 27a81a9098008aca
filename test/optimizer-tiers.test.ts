/**
 * NestedAdam with tiers of frequencies [1, 2, 4], against a float64 re-derivation in plain
 * JavaScript, plus the hand-worked cases: first-update size, decoupled decay and idle tiers.
 */
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { initBackend } from '../src/backend/index.js';
import { NestedAdam, type InactiveGradients, type TierOptions } from '../src/optimizer/index.js';

const SHAPES = [
  [5, 3],
  [3, 4],
  [7],
];

interface Parameter {
  name: string;
  shape: number[];
  tier: number;
  initial: Float32Array;
}

/** Six parameters, two per tier, with weights in +-[0.5, 1.5] from a fixed formula. */
function makeParameters(prefix: string): Parameter[] {
  const parameters: Parameter[] = [];
  for (let tier = 0; tier < 3; tier++) {
    for (let copy = 0; copy < 2; copy++) {
      const index = parameters.length;
      const shape = SHAPES[(tier + copy) % SHAPES.length] as number[];
      const size = shape.reduce((a, b) => a * b, 1);
      const initial = new Float32Array(size);
      for (let i = 0; i < size; i++) {
        const magnitude = 1 + 0.5 * Math.sin(3.1 * index + 0.7 * i);
        initial[i] = (i + index) % 3 === 0 ? -magnitude : magnitude;
      }
      parameters.push({ name: `${prefix}/layers.${tier}.${copy}/lora`, shape, tier, initial });
    }
  }
  return parameters;
}

/** Returns the gradient of parameter `index` at `step`, rounded to float32 so that both sides use the same values. */
function gradientValues(step: number, index: number, size: number): Float32Array {
  const values = new Float32Array(size);
  for (let i = 0; i < size; i++) {
    values[i] = Math.sin(0.7 * step + 1.3 * index + 0.37 * i) * (1 + 0.5 * Math.cos(0.11 * i * step));
  }
  return values;
}

interface ReferenceOptions {
  learningRateAt: (step: number) => number;
  beta1: number;
  beta2: number;
  epsilon: number;
  tiers: Required<TierOptions>[];
  inactiveGradients: InactiveGradients;
}

/**
 * Re-derives NestedAdam in float64: per tier an update count, per parameter m, v and a gradient
 * sum, and the AdamW update of torch.optim.AdamW. Returns the weights after every step.
 */
function referenceRun(parameters: Parameter[], steps: number, options: ReferenceOptions): Float64Array[][] {
  const { beta1, beta2, epsilon, tiers, inactiveGradients } = options;
  const weights = parameters.map((parameter) => Float64Array.from(parameter.initial));
  const firstMoments = parameters.map((parameter) => new Float64Array(parameter.initial.length));
  const secondMoments = parameters.map((parameter) => new Float64Array(parameter.initial.length));
  const sums = parameters.map((parameter) => new Float64Array(parameter.initial.length));
  const updateCounts = tiers.map(() => 0);
  const history: Float64Array[][] = [];

  for (let step = 1; step <= steps; step++) {
    const learningRate = options.learningRateAt(step);
    const active = tiers.map((tier) => step % tier.frequency === 0);
    active.forEach((isActive, tier) => {
      if (isActive) {
        updateCounts[tier] = (updateCounts[tier] as number) + 1;
      }
    });

    parameters.forEach((parameter, index) => {
      const tier = tiers[parameter.tier] as Required<TierOptions>;
      const gradient = gradientValues(step, index, parameter.initial.length);
      const w = weights[index] as Float64Array;
      const m = firstMoments[index] as Float64Array;
      const v = secondMoments[index] as Float64Array;
      const sum = sums[index] as Float64Array;

      if (!active[parameter.tier]) {
        if (inactiveGradients !== 'drop') {
          gradient.forEach((g, i) => (sum[i] = (sum[i] as number) + g));
        }
        return;
      }

      const t = updateCounts[parameter.tier] as number;
      const tierLearningRate = learningRate * tier.learningRateScale;
      const divisor = inactiveGradients === 'mean' ? tier.frequency : 1;
      for (let i = 0; i < w.length; i++) {
        const applied = inactiveGradients === 'drop' ? (gradient[i] as number) : ((sum[i] as number) + (gradient[i] as number)) / divisor;
        sum[i] = 0;
        w[i] = (w[i] as number) * (1 - tierLearningRate * tier.weightDecay);
        m[i] = beta1 * (m[i] as number) + (1 - beta1) * applied;
        v[i] = beta2 * (v[i] as number) + (1 - beta2) * applied * applied;
        const mHat = (m[i] as number) / (1 - beta1 ** t);
        const vHat = (v[i] as number) / (1 - beta2 ** t);
        w[i] = (w[i] as number) - (tierLearningRate * mHat) / (Math.sqrt(vHat) + epsilon);
      }
    });
    history.push(weights.map((w) => Float64Array.from(w)));
  }
  return history;
}

interface RunResult {
  history: Float32Array[][];
  optimizer: NestedAdam;
  variables: tf.Variable[];
}

/** Runs NestedAdam with the gradients of {@link gradientValues}; `onStep` runs before each step. */
function optimizerRun(
  parameters: Parameter[],
  steps: number,
  optimizer: NestedAdam,
  onStep?: (step: number) => void,
): RunResult {
  const variables = parameters.map((parameter) =>
    tf.tidy(() => tf.variable(tf.tensor(parameter.initial, parameter.shape), true, parameter.name)),
  );
  const history: Float32Array[][] = [];
  for (let step = 1; step <= steps; step++) {
    onStep?.(step);
    const gradients = parameters.map((parameter, index) => ({
      name: parameter.name,
      tensor: tf.tensor(gradientValues(step, index, parameter.initial.length), parameter.shape),
    }));
    optimizer.applyGradients(gradients);
    tf.dispose(gradients.map((gradient) => gradient.tensor));
    history.push(variables.map((variable) => variable.dataSync() as Float32Array));
  }
  return { history, optimizer, variables };
}

function maxRelativeError(actual: Float32Array[][], expected: Float64Array[][]): number {
  let max = 0;
  actual.forEach((stepWeights, step) => {
    stepWeights.forEach((values, parameter) => {
      const reference = (expected[step] as Float64Array[])[parameter] as Float64Array;
      values.forEach((value, i) => {
        const error = Math.abs(value - (reference[i] as number)) / Math.abs(reference[i] as number);
        max = Math.max(max, error);
      });
    });
  });
  return max;
}

const TIERS: Required<TierOptions>[] = [
  { frequency: 1, learningRateScale: 1, weightDecay: 0.01 },
  { frequency: 2, learningRateScale: 0.5, weightDecay: 0 },
  { frequency: 4, learningRateScale: 2, weightDecay: 0.1 },
];
const STEPS = 12;
const REFERENCE_TOLERANCE = 1e-5;

describe.each(['cpu', 'wasm'] as const)('NestedAdam tiers [1, 2, 4] on %s', (backend) => {
  beforeAll(async () => {
    await initBackend({ backend });
  });

  afterAll(async () => {
    await initBackend({ backend: 'cpu' });
  });

  for (const inactiveGradients of ['accumulate', 'mean', 'drop'] as const) {
    it(`matches float64 reference with ${inactiveGradients}`, () => {
      const before = tf.memory().numTensors;
      const parameters = makeParameters(`${backend}_${inactiveGradients}`);
      // Adam is invariant to a constant gradient scale except through epsilon, so a large epsilon
      // is what tells `mean` (the sum divided by the frequency) apart from `accumulate`.
      const options = { learningRate: 0.02, beta1: 0.9, beta2: 0.99, epsilon: 0.05 };
      const optimizer = new NestedAdam({
        ...options,
        tiers: TIERS,
        tierMap: Object.fromEntries(parameters.map((parameter) => [parameter.name, parameter.tier])),
        inactiveGradients,
      });

      let tensorsAfterFirstStep = 0;
      const { history, variables } = optimizerRun(parameters, STEPS, optimizer, (step) => {
        if (step === 2) {
          tensorsAfterFirstStep = tf.memory().numTensors;
        }
      });
      const expected = referenceRun(parameters, STEPS, {
        ...options,
        learningRateAt: () => options.learningRate,
        tiers: TIERS,
        inactiveGradients,
      });

      expect(maxRelativeError(history, expected)).toBeLessThanOrEqual(REFERENCE_TOLERANCE);
      expect(optimizer.tierStats().map((stats) => stats.updateCount)).toEqual([12, 6, 3]);
      // Slots exist from the first step on, so later steps add no tensors.
      expect(tf.memory().numTensors).toBe(tensorsAfterFirstStep);

      optimizer.dispose();
      tf.dispose(variables);
      expect(tf.memory().numTensors).toBe(before);
    });
  }

  it('follows learningRate set between steps', () => {
    const before = tf.memory().numTensors;
    const parameters = makeParameters(`${backend}_setter`);
    const options = { beta1: 0.9, beta2: 0.999, epsilon: 1e-8 };
    const optimizer = new NestedAdam({
      ...options,
      learningRate: 0.01,
      tierUpdateFrequencies: [1, 2, 4],
      weightDecay: 0.05,
      tierMap: new Map(parameters.map((parameter) => [parameter.name, parameter.tier])),
    });
    const { history, variables } = optimizerRun(parameters, 8, optimizer, (step) => {
      if (step === 4) {
        optimizer.learningRate = (s) => 0.03 / s;
      }
      if (step === 7) {
        optimizer.setLearningRate(0.005);
      }
    });
    const learningRateAt = (step: number): number => {
      if (step < 4) {
        return 0.01;
      }
      return step < 7 ? 0.03 / step : 0.005;
    };
    const tiers = [1, 2, 4].map((frequency) => ({ frequency, learningRateScale: 1, weightDecay: 0.05 }));
    const expected = referenceRun(parameters, 8, { ...options, learningRateAt, tiers, inactiveGradients: 'accumulate' });

    expect(maxRelativeError(history, expected)).toBeLessThanOrEqual(REFERENCE_TOLERANCE);
    optimizer.dispose();
    tf.dispose(variables);
    expect(tf.memory().numTensors).toBe(before);
  });
});

describe('NestedAdam hand-worked steps', () => {
  beforeAll(async () => {
    await initBackend({ backend: 'cpu' });
  });

  for (const inactiveGradients of ['accumulate', 'mean', 'drop'] as const) {
    it(`first update per tier moves by learningRate (${inactiveGradients})`, () => {
      const before = tf.memory().numTensors;
      const names = [0, 1, 2].map((tier) => `first_${inactiveGradients}/tier${tier}`);
      const variables = names.map((name) => tf.tidy(() => tf.variable(tf.tensor1d([1, -1]), true, name)));
      const optimizer = new NestedAdam({
        learningRate: 0.01,
        weightDecay: 0,
        tierUpdateFrequencies: [1, 2, 4],
        tierMap: Object.fromEntries(names.map((name, tier) => [name, tier])),
        inactiveGradients,
      });
      const gradient = tf.tensor1d([0.5, -0.25]);

      // With a constant gradient g, the gradient applied at a tier's first update is
      // G = f * g (accumulate) or g (mean, drop). Its first AdamW step, with update count 1:
      //   m = (1 - beta1) * G, v = (1 - beta2) * G^2,
      //   mHat = m / (1 - beta1) = G, sqrt(vHat) = sqrt(v / (1 - beta2)) = |G|,
      //   w <- w - lr * G / (|G| + eps) = w - 0.01 * sign(G) * (1 - 2e-8 or 4e-8),
      // so each weight moves by learningRate = 0.01 against the gradient's sign, at step f.
      const firstUpdateStep = [1, 2, 4];
      for (let step = 1; step <= 4; step++) {
        optimizer.applyGradients(Object.fromEntries(names.map((name) => [name, gradient])));
        variables.forEach((variable, tier) => {
          const [a, b] = variable.dataSync() as Float32Array;
          if (step < (firstUpdateStep[tier] as number)) {
            expect(a, `tier ${tier} step ${step}`).toBe(1);
            expect(b, `tier ${tier} step ${step}`).toBe(-1);
          } else if (step === firstUpdateStep[tier]) {
            // 1 - 0.01 = 0.99 and -1 + 0.01 = -0.99, within float32 rounding near 1 (6e-8).
            expect(Math.abs((a as number) - 0.99), `tier ${tier}`).toBeLessThanOrEqual(1e-7);
            expect(Math.abs((b as number) + 0.99), `tier ${tier}`).toBeLessThanOrEqual(1e-7);
          }
        });
      }

      gradient.dispose();
      optimizer.dispose();
      tf.dispose(variables);
      expect(tf.memory().numTensors).toBe(before);
    });
  }

  it('decays a weight by exactly 1 - lr * wd', () => {
    const before = tf.memory().numTensors;
    const variable = tf.tidy(() => tf.variable(tf.tensor1d([2, -3, 0.5]), true, 'decay/w'));
    const optimizer = new NestedAdam({ learningRate: 0.1, weightDecay: 0.5, tierUpdateFrequencies: [1] });

    // A zero gradient leaves m = v = 0, so the Adam term is 0 / (0 + eps) = 0 and only the
    // decoupled decay acts: w <- w * (1 - lr * wd) = w * (1 - 0.1 * 0.5) = w * 0.95.
    // In float32 the factor is fround(0.95) = 0.949999988079071 and each product is rounded once.
    const zero = tf.zeros([3]);
    optimizer.applyGradients({ 'decay/w': zero });
    const factor = Math.fround(0.95);
    expect(Array.from(variable.dataSync())).toEqual([
      Math.fround(2 * factor), // 1.899999976158142
      Math.fround(-3 * factor), // -2.8499999046325684
      Math.fround(0.5 * factor), // 0.4749999940395355
    ]);

    zero.dispose();
    optimizer.dispose();
    variable.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });

  it('applies per-tier weight decay and scale', () => {
    const before = tf.memory().numTensors;
    const names = ['tierdecay/a', 'tierdecay/b'];
    const variables = names.map((name) => tf.tidy(() => tf.variable(tf.tensor1d([1]), true, name)));
    const optimizer = new NestedAdam({
      learningRate: 0.1,
      weightDecay: 0.5,
      tiers: [{ frequency: 1 }, { frequency: 1, learningRateScale: 2, weightDecay: 0.25 }],
      tierMap: { 'tierdecay/a': 0, 'tierdecay/b': 1 },
    });

    // Tier 0: 1 - 0.1 * 0.5 = 0.95. Tier 1: 1 - (0.1 * 2) * 0.25 = 0.95 as well, from another product.
    const zeros = names.map(() => tf.zeros([1]));
    optimizer.applyGradients(names.map((name, index) => ({ name, tensor: zeros[index] as tf.Tensor })));
    expect((variables[0] as tf.Variable).dataSync()[0]).toBe(Math.fround(Math.fround(0.95)));
    expect((variables[1] as tf.Variable).dataSync()[0]).toBe(Math.fround(1 - 0.2 * 0.25));

    tf.dispose(zeros);
    optimizer.dispose();
    tf.dispose(variables);
    expect(tf.memory().numTensors).toBe(before);
  });

  for (const inactiveGradients of ['accumulate', 'mean', 'drop'] as const) {
    it(`leaves idle tiers bit-identical (${inactiveGradients})`, () => {
      const before = tf.memory().numTensors;
      const parameters = makeParameters(`idle_${inactiveGradients}`);
      const optimizer = new NestedAdam({
        learningRate: 0.05,
        tierUpdateFrequencies: [1, 2, 4],
        tierMap: Object.fromEntries(parameters.map((parameter) => [parameter.name, parameter.tier])),
        inactiveGradients,
      });
      const variables = parameters.map((parameter) =>
        tf.tidy(() => tf.variable(tf.tensor(parameter.initial, parameter.shape), true, parameter.name)),
      );

      for (let step = 1; step <= 8; step++) {
        const weightsBefore = variables.map((variable) => variable.dataSync().slice());
        const stateBefore = optimizer.getState();
        const gradients = parameters.map((parameter, index) =>
          tf.tensor(gradientValues(step, index, parameter.initial.length), parameter.shape),
        );
        optimizer.applyGradients(parameters.map((parameter, index) => ({ name: parameter.name, tensor: gradients[index] as tf.Tensor })));
        const stateAfter = optimizer.getState();

        parameters.forEach((parameter, index) => {
          const active = step % (2 ** parameter.tier) === 0;
          const weightsAfter = (variables[index] as tf.Variable).dataSync();
          if (active) {
            expect(weightsAfter, `${parameter.name} step ${step}`).not.toEqual(weightsBefore[index]);
            return;
          }
          expect(weightsAfter, `${parameter.name} step ${step}`).toEqual(weightsBefore[index]);
          for (const kind of ['m', 'v']) {
            const key = `${parameter.name}/${kind}`;
            expect(stateAfter.tensors[key]?.dataSync(), `${key} step ${step}`).toEqual(stateBefore.tensors[key]?.dataSync());
          }
        });

        tf.dispose(gradients);
        tf.dispose(Object.values(stateBefore.tensors));
        tf.dispose(Object.values(stateAfter.tensors));
      }

      optimizer.dispose();
      tf.dispose(variables);
      expect(tf.memory().numTensors).toBe(before);
    });
  }

  it('sums inactive gradients into accum', () => {
    const before = tf.memory().numTensors;
    const variable = tf.tidy(() => tf.variable(tf.tensor1d([1, 1]), true, 'accum/w'));
    const optimizer = new NestedAdam({ tierUpdateFrequencies: [1, 4], tierMap: { 'accum/w': 1 } });

    // Steps 1 to 3 are inactive for a tier of frequency 4: accum = [0.5 + 1 + 1.5, -1 - 2 - 3] = [3, -6].
    for (const scale of [1, 2, 3]) {
      const gradient = tf.tensor1d([0.5 * scale, -1 * scale]);
      optimizer.applyGradients({ 'accum/w': gradient });
      gradient.dispose();
    }
    const state = optimizer.getState();
    expect(Array.from(state.tensors['accum/w/accum']?.dataSync() ?? [])).toEqual([3, -6]);
    expect(Array.from(state.tensors['accum/w/m']?.dataSync() ?? [])).toEqual([0, 0]);
    tf.dispose(Object.values(state.tensors));

    // Step 4 applies accum + g and clears accum.
    const gradient = tf.tensor1d([1, 1]);
    optimizer.applyGradients({ 'accum/w': gradient });
    const after = optimizer.getState();
    expect(Array.from(after.tensors['accum/w/accum']?.dataSync() ?? [])).toEqual([0, 0]);
    // m = (1 - 0.9) * (accum + g) = 0.1 * [3 + 1, -6 + 1] = [0.4, -0.5].
    const m = after.tensors['accum/w/m']?.dataSync() ?? new Float32Array(0);
    expect(m[0]).toBeCloseTo(0.4, 6);
    expect(m[1]).toBeCloseTo(-0.5, 6);
    tf.dispose(Object.values(after.tensors));

    gradient.dispose();
    optimizer.dispose();
    variable.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });

  it('divides the sum by the frequency with mean', () => {
    const before = tf.memory().numTensors;
    const variable = tf.tidy(() => tf.variable(tf.tensor1d([1, 1]), true, 'mean/w'));
    const optimizer = new NestedAdam({ tierUpdateFrequencies: [1, 4], tierMap: { 'mean/w': 1 }, inactiveGradients: 'mean' });

    // Gradients [0.5, -1] * s for s = 1..4: the applied gradient at step 4 is the window mean
    // (0.5 + 1 + 1.5 + 2) / 4 = 1.25 and (-1 - 2 - 3 - 4) / 4 = -2.5, so m = 0.1 * [1.25, -2.5].
    for (const scale of [1, 2, 3, 4]) {
      const gradient = tf.tensor1d([0.5 * scale, -1 * scale]);
      optimizer.applyGradients({ 'mean/w': gradient });
      gradient.dispose();
    }
    const state = optimizer.getState();
    const m = state.tensors['mean/w/m']?.dataSync() ?? new Float32Array(0);
    expect(m[0]).toBeCloseTo(0.125, 6);
    expect(m[1]).toBeCloseTo(-0.25, 6);
    expect(Array.from(state.tensors['mean/w/accum']?.dataSync() ?? [])).toEqual([0, 0]);

    tf.dispose(Object.values(state.tensors));
    optimizer.dispose();
    variable.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });

  it('skips variables without a gradient', () => {
    const before = tf.memory().numTensors;
    const names = ['skip/a', 'skip/b'];
    const variables = names.map((name) => tf.tidy(() => tf.variable(tf.tensor1d([1, 2]), true, name)));
    const optimizer = new NestedAdam({ learningRate: 0.1, tierUpdateFrequencies: [1, 2], tierMap: { 'skip/a': 1, 'skip/b': 1 } });
    const gradient = tf.tensor1d([1, 1]);

    // Step 1 (inactive): both accumulate. Step 2 (active): only skip/a has a gradient.
    optimizer.applyGradients({ 'skip/a': gradient, 'skip/b': gradient });
    const stateBefore = optimizer.getState();
    optimizer.applyGradients([
      { name: 'skip/a', tensor: gradient },
      { name: 'skip/b', tensor: null as unknown as tf.Tensor },
    ]);
    const stateAfter = optimizer.getState();

    expect(Array.from((variables[0] as tf.Variable).dataSync())).not.toEqual([1, 2]);
    expect(Array.from((variables[1] as tf.Variable).dataSync())).toEqual([1, 2]);
    for (const kind of ['m', 'v', 'accum']) {
      expect(stateAfter.tensors[`skip/b/${kind}`]?.dataSync(), kind).toEqual(stateBefore.tensors[`skip/b/${kind}`]?.dataSync());
    }
    expect(Array.from(stateAfter.tensors['skip/a/accum']?.dataSync() ?? [])).toEqual([0, 0]);
    expect(Array.from(stateAfter.tensors['skip/b/accum']?.dataSync() ?? [])).toEqual([1, 1]);

    tf.dispose([...Object.values(stateBefore.tensors), ...Object.values(stateAfter.tensors)]);
    gradient.dispose();
    optimizer.dispose();
    tf.dispose(variables);
    expect(tf.memory().numTensors).toBe(before);
  });

  it('reports unmapped variables once', () => {
    const before = tf.memory().numTensors;
    const warnings: Array<{ message: string; fields?: Record<string, unknown> }> = [];
    const logger = {
      debug() {},
      info() {},
      warn(message: string, fields?: Record<string, unknown>) {
        warnings.push({ message, fields });
      },
      error() {},
    };
    const names = ['unmapped/mapped', 'unmapped/extra'];
    const variables = names.map((name) => tf.tidy(() => tf.variable(tf.tensor1d([1]), true, name)));
    const optimizer = new NestedAdam({ tierUpdateFrequencies: [1, 2], tierMap: { 'unmapped/mapped': 1 }, unmappedTier: 0, logger });
    const gradient = tf.tensor1d([1]);

    for (let step = 1; step <= 3; step++) {
      optimizer.applyGradients({ 'unmapped/mapped': gradient, 'unmapped/extra': gradient });
    }

    expect(warnings).toHaveLength(1);
    expect(warnings[0]?.message).toContain('unmapped/extra');
    expect(warnings[0]?.fields).toEqual({ names: ['unmapped/extra'], tier: 0 });
    expect(optimizer.unmappedParameterNames).toEqual(['unmapped/extra']);
    expect(optimizer.tierOf('unmapped/extra')).toBe(0);
    expect(optimizer.tierStats().map((stats) => [stats.parameterCount, stats.elementCount, stats.updateCount])).toEqual([
      [1, 1, 3],
      [1, 1, 1],
    ]);

    gradient.dispose();
    optimizer.dispose();
    tf.dispose(variables);
    expect(tf.memory().numTensors).toBe(before);
  });
});
