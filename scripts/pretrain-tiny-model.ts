/**
 * Pretrains the embedded tiny Qwen2 model (`examples/models/tiny-qwen2/`) on the old domain.
 *
 * Full-parameter training on `examples/data/press/train.jsonl` with the project's tokenizer, batching,
 * rotary tables, attention, SwiGLU, cross-entropy and `NestedAdam` (one tier, every step). `CausalLM`
 * computes gradients for LoRA parameters only, so the projections, norms and the tied embedding are
 * trained here through small ops of this script that also return weight gradients. Validation losses
 * are computed by `CausalLM.computeLoss` on the press validation split, for the randomly initialised
 * model and for the pretrained one, and the script stops with an error when its own forward pass and
 * `CausalLM` disagree on a batch.
 *
 * Writes `model.safetensors` (float32) next to `config.json` and prints the wall time, the losses and
 * the uniform baseline ln(vocab).
 *
 * Run: `npx tsx scripts/pretrain-tiny-model.ts [--steps N] [--batch-size N] [--backend cpu|wasm]
 * [--seed N] [--out folder]` (or `npm run pretrain:tiny`), after `npm run data:brown` and
 * `npm run tokenizer:train`.
 */
import * as tf from '@tensorflow/tfjs';
import { cpus } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';

import { initBackend } from '../src/backend/index.js';
import { BatchIterator, evalBatches, type Batch } from '../src/data/batching.js';
import { loadDataset, type Dataset } from '../src/data/dataset.js';
import { loadTokenizer } from '../src/data/tokenizer.js';
import { writeSafetensors } from '../src/io/safetensors.js';
import { CausalLM } from '../src/model/causal-lm.js';
import { expectedWeightShapes } from '../src/model/checkpoint.js';
import { loadModelConfig } from '../src/model/hf-config.js';
import { maskedCrossEntropy } from '../src/model/loss.js';
import { applyRotary, attention, matMulTransposeA, matMulTransposeB, swiGlu } from '../src/model/ops.js';
import { RotaryTables } from '../src/model/rope.js';
import type { ModelConfig } from '../src/model/types.js';
import { NestedAdam } from '../src/optimizer/nested-adam.js';

const MODEL_FOLDER = resolve(import.meta.dirname, '../examples/models/tiny-qwen2');
const DATA_FOLDER = resolve(import.meta.dirname, '../examples/data/press');

/** Training settings; each can be overridden by the flag of the same name in kebab case. */
const DEFAULTS = {
  /** Optimizer steps. */
  steps: 600,
  /** Passages per step. */
  batchSize: 16,
  /** Passages longer than this many tokens are cut (the press passages are about 100 to 250 tokens). */
  maxSeqLength: 256,
  /** Peak learning rate, reached after the warmup and decayed by a cosine to a tenth of it. */
  learningRate: 3e-3,
  warmupSteps: 50,
  /** AdamW weight decay of the matrices; norms and biases take none. */
  weightDecay: 0.1,
  /** Global gradient-norm limit. */
  maxGradNorm: 1,
  /** Seed of the initial weights and of the batch order. */
  seed: 0,
  /** Steps between progress lines. */
  logEvery: 50,
  /**
   * tfjs backend. On 2 cores the cpu backend did not finish one forward pass over the validation
   * split (35,834 tokens) in 300 s, while wasm took about 10 s.
   */
  backend: 'wasm' as 'cpu' | 'wasm',
};

type Settings = typeof DEFAULTS & { out: string };

/** Trainable weights under Hugging Face names; projections are stored `[in, out]`, the transpose of the file layout. */
type Parameters = Map<string, tf.Variable>;

/** Standard deviation of the initial matrices: `initializer_range` of Qwen2 configs. */
const INITIALIZER_RANGE = 0.02;

async function main(): Promise<void> {
  const settings = readSettings();
  const backend = await initBackend({ backend: settings.backend });
  const config = await loadModelConfig(MODEL_FOLDER);
  const tokenizer = await loadTokenizer(MODEL_FOLDER);

  const loadOptions = { tokenizer, maxSeqLength: settings.maxSeqLength };
  const train = await loadDataset(join(DATA_FOLDER, 'train.jsonl'), loadOptions);
  const valid = await loadDataset(join(DATA_FOLDER, 'valid.jsonl'), loadOptions);
  console.log(
    `backend ${backend.name}, ${cpus().length} cores (${cpus()[0]?.model ?? 'unknown CPU'}), node ${process.version}\n` +
      `press train: ${train.samples.length} passages, ${train.stats.tokens} tokens; ` +
      `valid: ${valid.samples.length} passages, ${valid.stats.tokens} tokens`,
  );

  const parameters = initialParameters(config, settings.seed);
  const uniformLoss = Math.log(config.vocabSize);
  const initialLoss = validationLoss(config, parameters, valid);
  console.log(`validation loss of the random initial model: ${initialLoss.toFixed(4)} (uniform ln(${config.vocabSize}) = ${uniformLoss.toFixed(4)})`);

  checkAgreement(config, parameters, valid);
  const started = performance.now();
  pretrain(config, parameters, train, valid, settings);
  const seconds = (performance.now() - started) / 1000;

  checkAgreement(config, parameters, valid);
  const finalLoss = validationLoss(config, parameters, valid);
  const outFile = join(settings.out, 'model.safetensors');
  await writeSafetensors(outFile, exportWeights(config, parameters), {
    metadata: { format: 'pt', source: 'scripts/pretrain-tiny-model.ts', steps: String(settings.steps), seed: String(settings.seed) },
  });

  console.log(
    `\ntrained ${settings.steps} steps in ${(seconds / 60).toFixed(1)} min (${seconds.toFixed(0)} s) on ${backend.name}\n` +
      `validation loss (press valid): ${finalLoss.toFixed(4)}, random initial model: ${initialLoss.toFixed(4)}, ` +
      `uniform: ${uniformLoss.toFixed(4)}\nwrote ${outFile}`,
  );
  tf.dispose([...parameters.values()]);
}

function readSettings(): Settings {
  const { values } = parseArgs({
    options: {
      steps: { type: 'string' },
      'batch-size': { type: 'string' },
      'max-seq-length': { type: 'string' },
      'learning-rate': { type: 'string' },
      'warmup-steps': { type: 'string' },
      'weight-decay': { type: 'string' },
      'max-grad-norm': { type: 'string' },
      seed: { type: 'string' },
      'log-every': { type: 'string' },
      backend: { type: 'string' },
      out: { type: 'string' },
    },
  });
  const number = (flag: string, fallback: number): number => {
    const text = values[flag as keyof typeof values];
    if (text === undefined) {
      return fallback;
    }
    const value = Number(text);
    if (!Number.isFinite(value) || value < 0) {
      throw new Error(`Invalid --${flag} ${text}: expected a non-negative number.`);
    }
    return value;
  };
  const backend = values.backend ?? DEFAULTS.backend;
  if (backend !== 'cpu' && backend !== 'wasm') {
    throw new Error(`Invalid --backend ${backend}: expected cpu or wasm.`);
  }
  return {
    steps: number('steps', DEFAULTS.steps),
    batchSize: number('batch-size', DEFAULTS.batchSize),
    maxSeqLength: number('max-seq-length', DEFAULTS.maxSeqLength),
    learningRate: number('learning-rate', DEFAULTS.learningRate),
    warmupSteps: number('warmup-steps', DEFAULTS.warmupSteps),
    weightDecay: number('weight-decay', DEFAULTS.weightDecay),
    maxGradNorm: number('max-grad-norm', DEFAULTS.maxGradNorm),
    seed: number('seed', DEFAULTS.seed),
    logEvery: number('log-every', DEFAULTS.logEvery),
    backend,
    out: resolve(values.out ?? MODEL_FOLDER),
  };
}

/** Draws the initial weights: matrices from N(0, 0.02^2), biases 0, norm weights 1, as `transformers` initialises Qwen2. */
function initialParameters(config: ModelConfig, seed: number): Parameters {
  const parameters: Parameters = new Map();
  let index = 0;
  for (const [name, shape] of Object.entries(expectedWeightShapes(config))) {
    index++;
    const value = tf.tidy(() => {
      if (name.endsWith('norm.weight')) {
        return tf.ones(shape);
      }
      if (name.endsWith('.bias')) {
        return tf.zeros(shape);
      }
      const drawn = tf.randomNormal(shape, 0, INITIALIZER_RANGE, 'float32', seed * 1000 + index);
      return isProjection(name) ? tf.transpose(drawn) : drawn;
    });
    parameters.set(name, tf.variable(value, true, `pretrain/${name}`));
    value.dispose();
  }
  return parameters;
}

function isProjection(name: string): boolean {
  return name.startsWith('model.layers.') && name.endsWith('_proj.weight');
}

/** Returns the weights under Hugging Face names and in Hugging Face layout; the caller owns them. */
function exportWeights(config: ModelConfig, parameters: Parameters): Record<string, tf.Tensor> {
  const result: Record<string, tf.Tensor> = {};
  for (const name of Object.keys(expectedWeightShapes(config))) {
    const variable = parameters.get(name) as tf.Variable;
    result[name] = isProjection(name) ? tf.transpose(variable) : tf.clone(variable);
  }
  return result;
}

function pretrain(config: ModelConfig, parameters: Parameters, train: Dataset, valid: Dataset, settings: Settings): void {
  const tierMap = new Map([...parameters].map(([name, variable]) => [variable.name, isMatrix(name) ? 0 : 1]));
  const optimizer = new NestedAdam({
    learningRate: (step) => learningRateAt(step, settings),
    beta2: 0.95,
    tiers: [
      { frequency: 1, weightDecay: settings.weightDecay },
      { frequency: 1, weightDecay: 0 },
    ],
    tierMap,
  });
  const batches = new BatchIterator(train, { batchSize: settings.batchSize, seed: settings.seed, shuffle: true, dropLast: true });
  const rotary = new RotaryTables(config, settings.maxSeqLength);
  const variables = [...parameters.values()];

  let started = performance.now();
  let lossSum = 0;
  let lossCount = 0;
  let tokens = 0;
  for (let step = 1; step <= settings.steps; step++) {
    const batch = batches.next().value as Batch;
    const loss = tf.tidy(() => {
      const { value, grads } = tf.variableGrads(() => meanLoss(config, parameters, rotary, batch), variables);
      optimizer.applyGradients(clipByGlobalNorm(grads, settings.maxGradNorm));
      return value.dataSync()[0] as number;
    });
    lossSum += loss;
    lossCount += 1;
    tokens += batch.tokenCount;

    if (step % settings.logEvery === 0 || step === settings.steps) {
      const seconds = (performance.now() - started) / 1000;
      const line =
        `step ${step}/${settings.steps} | train loss ${(lossSum / lossCount).toFixed(4)} | ` +
        `lr ${learningRateAt(step, settings).toExponential(2)} | ${(tokens / seconds).toFixed(0)} tokens/s`;
      console.log(step % (settings.logEvery * 4) === 0 ? `${line} | valid loss ${validationLoss(config, parameters, valid).toFixed(4)}` : line);
      lossSum = 0;
      lossCount = 0;
      tokens = 0;
      started = performance.now();
    }
  }
  optimizer.dispose();
  rotary.dispose();
}

function isMatrix(name: string): boolean {
  return name.endsWith('.weight') && !name.endsWith('norm.weight');
}

/** Returns the learning rate of a step: linear warmup, then a cosine from the peak down to a tenth of it. */
function learningRateAt(step: number, settings: Settings): number {
  const peak = settings.learningRate;
  if (step <= settings.warmupSteps) {
    return (peak * step) / settings.warmupSteps;
  }
  const progress = (step - settings.warmupSteps) / Math.max(1, settings.steps - settings.warmupSteps);
  return peak * (0.1 + 0.45 * (1 + Math.cos(Math.PI * Math.min(1, progress))));
}

function clipByGlobalNorm(grads: tf.NamedTensorMap, maxNorm: number): tf.NamedTensorMap {
  const squares = Object.values(grads).map((gradient) => tf.sum(tf.square(gradient)));
  const norm = Math.sqrt(tf.addN(squares).dataSync()[0] as number);
  if (norm <= maxNorm) {
    return grads;
  }
  const factor = maxNorm / norm;
  return Object.fromEntries(Object.entries(grads).map(([name, gradient]) => [name, tf.mul(gradient, factor)]));
}

/** Computes the mean token cross-entropy of a batch with this script's differentiable forward pass. */
function meanLoss(config: ModelConfig, parameters: Parameters, rotary: RotaryTables, batch: Batch): tf.Scalar {
  const { batchSize, seqLength } = batch;
  const logits = forward(config, parameters, rotary, batch.inputIds, batchSize, seqLength);
  const labels = tf.tensor2d(batch.labels, [batchSize, seqLength], 'int32');
  const lossMask = tf.tensor2d(batch.lossMask, [batchSize, seqLength], 'float32');
  const { sum, tokenCount } = maskedCrossEntropy(logits, labels, lossMask);
  return tf.div(sum, tokenCount);
}

/**
 * Computes logits `[batch, time, vocab]` as `CausalLM` does for right-padded rows: positions count from
 * 0, and the causal mask alone keeps real tokens from reading the padding after them.
 */
function forward(config: ModelConfig, parameters: Parameters, rotary: RotaryTables, ids: Int32Array, batch: number, time: number): tf.Tensor3D {
  const weight = (name: string): tf.Tensor => parameters.get(name) as tf.Tensor;
  const { headDim, numAttentionHeads: heads, numKeyValueHeads: kvHeads, rmsNormEps: epsilon } = config;
  const rows = batch * time;

  const [cosTable, sinTable] = rotary.tables(time);
  const cos = tf.reshape(tf.slice(cosTable, [0, 0], [time, headDim]), [1, time, 1, headDim]) as tf.Tensor4D;
  const sin = tf.reshape(tf.slice(sinTable, [0, 0], [time, headDim]), [1, time, 1, headDim]) as tf.Tensor4D;
  const causalMask = causalAdditiveMask(time);
  const allInputs = { query: true, key: true, value: true };

  const embedding = weight('model.embed_tokens.weight') as tf.Tensor2D;
  let hidden = embed(embedding, ids);
  for (let layer = 0; layer < config.numHiddenLayers; layer++) {
    const prefix = `model.layers.${layer}`;
    const project = (module: string, x: tf.Tensor2D): tf.Tensor2D => {
      const product = dense(x, weight(`${prefix}.${module}.weight`) as tf.Tensor2D);
      const bias = parameters.get(`${prefix}.${module}.bias`);
      return bias === undefined ? product : (tf.add(product, bias) as tf.Tensor2D);
    };

    const normed = scaledRmsNorm(hidden, weight(`${prefix}.input_layernorm.weight`), epsilon);
    const toHeads = (x: tf.Tensor2D, count: number): tf.Tensor4D => tf.reshape(x, [batch, time, count, headDim]) as tf.Tensor4D;
    const query = tf.transpose(applyRotary(toHeads(project('self_attn.q_proj', normed), heads), cos, sin, rotary.rotateHalf), [0, 2, 1, 3]) as tf.Tensor4D;
    const key = tf.transpose(applyRotary(toHeads(project('self_attn.k_proj', normed), kvHeads), cos, sin, rotary.rotateHalf), [0, 2, 1, 3]) as tf.Tensor4D;
    const value = tf.transpose(toHeads(project('self_attn.v_proj', normed), kvHeads), [0, 2, 1, 3]) as tf.Tensor4D;
    const attended = attention(query, key, value, causalMask, 1 / Math.sqrt(headDim), allInputs);
    const combined = tf.reshape(tf.transpose(attended, [0, 2, 1, 3]), [rows, heads * headDim]) as tf.Tensor2D;
    hidden = tf.add(hidden, project('self_attn.o_proj', combined));

    const normedAgain = scaledRmsNorm(hidden, weight(`${prefix}.post_attention_layernorm.weight`), epsilon);
    const activated = swiGlu(project('mlp.gate_proj', normedAgain), project('mlp.up_proj', normedAgain), { gate: true, up: true });
    hidden = tf.add(hidden, project('mlp.down_proj', activated));
  }

  hidden = scaledRmsNorm(hidden, weight('model.norm.weight'), epsilon);
  return tf.reshape(tiedHead(hidden, embedding), [batch, time, config.vocabSize]) as tf.Tensor3D;
}

/** Looks up embedding rows; the gradient is scattered into the table in JavaScript, because tfjs-wasm 4.22 lacks UnsortedSegmentSum. */
function embed(table: tf.Tensor2D, ids: Int32Array): tf.Tensor2D {
  const [vocab, hidden] = table.shape;
  const op = tf.customGrad((input) => ({
    value: tf.gather(input as tf.Tensor2D, tf.tensor1d(ids, 'int32')),
    gradFunc: (dy) => {
      const rows = (dy as tf.Tensor).dataSync() as Float32Array;
      const gradient = new Float32Array(vocab * hidden);
      ids.forEach((id, row) => {
        for (let column = 0; column < hidden; column++) {
          const index = id * hidden + column;
          gradient[index] = (gradient[index] as number) + (rows[row * hidden + column] as number);
        }
      });
      return tf.tensor2d(gradient, [vocab, hidden]);
    },
  }));
  return op(table) as tf.Tensor2D;
}

/** Computes `x @ w` for `w` `[in, out]`, with gradients for both operands. */
function dense(x: tf.Tensor2D, w: tf.Tensor2D): tf.Tensor2D {
  const op = tf.customGrad((input, matrix, save) => {
    (save as tf.GradSaveFunc)([input as tf.Tensor, matrix as tf.Tensor]);
    return {
      value: tf.matMul(input as tf.Tensor2D, matrix as tf.Tensor2D),
      gradFunc: (dy, saved) => {
        const [savedInput, savedMatrix] = saved as [tf.Tensor2D, tf.Tensor2D];
        return [matMulTransposeB(dy as tf.Tensor2D, savedMatrix), matMulTransposeA(savedInput, dy as tf.Tensor2D)];
      },
    };
  });
  return op(x, w) as tf.Tensor2D;
}

/** Computes the tied output head `hidden @ embedding^T`, with gradients for both operands. */
function tiedHead(hidden: tf.Tensor2D, embedding: tf.Tensor2D): tf.Tensor2D {
  const op = tf.customGrad((input, table, save) => {
    (save as tf.GradSaveFunc)([input as tf.Tensor, table as tf.Tensor]);
    return {
      value: matMulTransposeB(input as tf.Tensor2D, table as tf.Tensor2D),
      gradFunc: (dy, saved) => {
        const [savedInput, savedTable] = saved as [tf.Tensor2D, tf.Tensor2D];
        return [tf.matMul(dy as tf.Tensor2D, savedTable), matMulTransposeA(dy as tf.Tensor2D, savedInput)];
      },
    };
  });
  return op(hidden, embedding) as tf.Tensor2D;
}

/** Computes RMSNorm `x * rsqrt(mean(x^2) + epsilon) * weight` with tfjs's own gradients, the weight's included. */
function scaledRmsNorm(x: tf.Tensor, weight: tf.Tensor, epsilon: number): tf.Tensor2D {
  return tf.mul(tf.mul(x, tf.rsqrt(tf.add(tf.mean(tf.square(x), -1, true), epsilon))), weight) as tf.Tensor2D;
}

function causalAdditiveMask(time: number): tf.Tensor4D {
  const values = new Float32Array(time * time);
  for (let query = 0; query < time; query++) {
    for (let key = query + 1; key < time; key++) {
      values[query * time + key] = -1e9;
    }
  }
  return tf.tensor4d(values, [1, 1, time, time]);
}

/** Computes the mean token loss over the whole split with `CausalLM`, the model the library trains. */
function validationLoss(config: ModelConfig, parameters: Parameters, valid: Dataset): number {
  const model = CausalLM.fromWeights({ config, weights: exportWeights(config, parameters) });
  try {
    let lossSum = 0;
    let tokens = 0;
    for (const batch of evalBatches(valid, { batchSize: 16 })) {
      const { lossSum: sum, tokenCount } = model.computeLoss(batch);
      lossSum += sum.dataSync()[0] as number;
      sum.dispose();
      tokens += tokenCount;
    }
    return lossSum / tokens;
  } finally {
    model.dispose();
  }
}

/** Stops the script when this forward pass and `CausalLM` give different losses on the first validation batch. */
function checkAgreement(config: ModelConfig, parameters: Parameters, valid: Dataset): void {
  const batch = evalBatches(valid, { batchSize: 4, maxBatches: 1 })[0] as Batch;
  const rotary = new RotaryTables(config, batch.seqLength);
  const ours = tf.tidy(() => meanLoss(config, parameters, rotary, batch).dataSync()[0] as number);
  rotary.dispose();

  const model = CausalLM.fromWeights({ config, weights: exportWeights(config, parameters) });
  const { lossSum, tokenCount } = model.computeLoss(batch);
  const reference = (lossSum.dataSync()[0] as number) / tokenCount;
  lossSum.dispose();
  model.dispose();

  const difference = Math.abs(ours - reference) / reference;
  console.log(`forward check: this script ${ours.toFixed(6)}, CausalLM ${reference.toFixed(6)} (relative difference ${difference.toExponential(1)})`);
  if (difference > 1e-4) {
    throw new Error('The pretraining forward pass disagrees with CausalLM; the weights would not mean the same in the library.');
  }
}

await main();
