/**
 * Tokens per second of NestedLoRATrainer against a minimal hand-written tfjs LoRA loop, on the
 * tfjs wasm backend.
 *
 * All three candidates train the same randomly initialised Qwen2-shaped model: hidden 256, 4
 * layers, 4 heads of 64 with 2 key/value heads, intermediate 688, vocabulary 2000, and LoRA rank 8
 * on all seven projections of every layer. They see the same batches in the same order: 4 rows of
 * 128 tokens, every position after the first a target. The candidates:
 *
 * - `hand-written loop`: `model.lossAndGradients`, the gradients divided by the target-token
 *   count, and `tf.train.adam(...).applyGradients`, reading the loss once per step;
 * - `trainer, SFT`: NestedLoRATrainer with tier frequencies [1, 1, 1], so every parameter updates
 *   at every step;
 * - `trainer, nested [1, 2, 4]`: NestedLoRATrainer with frequencies [1, 2, 4] and `accumulate`.
 *
 * The trainer runs with gradient clipping (maxGradNorm 1), writes its metrics lines and emits its
 * events, but evaluates nothing and writes no checkpoint inside the timed steps. Throughput is the
 * target tokens of the timed steps divided by the wall time from the end of the last warm-up step
 * to the end of the last timed step. Each round runs every candidate once, starting with a different
 * candidate each round, so that load from other processes affects them alike. The report gives the
 * median over the rounds.
 *
 * Only one model lives at a time, because tfjs registers each LoRA variable under its adapter key.
 *
 * Run: npx tsx bench/trainer.bench.ts [--rounds 3] [--warmup 2] [--steps 6]
 */
import { mkdtemp, rm } from 'node:fs/promises';
import * as os from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

import * as tf from '@tensorflow/tfjs';

import { initBackend } from '../src/backend/index.js';
import type { NestedLearningConfigInput } from '../src/config/index.js';
import { BatchIterator, type Dataset } from '../src/data/index.js';
import { CausalLM, expectedWeightShapes, type ModelConfig } from '../src/model/index.js';
import { NestedLoRATrainer } from '../src/trainer/index.js';

const CONFIG: ModelConfig = {
  modelType: 'qwen2',
  hiddenSize: 256,
  intermediateSize: 688,
  numHiddenLayers: 4,
  numAttentionHeads: 4,
  numKeyValueHeads: 2,
  headDim: 64,
  rmsNormEps: 1e-6,
  ropeTheta: 1_000_000,
  ropeScaling: null,
  vocabSize: 2000,
  tieWordEmbeddings: true,
  attentionBias: true,
  mlpBias: false,
  torchDtype: 'float32',
  maxPositionEmbeddings: 4096,
  bosTokenId: undefined,
  eosTokenId: undefined,
};
const BATCH_SIZE = 4;
const SEQ_LENGTH = 128;
const RANK = 8;
const LEARNING_RATE = 1e-4;
const SEED = 5;

type CandidateName = 'hand-written loop' | 'trainer, SFT' | 'trainer, nested [1, 2, 4]';

interface Measurement {
  tokens: number;
  seconds: number;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      rounds: { type: 'string', default: '3' },
      warmup: { type: 'string', default: '2' },
      steps: { type: 'string', default: '6' },
    },
  });
  const rounds = Number(values.rounds);
  const warmup = Number(values.warmup);
  const steps = Number(values.steps);

  const backend = await initBackend({ backend: 'wasm' });
  const dataset = syntheticDataset(BATCH_SIZE * (warmup + steps));
  const outputDir = await mkdtemp(join(os.tmpdir(), 'nl-trainer-bench-'));

  const candidates: Record<CandidateName, (round: number) => Promise<Measurement>> = {
    'hand-written loop': () => measureHandWrittenLoop(dataset, warmup, steps),
    'trainer, SFT': (round) => measureTrainer(dataset, warmup, steps, [1, 1, 1], join(outputDir, `sft-${round}`)),
    'trainer, nested [1, 2, 4]': (round) => measureTrainer(dataset, warmup, steps, [1, 2, 4], join(outputDir, `nested-${round}`)),
  };
  const throughput: Record<CandidateName, number[]> = { 'hand-written loop': [], 'trainer, SFT': [], 'trainer, nested [1, 2, 4]': [] };

  const tensorsBefore = tf.memory().numTensors;
  try {
    const entries = Object.entries(candidates) as [CandidateName, (round: number) => Promise<Measurement>][];
    for (let round = 0; round < rounds; round += 1) {
      // Each round starts with the next candidate, so that no candidate always runs first or last.
      const order = [...entries.slice(round % entries.length), ...entries.slice(0, round % entries.length)];
      for (const [name, measure] of order) {
        const { tokens, seconds } = await measure(round);
        throughput[name].push(tokens / seconds);
        console.log(`round ${round + 1}: ${name}: ${(tokens / seconds).toFixed(1)} tokens/s`);
      }
    }
  } finally {
    await rm(outputDir, { recursive: true, force: true });
  }

  const hand = median(throughput['hand-written loop']);
  const sft = median(throughput['trainer, SFT']);
  const nested = median(throughput['trainer, nested [1, 2, 4]']);
  console.log('');
  console.log(`backend: ${backend.name}; rounds: ${rounds}; warm-up steps: ${warmup}; timed steps: ${steps}`);
  console.log(`machine: ${os.cpus().length} logical CPUs, ${os.cpus()[0]?.model ?? 'unknown CPU'}, Node ${process.version}`);
  console.log(`tensors before: ${tensorsBefore}, after: ${tf.memory().numTensors}`);
  console.log('');
  console.log('| candidate | median tokens/s | ratio | target | met |');
  console.log('| --- | ---: | ---: | ---: | --- |');
  console.log(`| hand-written loop, tf.train.adam | ${hand.toFixed(1)} | 1.00 | | |`);
  console.log(`| trainer, SFT (frequencies [1, 1, 1]) | ${sft.toFixed(1)} | ${(sft / hand).toFixed(2)} vs hand-written | >= 0.95 | ${sft / hand >= 0.95 ? 'yes' : 'no'} |`);
  console.log(
    `| trainer, nested [1, 2, 4] | ${nested.toFixed(1)} | ${(nested / hand).toFixed(2)} vs hand-written, ${(nested / sft).toFixed(2)} vs SFT | ` +
      `>= 0.95, >= 1.00 vs SFT | ${nested / hand >= 0.95 && nested / sft >= 1 ? 'yes' : 'no'} |`,
  );
  console.log(`load average at the end: ${os.loadavg().map((load) => load.toFixed(1)).join(' ')}`);
}

/** Times the minimal loop: lossAndGradients, gradients / tokens, tf.train.adam. */
async function measureHandWrittenLoop(dataset: Dataset, warmup: number, steps: number): Promise<Measurement> {
  const model = createModel();
  const optimizer = tf.train.adam(LEARNING_RATE);
  const iterator = new BatchIterator(dataset, { batchSize: BATCH_SIZE, seed: SEED });
  const variableNames = new Map([...model.loraParameters].map(([key, variable]) => [key, variable.name]));

  let tokens = 0;
  let started = 0;
  try {
    for (let step = 1; step <= warmup + steps; step += 1) {
      const batch = iterator.nextBatch();
      const { lossSum, tokenCount, grads } = model.lossAndGradients(batch, { training: true });
      tf.tidy(() => {
        const scaled = Object.entries(grads).map(([key, gradient]) => ({
          name: variableNames.get(key) as string,
          tensor: tf.div(gradient, tokenCount),
        }));
        optimizer.applyGradients(scaled);
      });
      lossSum.dataSync();
      tf.dispose([lossSum, ...Object.values(grads)]);

      if (step === warmup) {
        started = performance.now();
      } else if (step > warmup) {
        tokens += tokenCount;
      }
    }
    return { tokens, seconds: (performance.now() - started) / 1000 };
  } finally {
    optimizer.dispose();
    model.dispose();
  }
}

/** Times NestedLoRATrainer with the given tier frequencies, from its step events. */
async function measureTrainer(
  dataset: Dataset,
  warmup: number,
  steps: number,
  tierUpdateFrequencies: number[],
  outputDir: string,
): Promise<Measurement> {
  const model = createModel();
  const config: NestedLearningConfigInput = {
    baseModelPath: 'injected',
    trainDataPath: 'injected',
    outputDir,
    experimentName: 'bench',
    tierUpdateFrequencies,
    inactiveGradients: 'accumulate',
    loraRank: RANK,
    loraAlpha: 16,
    learningRate: LEARNING_RATE,
    batchSize: BATCH_SIZE,
    numSteps: warmup + steps,
    maxGradNorm: 1,
    evalEvery: 0,
    checkpointEvery: 0,
    seed: SEED,
  };
  const trainer = new NestedLoRATrainer(config, { model, datasets: { train: dataset } });

  let tokens = 0;
  let started = 0;
  let ended = 0;
  try {
    await trainer.setup();
    trainer.on('step', (record) => {
      if (record.step === warmup) {
        started = performance.now();
      } else if (record.step > warmup) {
        tokens += record.tokens;
        ended = performance.now();
      }
    });
    await trainer.train();
    return { tokens, seconds: (ended - started) / 1000 };
  } finally {
    trainer.dispose();
    model.dispose();
  }
}

/** Builds the model from seeded random weights; every call gives the same weights and LoRA initialisation. */
function createModel(): CausalLM {
  const weights = tf.tidy(() => {
    const tensors: Record<string, tf.Tensor> = {};
    let index = 0;
    for (const [name, shape] of Object.entries(expectedWeightShapes(CONFIG))) {
      index += 1;
      tensors[name] = name.endsWith('norm.weight') ? tf.ones(shape) : tf.randomNormal(shape, 0, 0.02, 'float32', SEED + index);
    }
    return tensors;
  });
  return CausalLM.fromWeights({ config: CONFIG, weights, lora: { rank: RANK, scale: 2, seed: SEED } });
}

/** Samples of random token ids in which every position after the first is a target. */
function syntheticDataset(sampleCount: number): Dataset {
  let state = SEED;
  const nextToken = (): number => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state % CONFIG.vocabSize;
  };
  const samples = Array.from({ length: sampleCount }, () => {
    const inputIds = Array.from({ length: SEQ_LENGTH }, nextToken);
    return { inputIds, targetMask: inputIds.map((_, position) => (position === 0 ? 0 : 1)), format: 'text' as const };
  });
  return {
    source: 'synthetic',
    samples,
    padTokenId: 0,
    stats: {
      lines: sampleCount,
      samples: sampleCount,
      skippedInvalid: 0,
      truncated: 0,
      skippedNoTargets: 0,
      tokens: sampleCount * SEQ_LENGTH,
      targetTokens: sampleCount * (SEQ_LENGTH - 1),
      format: 'text',
    },
  };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? (sorted[middle] as number) : ((sorted[middle - 1] as number) + (sorted[middle] as number)) / 2;
}

await main();
