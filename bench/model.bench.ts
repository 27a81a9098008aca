/**
 * Benchmark of one LoRA training step (forward and backward, no optimizer) of CausalLM on the
 * tfjs wasm backend, against the backend's own tf.matMul throughput at the model's product shapes.
 *
 * Run with `npx tsx bench/model.bench.ts` (add `--profile` for a per-kernel time breakdown,
 * `--backend cpu` for another backend).
 *
 * Achieved GFLOP/s = analytic FLOPs of the step / median step time. The FLOP count covers the
 * model's matrix products only, 2 * m * k * n each. They are the forward pass, the input gradients
 * the backward pass needs, and the LoRA products. Elementwise work is not counted, and neither are
 * the rotate_half products, which are an implementation detail of this model.
 *
 * Reference GFLOP/s = the same FLOPs / the time tf.matMul takes for the same list of products,
 * each run alone with operands made beforehand. Two references are printed: at the model's shapes
 * (attention products as one batched `[batch * heads, ...]` tf.matMul, as the model's tensors are
 * shaped), and an all-2-D one where attention products are timed as one 2-D tf.matMul per head.
 */
import * as tf from '@tensorflow/tfjs';
import * as os from 'node:os';

import { initBackend, type BackendName } from '../src/backend/index.js';
import { CausalLM, type ModelConfig } from '../src/model/index.js';

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
const BATCH = 4;
const SEQ = 128;
const RANK = 8;
const WARMUP = 2;
const RUNS = 9;

/** One matrix product of the step: `batch` independent `[m, k] @ [k, n]` products, `count` times. */
interface Product {
  name: string;
  batch: number;
  m: number;
  k: number;
  n: number;
  count: number;
}

function productFlops(products: readonly Product[]): number {
  return products.reduce((sum, p) => sum + 2 * p.batch * p.m * p.k * p.n * p.count, 0);
}

/**
 * Lists the products of one training step with LoRA on every projection of every layer.
 * Input gradients are needed everywhere except the layer-0 q/k/v projections, whose input comes
 * from the frozen embedding.
 */
function stepProducts(config: ModelConfig, batch: number, seq: number, rank: number): Product[] {
  const tokens = batch * seq;
  const hidden = config.hiddenSize;
  const queryWidth = config.numAttentionHeads * config.headDim;
  const keyValueWidth = config.numKeyValueHeads * config.headDim;
  const inner = config.intermediateSize;
  const layers = config.numHiddenLayers;
  const projections: [string, number, number][] = [
    ['q', hidden, queryWidth],
    ['k', hidden, keyValueWidth],
    ['v', hidden, keyValueWidth],
    ['o', queryWidth, hidden],
    ['gate', hidden, inner],
    ['up', hidden, inner],
    ['down', inner, hidden],
  ];

  const products: Product[] = [];
  for (const [name, inFeatures, outFeatures] of projections) {
    const inputGradientLayers = name === 'q' || name === 'k' || name === 'v' ? layers - 1 : layers;
    products.push({ name: `${name} forward`, batch: 1, m: tokens, k: inFeatures, n: outFeatures, count: layers });
    products.push({ name: `${name} input gradient`, batch: 1, m: tokens, k: outFeatures, n: inFeatures, count: inputGradientLayers });
    // LoRA: x @ A, (xA) @ B forward; dy @ B^T, x^T @ g, (xA)^T @ dy, g @ A^T backward.
    products.push({ name: `${name} lora x@A`, batch: 1, m: tokens, k: inFeatures, n: rank, count: layers });
    products.push({ name: `${name} lora h@B`, batch: 1, m: tokens, k: rank, n: outFeatures, count: layers });
    products.push({ name: `${name} lora dy@B^T`, batch: 1, m: tokens, k: outFeatures, n: rank, count: layers });
    products.push({ name: `${name} lora dA`, batch: 1, m: inFeatures, k: tokens, n: rank, count: layers });
    products.push({ name: `${name} lora dB`, batch: 1, m: rank, k: tokens, n: outFeatures, count: layers });
    products.push({ name: `${name} lora g@A^T`, batch: 1, m: tokens, k: rank, n: inFeatures, count: inputGradientLayers });
  }

  // Attention per (sequence, head): scores, weighted values; backward dV, dP, dQ, dK.
  const heads = batch * config.numAttentionHeads;
  const headDim = config.headDim;
  products.push({ name: 'attention QK^T', batch: heads, m: seq, k: headDim, n: seq, count: layers });
  products.push({ name: 'attention PV', batch: heads, m: seq, k: seq, n: headDim, count: layers });
  products.push({ name: 'attention backward', batch: heads, m: seq, k: seq, n: headDim, count: 4 * layers });

  products.push({ name: 'lm head forward', batch: 1, m: tokens, k: hidden, n: config.vocabSize, count: 1 });
  products.push({ name: 'lm head input gradient', batch: 1, m: tokens, k: config.vocabSize, n: hidden, count: 1 });
  return products;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] as number;
}

/** A list of products made ready to run: each entry runs one product of `count` and syncs. */
interface PreparedProducts {
  runs: { run: () => void; count: number }[];
  dispose: () => void;
}

/**
 * Makes operands for each product. `asTwoDimensional` runs batched products as one 2-D tf.matMul per
 * batch entry; otherwise they run as one batched tf.matMul.
 */
function prepareProducts(products: readonly Product[], asTwoDimensional: boolean): PreparedProducts {
  const owned: tf.Tensor[] = [];
  const keep = <T extends tf.Tensor>(tensor: T): T => {
    owned.push(tensor);
    return tensor;
  };
  const runs = products.map((p) => {
    let run: () => void;
    if (p.batch > 1 && asTwoDimensional) {
      const lefts = Array.from({ length: p.batch }, () => keep(tf.randomNormal([p.m, p.k])));
      const rights = Array.from({ length: p.batch }, () => keep(tf.randomNormal([p.k, p.n])));
      run = () => {
        const results = lefts.map((a, i) => tf.matMul(a, rights[i] as tf.Tensor));
        (results[results.length - 1] as tf.Tensor).dataSync();
        tf.dispose(results);
      };
    } else {
      const shapeA = p.batch > 1 ? [p.batch, p.m, p.k] : [p.m, p.k];
      const shapeB = p.batch > 1 ? [p.batch, p.k, p.n] : [p.k, p.n];
      const a = keep(tf.randomNormal(shapeA));
      const b = keep(tf.randomNormal(shapeB));
      run = () => {
        const result = tf.matMul(a, b);
        result.dataSync();
        result.dispose();
      };
    }
    // Warm up: the first product with a right operand packs it for XNNPACK on wasm.
    run();
    return { run, count: p.count };
  });
  return { runs, dispose: () => tf.dispose(owned) };
}

/** Times the whole list once and returns milliseconds, each product's time multiplied by its count. */
function timeProducts(prepared: PreparedProducts): number {
  let total = 0;
  for (const { run, count } of prepared.runs) {
    const start = performance.now();
    run();
    total += (performance.now() - start) * count;
  }
  return total;
}

function randomWeights(config: ModelConfig): Record<string, tf.Tensor> {
  const weights: Record<string, tf.Tensor> = {};
  let seed = 1;
  const normal = (shape: number[], std: number): tf.Tensor => tf.randomNormal(shape, 0, std, 'float32', seed++);
  const hidden = config.hiddenSize;
  const queryWidth = config.numAttentionHeads * config.headDim;
  const keyValueWidth = config.numKeyValueHeads * config.headDim;
  weights['model.embed_tokens.weight'] = normal([config.vocabSize, hidden], 0.5);
  for (let layer = 0; layer < config.numHiddenLayers; layer++) {
    const p = `model.layers.${layer}`;
    weights[`${p}.input_layernorm.weight`] = tf.ones([hidden]);
    weights[`${p}.post_attention_layernorm.weight`] = tf.ones([hidden]);
    weights[`${p}.self_attn.q_proj.weight`] = normal([queryWidth, hidden], 1 / Math.sqrt(hidden));
    weights[`${p}.self_attn.q_proj.bias`] = normal([queryWidth], 0.1);
    weights[`${p}.self_attn.k_proj.weight`] = normal([keyValueWidth, hidden], 1 / Math.sqrt(hidden));
    weights[`${p}.self_attn.k_proj.bias`] = normal([keyValueWidth], 0.1);
    weights[`${p}.self_attn.v_proj.weight`] = normal([keyValueWidth, hidden], 1 / Math.sqrt(hidden));
    weights[`${p}.self_attn.v_proj.bias`] = normal([keyValueWidth], 0.1);
    weights[`${p}.self_attn.o_proj.weight`] = normal([hidden, queryWidth], 1 / Math.sqrt(queryWidth));
    weights[`${p}.mlp.gate_proj.weight`] = normal([config.intermediateSize, hidden], 1 / Math.sqrt(hidden));
    weights[`${p}.mlp.up_proj.weight`] = normal([config.intermediateSize, hidden], 1 / Math.sqrt(hidden));
    weights[`${p}.mlp.down_proj.weight`] = normal([hidden, config.intermediateSize], 1 / Math.sqrt(config.intermediateSize));
  }
  weights['model.norm.weight'] = tf.ones([hidden]);
  return weights;
}

function makeBatch(config: ModelConfig): { inputIds: number[][]; labels: number[][]; lossMask: number[][] } {
  let state = 12345;
  const next = (): number => {
    state = (Math.imul(state, 1103515245) + 12345) >>> 0;
    return state % config.vocabSize;
  };
  const inputIds = Array.from({ length: BATCH }, () => Array.from({ length: SEQ }, next));
  const labels = inputIds.map((row) => [...row.slice(1), 0]);
  const lossMask = inputIds.map(() => Array.from({ length: SEQ }, (_, t) => (t < SEQ - 1 ? 1 : 0)));
  return { inputIds, labels, lossMask };
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const backendIndex = args.indexOf('--backend');
  const backend = (backendIndex >= 0 ? args[backendIndex + 1] : 'wasm') as BackendName;
  const profile = args.includes('--profile');
  const info = await initBackend({ backend });

  const model = CausalLM.fromWeights({ config: CONFIG, weights: randomWeights(CONFIG), lora: { rank: RANK, scale: 2, seed: 7 } });
  // Non-zero lora_b, so that the step does the same work as in the middle of training.
  const trained: Record<string, tf.Tensor> = {};
  for (const [key, variable] of model.loraParameters) {
    trained[key] = key.endsWith('lora_b') ? tf.randomNormal(variable.shape, 0, 0.01, 'float32', 3) : tf.clone(variable);
  }
  model.setLoraWeights(trained);
  tf.dispose(Object.values(trained));
  const batch = makeBatch(CONFIG);

  const step = (): void => {
    const result = model.lossAndGradients(batch, { training: false });
    result.lossSum.dataSync();
    tf.dispose([result.lossSum, ...Object.values(result.grads)]);
  };

  const products = stepProducts(CONFIG, BATCH, SEQ, RANK);
  const flops = productFlops(products);
  const batched = prepareProducts(products, false);
  const twoDimensional = prepareProducts(products, true);

  for (let i = 0; i < WARMUP; i++) {
    step();
  }

  // Rounds interleave the step and both references, so that load from other processes affects all
  // three alike; the ratios are medians over rounds.
  const before = tf.memory().numTensors;
  const stepSamples: number[] = [];
  const batchedSamples: number[] = [];
  const twoDimensionalSamples: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const start = performance.now();
    step();
    stepSamples.push(performance.now() - start);
    batchedSamples.push(timeProducts(batched));
    twoDimensionalSamples.push(timeProducts(twoDimensional));
  }
  const leaked = tf.memory().numTensors - before;
  const stepMs = median(stepSamples);
  const referenceMs = median(batchedSamples);
  const reference2dMs = median(twoDimensionalSamples);
  const ratio = median(stepSamples.map((ms, i) => (batchedSamples[i] as number) / ms));
  const ratio2d = median(stepSamples.map((ms, i) => (twoDimensionalSamples[i] as number) / ms));
  batched.dispose();
  twoDimensional.dispose();

  if (profile) {
    const report = await tf.profile(() => step());
    const byKernel = new Map<string, { ms: number; calls: number }>();
    for (const kernel of report.kernels) {
      const key = `${kernel.name} ${JSON.stringify(kernel.inputShapes)}`;
      const entry = byKernel.get(key) ?? { ms: 0, calls: 0 };
      entry.ms += typeof kernel.kernelTimeMs === 'number' ? kernel.kernelTimeMs : 0;
      entry.calls += 1;
      byKernel.set(key, entry);
    }
    const rows = [...byKernel.entries()].sort((a, b) => b[1].ms - a[1].ms).slice(0, 30);
    console.log('kernel time of one step by kernel and input shapes (tf.profile; custom ops include their inner kernels):');
    for (const [name, { ms, calls }] of rows) {
      console.log(`  ${ms.toFixed(1).padStart(8)} ms ${String(calls).padStart(5)} calls  ${name}`);
    }
  }

  const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
  console.log(`backend ${info.name} (${info.package}), ${os.cpus().length} cores (${cpu}), node ${process.version}`);
  console.log(
    `model: hidden ${CONFIG.hiddenSize}, ${CONFIG.numHiddenLayers} layers, ${CONFIG.numAttentionHeads}/${CONFIG.numKeyValueHeads} heads of ${CONFIG.headDim}, ` +
      `intermediate ${CONFIG.intermediateSize}, vocab ${CONFIG.vocabSize}; batch ${BATCH} x ${SEQ}; LoRA rank ${RANK} on all 7 projections`,
  );
  console.log(`step (forward + backward): median ${stepMs.toFixed(1)} ms of ${RUNS} (${stepSamples.map((s) => s.toFixed(0)).join(', ')})`);
  console.log(`analytic FLOPs per step: ${(flops / 1e9).toFixed(3)} GFLOP`);
  console.log(`achieved: ${(flops / stepMs / 1e6).toFixed(2)} GFLOP/s`);
  console.log(
    `tf.matMul at the model's shapes: median ${referenceMs.toFixed(1)} ms, ${(flops / referenceMs / 1e6).toFixed(2)} GFLOP/s; ratio ${ratio.toFixed(2)}`,
  );
  console.log(
    `tf.matMul, attention as 2-D products per head: median ${reference2dMs.toFixed(1)} ms, ${(flops / reference2dMs / 1e6).toFixed(2)} GFLOP/s; ratio ${ratio2d.toFixed(2)}`,
  );
  console.log(`load average at the end: ${os.loadavg().map((load) => load.toFixed(1)).join(' ')}`);
  console.log(`tensors leaked per ${RUNS} steps: ${leaked}`);
  model.dispose();
}

await main();
