/**
 * NestedAdam on its own, without the trainer: a tfjs-layers model trained with `model.fit`, and a
 * hand-written loop over `tf.variableGrads`, both with hand-written tier maps.
 *
 * The example checks its own results and exits with status 1 when a check fails:
 * - the loss falls by the factor stated next to each check;
 * - every tier has taken floor(steps / frequency) updates;
 * - the manual loop leaks no tensors.
 *
 * Run after `npm run build` (it imports the built package by name):
 *   npx tsx examples/optimizer-only.ts
 */
import * as tf from '@tensorflow/tfjs';
import { initBackend, NestedAdam } from 'nested-learning';

const failures: string[] = [];

function check(condition: boolean, description: string): void {
  console.log(`${condition ? 'ok  ' : 'FAIL'} ${description}`);
  if (!condition) {
    failures.push(description);
  }
}

/** 128 samples of y = sin(x0) + 0.5 x1 - x2 x3, from a fixed formula. */
function makeRegressionData(): { xs: tf.Tensor2D; ys: tf.Tensor2D } {
  const inputs: number[][] = [];
  const targets: number[][] = [];
  for (let i = 0; i < 128; i++) {
    const x = [Math.sin(0.5 * i), Math.cos(1.3 * i), Math.sin(0.7 * i + 2), Math.cos(0.2 * i)];
    const [x0, x1, x2, x3] = x as [number, number, number, number];
    inputs.push(x);
    targets.push([Math.sin(x0) + 0.5 * x1 - x2 * x3]);
  }
  return { xs: tf.tensor2d(inputs), ys: tf.tensor2d(targets) };
}

/** Part 1: `model.compile({optimizer})` and `model.fit` with a tier map over layer weight names. */
async function trainLayersModel(): Promise<void> {
  const model = tf.sequential();
  model.add(
    tf.layers.dense({
      name: 'hidden',
      units: 16,
      activation: 'tanh',
      inputShape: [4],
      kernelInitializer: tf.initializers.glorotUniform({ seed: 11 }),
    }),
  );
  model.add(tf.layers.dense({ name: 'output', units: 1, kernelInitializer: tf.initializers.glorotUniform({ seed: 12 }) }));

  // Tier 0 (every step): the hidden kernel. Tier 1 (every 2nd step): the hidden bias and the output
  // kernel. Tier 2 (every 4th step): the output bias. The keys are the layer weight names.
  const tierMap = {
    'hidden/kernel': 0,
    'hidden/bias': 1,
    'output/kernel': 1,
    'output/bias': 2,
  };
  const weightNames = model.trainableWeights.map((weight) => weight.name).sort();
  check(
    JSON.stringify(weightNames) === JSON.stringify(Object.keys(tierMap).sort()),
    `tier map covers the model weights (${weightNames.join(', ')})`,
  );

  const optimizer = new NestedAdam({
    learningRate: 0.02,
    tierUpdateFrequencies: [1, 2, 4],
    tierMap,
    inactiveGradients: 'accumulate',
  });
  model.compile({ optimizer, loss: 'meanSquaredError' });

  // 128 samples in batches of 16 are 8 steps per epoch; 10 epochs are 80 steps.
  const { xs, ys } = makeRegressionData();
  const history = await model.fit(xs, ys, { epochs: 10, batchSize: 16, shuffle: false, verbose: 0 });
  const losses = history.history['loss'] as number[];
  const firstLoss = losses[0] as number;
  const lastLoss = losses[losses.length - 1] as number;
  console.log(`model.fit: loss ${firstLoss.toFixed(4)} -> ${lastLoss.toFixed(4)} over ${losses.length} epochs`);

  check(lastLoss < firstLoss / 4, 'model.fit loss fell by more than a factor of 4');
  const counts = optimizer.tierStats().map((stats) => stats.updateCount);
  check(optimizer.step === 80, `optimizer took 80 steps (took ${optimizer.step})`);
  check(JSON.stringify(counts) === JSON.stringify([80, 40, 20]), `tier update counts are [80, 40, 20] (got [${counts}])`);
  check(optimizer.unmappedParameterNames.length === 0, 'no variable fell outside the tier map');

  model.dispose();
  tf.dispose([xs, ys]);
}

/** Part 2: a manual loop that computes gradients with `tf.variableGrads` and applies them. */
function trainManualLoop(): void {
  // Linear regression y = 3 x0 - 2 x1 + 1 from 64 samples; w is fast, the bias slow.
  const inputs = tf.tidy(() => tf.tensor2d(Array.from({ length: 64 }, (_, i) => [Math.sin(i), Math.cos(2.1 * i)])));
  const targets = tf.tidy(() => tf.add(tf.matMul(inputs, tf.tensor2d([[3], [-2]])), 1));
  const weight = tf.tidy(() => tf.variable(tf.zeros([2, 1]), true, 'manual/weight'));
  const bias = tf.tidy(() => tf.variable(tf.zeros([1]), true, 'manual/bias'));

  const optimizer = new NestedAdam({
    learningRate: 0.05,
    weightDecay: 0,
    tierUpdateFrequencies: [1, 4],
    tierMap: { 'manual/weight': 0, 'manual/bias': 1 },
    inactiveGradients: 'mean',
  });
  const lossOf = (): tf.Scalar => tf.losses.meanSquaredError(targets, tf.add(tf.matMul(inputs, weight), bias)) as tf.Scalar;

  const steps = 200;
  let firstLoss = 0;
  let lastLoss = 0;
  let tensorsAfterFirstStep = 0;
  for (let step = 1; step <= steps; step++) {
    const { value, grads } = tf.variableGrads(lossOf, [weight, bias]);
    optimizer.applyGradients(grads);
    const loss = value.dataSync()[0] as number;
    tf.dispose([value, ...Object.values(grads)]);

    if (step === 1) {
      firstLoss = loss;
      tensorsAfterFirstStep = tf.memory().numTensors;
    }
    lastLoss = loss;
  }
  console.log(`manual loop: loss ${firstLoss.toFixed(4)} -> ${lastLoss.toFixed(6)} over ${steps} steps`);

  check(lastLoss < firstLoss / 100, 'manual loop loss fell by more than a factor of 100');
  const counts = optimizer.tierStats().map((stats) => stats.updateCount);
  check(JSON.stringify(counts) === JSON.stringify([200, 50]), `tier update counts are [200, 50] (got [${counts}])`);
  check(tf.memory().numTensors === tensorsAfterFirstStep, 'no tensors leaked across steps');

  optimizer.dispose();
  tf.dispose([inputs, targets, weight, bias]);
}

async function main(): Promise<void> {
  const backend = await initBackend();
  console.log(`tfjs backend: ${backend.name} (${backend.package})`);

  await trainLayersModel();
  trainManualLoop();

  if (failures.length > 0) {
    console.error(`${failures.length} check(s) failed: ${failures.join('; ')}`);
    process.exit(1);
  }
  console.log('all checks passed');
}

await main();
