/** NestedAdam inside tfjs: `model.compile`/`model.fit` of a tfjs-layers model, and `minimize`. */
import * as tf from '@tensorflow/tfjs';
// An internal module of tfjs-layers: the converter that `loadLayersModel` applies to a saved optimizer config.
import { convertPythonicToTs } from '@tensorflow/tfjs-layers/dist/utils/serialization_utils.js';
import { beforeAll, describe, expect, it } from 'vitest';

import { initBackend } from '../src/backend/index.js';
import { NestedAdam } from '../src/optimizer/index.js';

/** 64 samples of y = 2 x0 - x1 + 0.5 x2 x3, from a fixed formula. */
function makeData(): { xs: tf.Tensor2D; ys: tf.Tensor2D } {
  const inputs: number[][] = [];
  const targets: number[][] = [];
  for (let i = 0; i < 64; i++) {
    const x = [Math.sin(i), Math.cos(1.7 * i), Math.sin(0.3 * i + 1), Math.cos(0.9 * i)];
    inputs.push(x);
    targets.push([2 * (x[0] as number) - (x[1] as number) + 0.5 * (x[2] as number) * (x[3] as number)]);
  }
  return { xs: tf.tensor2d(inputs), ys: tf.tensor2d(targets) };
}

function makeModel(): tf.Sequential {
  const model = tf.sequential();
  // Seeded initializers make the run, and so the loss curve, the same every time.
  model.add(
    tf.layers.dense({ units: 8, activation: 'tanh', inputShape: [4], kernelInitializer: tf.initializers.glorotUniform({ seed: 1 }) }),
  );
  model.add(tf.layers.dense({ units: 1, kernelInitializer: tf.initializers.glorotUniform({ seed: 2 }) }));
  return model;
}

describe('NestedAdam with tfjs-layers', () => {
  beforeAll(async () => {
    await initBackend({ backend: 'cpu' });
  });

  it('trains a dense model with fit', async () => {
    const { xs, ys } = makeData();
    const model = makeModel();
    const [hidden, output] = model.layers as [tf.layers.Layer, tf.layers.Layer];

    // Tier map by layer weight name: the hidden layer every step, the output layer every 2nd step.
    const tierMap: Record<string, number> = {};
    for (const weight of hidden.trainableWeights) {
      tierMap[weight.name] = 0;
    }
    for (const weight of output.trainableWeights) {
      tierMap[weight.name] = 1;
    }
    expect(Object.keys(tierMap).every((name) => /^dense_Dense\d+\/(kernel|bias)$/.test(name))).toBe(true);

    const optimizer = new NestedAdam({ learningRate: 0.02, tierUpdateFrequencies: [1, 2], tierMap });
    model.compile({ optimizer, loss: 'meanSquaredError' });

    // Record whether the output kernel changed at each step: only at even steps.
    const outputKernel = output.trainableWeights[0]?.read() as tf.Variable;
    let previous = outputKernel.dataSync().slice();
    const changedAtStep: boolean[] = [];
    const onBatchEnd = async (): Promise<void> => {
      const current = outputKernel.dataSync().slice();
      changedAtStep.push(current.some((value, i) => value !== previous[i]));
      previous = current;
    };

    // 64 samples in batches of 16 are 4 steps per epoch.
    const first = await model.fit(xs, ys, { epochs: 2, batchSize: 16, shuffle: false, verbose: 0, callbacks: { onBatchEnd } });
    const tensorsAfterFirstFit = tf.memory().numTensors;
    const second = await model.fit(xs, ys, { epochs: 2, batchSize: 16, shuffle: false, verbose: 0, callbacks: { onBatchEnd } });

    expect(tf.memory().numTensors).toBe(tensorsAfterFirstFit);
    expect(optimizer.step).toBe(16);
    expect(optimizer.tierStats().map((stats) => [stats.updateCount, stats.parameterCount, stats.elementCount])).toEqual([
      [16, 2, 4 * 8 + 8],
      [8, 2, 8 + 1],
    ]);
    expect(optimizer.unmappedParameterNames).toEqual([]);
    expect(changedAtStep).toEqual(Array.from({ length: 16 }, (_, index) => (index + 1) % 2 === 0));

    const losses = [...(first.history['loss'] as number[]), ...(second.history['loss'] as number[])];
    // The loss falls by more than half over 4 epochs.
    expect(losses[3] as number).toBeLessThan((losses[0] as number) / 2);

    model.dispose();
    tf.dispose([xs, ys]);
  });

  it('keeps tier-map names through the tfjs-layers config converter', () => {
    const names = ['dense_Dense1/kernel', 'layers.0.self_attn.q_proj/lora_a', 'odd%name_5F'];
    const optimizer = new NestedAdam({ tierUpdateFrequencies: [1, 2, 4], tierMap: { [names[0] as string]: 0, [names[1] as string]: 1, [names[2] as string]: 2 } });

    // loadLayersModel passes a saved optimizer config through convertPythonicToTs, which
    // camel-cases keys with underscores; the encoded names must come through unchanged.
    const converted = convertPythonicToTs({ class_name: 'NestedAdam', config: optimizer.getConfig() }) as {
      className: string;
      config: tf.serialization.ConfigDict;
    };
    const restored = NestedAdam.fromConfig(NestedAdam, converted.config) as NestedAdam;
    expect(converted.className).toBe('NestedAdam');
    expect(names.map((name) => restored.tierOf(name))).toEqual([0, 1, 2]);
    expect(restored.getConfig()).toEqual(optimizer.getConfig());

    optimizer.dispose();
    restored.dispose();
  });

  it('minimizes a loss over a variable list', () => {
    const before = tf.memory().numTensors;
    const a = tf.tidy(() => tf.variable(tf.tensor1d([3, -2]), true, 'minimize/a'));
    const b = tf.tidy(() => tf.variable(tf.scalar(4), true, 'minimize/b'));
    const optimizer = new NestedAdam({ learningRate: 0.3, weightDecay: 0, tierUpdateFrequencies: [1, 2], tierMap: { 'minimize/b': 1 } });

    // Loss sum(a^2) + b^2, minimum 0 at a = 0, b = 0; starts at 9 + 4 + 16 = 29.
    const loss = (): tf.Scalar => tf.add(tf.sum(tf.square(a)), tf.square(b)) as tf.Scalar;
    let last = Number.POSITIVE_INFINITY;
    for (let step = 1; step <= 40; step++) {
      const cost = optimizer.minimize(loss, true, [a, b]) as tf.Scalar;
      last = cost.dataSync()[0] as number;
      cost.dispose();
    }

    // The loss falls by more than a factor of 10.
    expect(last).toBeLessThan(29 / 10);
    expect(optimizer.tierStats().map((stats) => stats.updateCount)).toEqual([40, 20]);

    optimizer.dispose();
    tf.dispose([a, b]);
    expect(tf.memory().numTensors).toBe(before);
  });
});
