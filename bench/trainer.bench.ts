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
 * events, but evaluates nothing and writes no checkpoint inside the timed steps.
 *
 * Throughput is the target tokens of the timed steps divided by the wall time from the end of the
 * last warm-up step to the end of the last timed step. It is also given per second of CPU time of
 * this process over the same steps, which other processes on a shared machine disturb less. Each
 * round runs every candidate once, starting with a different candidate each round, so that load
 * from other processes affects them alike. The report gives the median over the rounds.
 *
 * Only one model lives at a time, because tfjs registers each LoRA variable under its adapter key.
 *
 * A second measurement times single steps of the three loops on one model, interleaved step by step
 * (see measureInterleavedSteps), which resolves smaller differences on a busy machine.
 *
 * Run: npx tsx bench/trainer.bench.ts [--rounds 3] [--warmup 2] [--steps 6] [--interleaved-steps 24]
 */
import { mkdtemp, rm } from 'node:fs/promises';
import * as os from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

import * as tf from '@tensorflow/tfjs';

import { initBackend } from '../src/backend/index.js';
import type { NestedLearningConfigInput } from '../src/config/index.js';
import { BatchIterator, type Batch, type Dataset } from '../src/data/index.js';
import { CausalLM, expectedWeightShapes, type ModelConfig } from '../src/model/index.js';
import { NestedAdam } from '../src/optimizer/index.js';
import { ParameterTierScheduler } from '../src/scheduler/index.js';
import { NestedLoRATrainer, runOptimizerStep } from '../src/trainer/index.js';

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
  /** Wall time of the timed steps. */
  seconds: number;
  /** CPU time (user and system) the process spent in the timed steps. */
  cpuSeconds: number;
}

/** Returns the CPU time of this process so far, in seconds. */
function cpuSeconds(): number {
  const usage = process.cpuUsage();
  return (usage.user + usage.system) / 1e6;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      rounds: { type: 'string', default: '3' },
      warmup: { type: 'string', default: '2' },
      steps: { type: 'string', default: '6' },
      'interleaved-steps': { type: 'string', default: '24' },
    },
  });
  const rounds = Number(values.rounds);
  const warmup = Number(values.warmup);
  const steps = Number(values.steps);
  const interleavedSteps = Number(values['interleaved-steps']);

  const backend = await initBackend({ backend: 'wasm' });
  const dataset = syntheticDataset(BATCH_SIZE * (warmup + steps));
  const outputDir = await mkdtemp(join(os.tmpdir(), 'nl-trainer-bench-'));

  const candidates: Record<CandidateName, (round: number) => Promise<Measurement>> = {
    'hand-written loop': () => measureHandWrittenLoop(dataset, warmup, steps),
    'trainer, SFT': (round) => measureTrainer(dataset, warmup, steps, [1, 1, 1], join(outputDir, `sft-${round}`)),
    'trainer, nested [1, 2, 4]': (round) => measureTrainer(dataset, warmup, steps, [1, 2, 4], join(outputDir, `nested-${round}`)),
  };
  const throughput: Record<CandidateName, number[]> = { 'hand-written loop': [], 'trainer, SFT': [], 'trainer, nested [1, 2, 4]': [] };
  const cpuThroughput: Record<CandidateName, number[]> = { 'hand-written loop': [], 'trainer, SFT': [], 'trainer, nested [1, 2, 4]': [] };

  const tensorsBefore = tf.memory().numTensors;
  try {
    const entries = Object.entries(candidates) as [CandidateName, (round: number) => Promise<Measurement>][];
    for (let round = 0; round < rounds; round += 1) {
      // Each round starts with the next candidate, so that no candidate always runs first or last.
      const order = [...entries.slice(round % entries.length), ...entries.slice(0, round % entries.length)];
      for (const [name, measure] of order) {
        const { tokens, seconds, cpuSeconds } = await measure(round);
        throughput[name].push(tokens / seconds);
        cpuThroughput[name].push(tokens / cpuSeconds);
        console.log(
          `round ${round + 1}: ${name}: ${(tokens / seconds).toFixed(1)} tokens/s of wall time, ` +
            `${(tokens / cpuSeconds).toFixed(1)} tokens/s of CPU time`,
        );
      }
    }
  } finally {
    await rm(outputDir, { recursive: true, force: true });
  }

  console.log('');
  console.log(`backend: ${backend.name}; rounds: ${rounds}; warm-up steps: ${warmup}; timed steps: ${steps}`);
  console.log(`machine: ${os.cpus().length} logical CPUs, ${os.cpus()[0]?.model ?? 'unknown CPU'}, Node ${process.version}`);
  console.log(`tensors before: ${tensorsBefore}, after: ${tf.memory().numTensors}`);
  printTable('wall time', throughput);
  printTable('CPU time of this process', cpuThroughput);

  const interleaved = measureInterleavedSteps(dataset, warmup, interleavedSteps);
  printInterleavedTable(interleaved, interleavedSteps);
  console.log(`tensors at the end: ${tf.memory().numTensors}`);
  console.log(`load average at the end: ${os.loadavg().map((load) => load.toFixed(1)).join(' ')}`);
}

/** Step times in milliseconds of each candidate, by clock. */
type StepTimes = Record<CandidateName, { wall: number[]; cpu: number[] }>;

/**
 * Times single optimizer steps of the three loops on one model, step by step in turn, so that
 * load from other processes falls on all of them alike. The trainer's steps here are
 * `runOptimizerStep`, the function the trainer calls for each step, without its metrics line and
 * events, which the end-to-end measurement above includes.
 */
function measureInterleavedSteps(dataset: Dataset, warmup: number, count: number): StepTimes {
  const model = createModel();
  const variableNames = new Map([...model.loraParameters].map(([key, variable]) => [key, variable.name]));
  const shapes = new Map([...model.loraParameters].map(([key, variable]) => [key, variable.shape]));
  const nestedOptimizer = (tierUpdateFrequencies: number[]): NestedAdam =>
    new NestedAdam({
      learningRate: LEARNING_RATE,
      weightDecay: 0,
      tierUpdateFrequencies,
      inactiveGradients: 'accumulate',
      tierMap: new ParameterTierScheduler({ tierUpdateFrequencies }).assign(shapes),
    });
  const adam = tf.train.adam(LEARNING_RATE);
  const sft = nestedOptimizer([1, 1, 1]);
  const nested = nestedOptimizer([1, 2, 4]);
  const iterator = new BatchIterator(dataset, { batchSize: BATCH_SIZE, seed: SEED });

  const handStep = (batch: Batch): void => {
    const { lossSum, tokenCount, grads } = model.lossAndGradients(batch, { training: true });
    tf.tidy(() => {
      const scaled = Object.entries(grads).map(([key, gradient]) => ({
        name: variableNames.get(key) as string,
        tensor: tf.div(gradient, tokenCount),
      }));
      adam.applyGradients(scaled);
    });
    lossSum.dataSync();
    tf.dispose([lossSum, ...Object.values(grads)]);
  };
  const trainerStep = (optimizer: NestedAdam) => (batch: Batch): void => {
    runOptimizerStep({
      batches: [batch],
      computeGradients: (micro) => model.lossAndGradients(micro, { training: true }),
      optimizer,
      learningRate: LEARNING_RATE,
      maxGradNorm: 1,
    });
  };
  const candidates: [CandidateName, (batch: Batch) => void][] = [
    ['hand-written loop', handStep],
    ['trainer, SFT', trainerStep(sft)],
    ['trainer, nested [1, 2, 4]', trainerStep(nested)],
  ];

  const times: StepTimes = {
    'hand-written loop': { wall: [], cpu: [] },
    'trainer, SFT': { wall: [], cpu: [] },
    'trainer, nested [1, 2, 4]': { wall: [], cpu: [] },
  };
  try {
    for (let step = 0; step < warmup + count; step += 1) {
      const batch = iterator.nextBatch();
      const order = [...candidates.slice(step % candidates.length), ...candidates.slice(0, step % candidates.length)];
      for (const [name, run] of order) {
        const wallStart = performance.now();
        const cpuStart = cpuSeconds();
        run(batch);
        if (step >= warmup) {
          times[name].wall.push(performance.now() - wallStart);
          times[name].cpu.push((cpuSeconds() - cpuStart) * 1000);
        }
      }
    }
    return times;
  } finally {
    adam.dispose();
    sft.dispose();
    nested.dispose();
    model.dispose();
  }
}

/** Prints the median step times of the interleaved measurement and the throughput ratios they give. */
function printInterleavedTable(times: StepTimes, count: number): void {
  console.log('');
  console.log(`Interleaved single steps (${count} timed steps each, median):`);
  console.log('');
  console.log('| candidate | wall ms/step | CPU ms/step | throughput ratio, wall | throughput ratio, CPU |');
  console.log('| --- | ---: | ---: | ---: | ---: |');
  const handWall = median(times['hand-written loop'].wall);
  const handCpu = median(times['hand-written loop'].cpu);
  const sftWall = median(times['trainer, SFT'].wall);
  const sftCpu = median(times['trainer, SFT'].cpu);
  for (const name of Object.keys(times) as CandidateName[]) {
    const wall = median(times[name].wall);
    const cpu = median(times[name].cpu);
    const versusSft = name === 'trainer, nested [1, 2, 4]' ? ` (${(sftWall / wall).toFixed(3)} vs SFT)` : '';
    const versusSftCpu = name === 'trainer, nested [1, 2, 4]' ? ` (${(sftCpu / cpu).toFixed(3)} vs SFT)` : '';
    console.log(
      `| ${name} | ${wall.toFixed(1)} | ${cpu.toFixed(1)} | ${(handWall / wall).toFixed(3)}${versusSft} | ${(handCpu / cpu).toFixed(3)}${versusSftCpu} |`,
    );
  }
}

/** Prints the medians and their ratios as a Markdown table. */
function printTable(clock: string, throughput: Record<CandidateName, number[]>): void {
  const hand = median(throughput['hand-written loop']);
  const sft = median(throughput['trainer, SFT']);
  const nested = median(throughput['trainer, nested [1, 2, 4]']);
  console.log('');
  console.log(`Median tokens per second of ${clock}:`);
  console.log('');
  console.log('| candidate | median tokens/s | ratio | target | met |');
  console.log('| --- | ---: | ---: | ---: | --- |');
  console.log(`| hand-written loop, tf.train.adam | ${hand.toFixed(1)} | 1.00 | | |`);
  console.log(`| trainer, SFT (frequencies [1, 1, 1]) | ${sft.toFixed(1)} | ${(sft / hand).toFixed(2)} vs hand-written | >= 0.95 | ${sft / hand >= 0.95 ? 'yes' : 'no'} |`);
  console.log(
    `| trainer, nested [1, 2, 4] | ${nested.toFixed(1)} | ${(nested / hand).toFixed(2)} vs hand-written, ${(nested / sft).toFixed(2)} vs SFT | ` +
      `>= 0.95, >= 1.00 vs SFT | ${nested / hand >= 0.95 && nested / sft >= 1 ? 'yes' : 'no'} |`,
  );
}

/** Times the minimal loop: lossAndGradients, gradients / tokens, tf.train.adam. */
async function measureHandWrittenLoop(dataset: Dataset, warmup: number, steps: number): Promise<Measurement> {
  const model = createModel();
  const optimizer = tf.train.adam(LEARNING_RATE);
  const iterator = new BatchIterator(dataset, { batchSize: BATCH_SIZE, seed: SEED });
  const variableNames = new Map([...model.loraParameters].map(([key, variable]) => [key, variable.name]));

  let tokens = 0;
  let started = 0;
  let cpuStarted = 0;
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
        cpuStarted = cpuSeconds();
      } else if (step > warmup) {
        tokens += tokenCount;
      }
    }
    return { tokens, seconds: (performance.now() - started) / 1000, cpuSeconds: cpuSeconds() - cpuStarted };
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
  let cpuStarted = 0;
  let cpuEnded = 0;
  try {
    await trainer.setup();
    trainer.on('step', (record) => {
      if (record.step === warmup) {
        started = performance.now();
        cpuStarted = cpuSeconds();
      } else if (record.step > warmup) {
        tokens += record.tokens;
        ended = performance.now();
        cpuEnded = cpuSeconds();
      }
    });
    await trainer.train();
    return { tokens, seconds: (ended - started) / 1000, cpuSeconds: cpuEnded - cpuStarted };
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
