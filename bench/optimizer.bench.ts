/**
 * Time per optimizer step of NestedAdam against tf.train.adam on LoRA-shaped variables, on the
 * tfjs wasm backend.
 *
 * The variables are the LoRA matrices of Qwen2-0.5B at rank 8: 24 layers x 7 modules
 * (q 896->896, k 896->128, v 896->128, o 896->896, gate 896->4864, up 896->4864,
 * down 4864->896), each with lora_a [in, 8] and lora_b [8, out]: 336 variables, 4.4M elements.
 * Tiers follow the layer: layers 0-7 are tier 0, 8-15 tier 1 and 16-23 tier 2.
 *
 * Each measurement times one cycle of 4 consecutive steps (one full period of frequencies
 * [1, 2, 4]) and divides by 4. Rounds alternate between the optimizers, so that load from other
 * processes affects all of them alike, and the report gives the median over the rounds.
 *
 * Run: npx tsx bench/optimizer.bench.ts [--rounds 9] [--warmup 2]
 */
import * as tf from '@tensorflow/tfjs';
import { cpus } from 'node:os';
import { parseArgs } from 'node:util';

import { initBackend } from '../src/backend/index.js';
import { NestedAdam } from '../src/optimizer/index.js';

const LAYERS = 24;
const RANK = 8;
const MODULES: Array<[name: string, inFeatures: number, outFeatures: number]> = [
  ['self_attn.q_proj', 896, 896],
  ['self_attn.k_proj', 896, 128],
  ['self_attn.v_proj', 896, 128],
  ['self_attn.o_proj', 896, 896],
  ['mlp.gate_proj', 896, 4864],
  ['mlp.up_proj', 896, 4864],
  ['mlp.down_proj', 4864, 896],
];
const STEPS_PER_CYCLE = 4;

interface Candidate {
  label: string;
  /** The largest allowed ratio to tf.train.adam, or null for a configuration without a target. */
  target: number | null;
  optimizer: tf.Optimizer;
  timesMs: number[];
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { rounds: { type: 'string', default: '9' }, warmup: { type: 'string', default: '2' } },
  });
  const rounds = Number(values.rounds);
  const warmup = Number(values.warmup);

  const backend = await initBackend({ backend: 'wasm' });
  const { variables, tierMap } = createLoraVariables();
  const gradients = tf.tidy(() =>
    Object.fromEntries(variables.map((variable) => [variable.name, tf.randomNormal(variable.shape, 0, 1e-3, 'float32', 7)])),
  );
  const elementCount = variables.reduce((sum, variable) => sum + variable.size, 0);

  const candidates: Candidate[] = [
    { label: 'tf.train.adam', target: null, optimizer: tf.train.adam(1e-3), timesMs: [] },
    {
      label: 'NestedAdam, all tiers active ([1, 1, 1])',
      target: 1.1,
      optimizer: new NestedAdam({ tierUpdateFrequencies: [1, 1, 1], tierMap }),
      timesMs: [],
    },
    {
      label: 'NestedAdam, [1, 2, 4] drop',
      target: 0.75,
      optimizer: new NestedAdam({ tierUpdateFrequencies: [1, 2, 4], tierMap, inactiveGradients: 'drop' }),
      timesMs: [],
    },
    {
      label: 'NestedAdam, [1, 2, 4] accumulate',
      target: 0.95,
      optimizer: new NestedAdam({ tierUpdateFrequencies: [1, 2, 4], tierMap, inactiveGradients: 'accumulate' }),
      timesMs: [],
    },
    {
      label: 'NestedAdam, [1, 2, 4] mean',
      target: null,
      optimizer: new NestedAdam({ tierUpdateFrequencies: [1, 2, 4], tierMap, inactiveGradients: 'mean' }),
      timesMs: [],
    },
  ];

  // Warm-up cycles create the slots and let the engine settle.
  for (const candidate of candidates) {
    for (let cycle = 0; cycle < warmup; cycle++) {
      timeCycle(candidate.optimizer, gradients);
    }
  }

  const tensorsBefore = tf.memory().numTensors;
  for (let round = 0; round < rounds; round++) {
    for (const candidate of candidates) {
      candidate.timesMs.push(timeCycle(candidate.optimizer, gradients) / STEPS_PER_CYCLE);
    }
  }
  const tensorsAfter = tf.memory().numTensors;

  const cpuModel = cpus()[0]?.model ?? 'unknown';
  console.log(`backend: ${backend.name}; CPU: ${cpuModel}; logical CPUs: ${cpus().length}; node ${process.version}`);
  console.log(`${variables.length} LoRA variables, ${elementCount} elements; ${rounds} rounds of ${STEPS_PER_CYCLE} steps after ${warmup} warm-up cycles`);
  console.log(`tensors before timing: ${tensorsBefore}, after: ${tensorsAfter}`);
  console.log('');

  const baseline = median((candidates[0] as Candidate).timesMs);
  console.log('| optimizer | median ms/step | min ms/step | ratio to adam | target | met |');
  console.log('| --- | ---: | ---: | ---: | ---: | --- |');
  for (const candidate of candidates) {
    const ms = median(candidate.timesMs);
    const ratio = ms / baseline;
    let target = '';
    let met = '';
    if (candidate.target !== null) {
      target = `<= ${candidate.target.toFixed(2)}`;
      met = ratio <= candidate.target ? 'yes' : 'no';
    }
    console.log(
      `| ${candidate.label} | ${ms.toFixed(1)} | ${Math.min(...candidate.timesMs).toFixed(1)} | ${ratio.toFixed(2)} | ${target} | ${met} |`,
    );
  }

  for (const candidate of candidates) {
    candidate.optimizer.dispose();
  }
  tf.dispose(Object.values(gradients));
  tf.dispose(variables);
}

function createLoraVariables(): { variables: tf.Variable[]; tierMap: Record<string, number> } {
  const variables: tf.Variable[] = [];
  const tierMap: Record<string, number> = {};
  for (let layer = 0; layer < LAYERS; layer++) {
    const tier = Math.floor(layer / (LAYERS / 3));
    for (const [module, inFeatures, outFeatures] of MODULES) {
      const prefix = `model.layers.${layer}.${module}`;
      const loraA = tf.tidy(() => tf.variable(tf.randomNormal([inFeatures, RANK], 0, 0.02, 'float32', layer), true, `${prefix}.lora_A`));
      const loraB = tf.tidy(() => tf.variable(tf.randomNormal([RANK, outFeatures], 0, 0.02, 'float32', layer + 1), true, `${prefix}.lora_B`));
      for (const variable of [loraA, loraB]) {
        variables.push(variable);
        tierMap[variable.name] = tier;
      }
    }
  }
  return { variables, tierMap };
}

/** Runs one cycle of steps and returns its wall time in milliseconds. */
function timeCycle(optimizer: tf.Optimizer, gradients: tf.NamedTensorMap): number {
  const start = performance.now();
  for (let step = 0; step < STEPS_PER_CYCLE; step++) {
    optimizer.applyGradients(gradients);
  }
  return performance.now() - start;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? (sorted[middle] as number) : ((sorted[middle - 1] as number) + (sorted[middle] as number)) / 2;
}

await main();
