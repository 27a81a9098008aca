/**
 * Behaviour of CausalLM beyond the golden comparisons: LoRA parameters, merging, the key/value
 * cache, dropout, weight checks, variable naming and tensor ownership.
 */
import * as tf from '@tensorflow/tfjs';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';

import { initBackend } from '../src/backend/index.js';
import { ArgumentError, ShapeError } from '../src/errors.js';
import { CausalLM, KVCache, type ModelConfig } from '../src/model/index.js';
import { SeededRandom } from '../src/model/random.js';
import { baseWeights, loadFixture, loraWeights, relativeError, type ModelFixture } from './fixtures/model/fixture.js';

// Every test must leave the number of live tensors as it found it.
let tensorsAtStart = 0;
beforeEach(() => {
  tensorsAtStart = tf.memory().numTensors;
});
afterEach(() => {
  expect(tf.memory().numTensors).toBe(tensorsAtStart);
});

let qwen: ModelFixture;
let llama: ModelFixture;

beforeAll(async () => {
  await initBackend({ backend: 'cpu' });
  qwen = await loadFixture('qwen2');
  llama = await loadFixture('llama');
});

afterAll(() => {
  tf.dispose(Object.values(qwen.tensors));
  tf.dispose(Object.values(llama.tensors));
});

function logitsOf(model: CausalLM, ids: number[][], mask?: number[][]): Float32Array {
  return tf.tidy(() => {
    const input = tf.tensor2d(ids, undefined, 'int32');
    const attentionMask = mask === undefined ? undefined : tf.tensor2d(mask);
    return model.forward(input, { attentionMask }).dataSync() as Float32Array;
  });
}

function withTrainedAdapter(fixture: ModelFixture, extra: { dropout?: number } = {}): CausalLM {
  const model = CausalLM.fromWeights({
    config: fixture.config,
    weights: baseWeights(fixture),
    lora: { rank: fixture.lora.rank, scale: fixture.lora.scale, targetModules: fixture.lora.target_modules, layers: fixture.lora.layers, ...extra },
  });
  const adapter = loraWeights(fixture);
  model.setLoraWeights(adapter);
  tf.dispose(Object.values(adapter));
  return model;
}

describe('CausalLM LoRA parameters', () => {
  it.each(['cpu', 'wasm'] as const)('fresh adapter keeps logits bit-identical on %s', async (backend) => {
    await initBackend({ backend });
    const base = CausalLM.fromWeights({ config: qwen.config, weights: baseWeights(qwen) });
    const adapted = CausalLM.fromWeights({ config: qwen.config, weights: baseWeights(qwen), lora: { rank: 4, scale: 2 } });

    const expected = logitsOf(base, qwen.inputs.input_ids, qwen.inputs.attention_mask);
    const actual = logitsOf(adapted, qwen.inputs.input_ids, qwen.inputs.attention_mask);
    const differing = actual.filter((value, i) => value !== expected[i]).length;

    expect(differing).toBe(0);
    base.dispose();
    adapted.dispose();
    await initBackend({ backend: 'cpu' });
  });

  it('names variables by adapter key with mlx shapes', () => {
    const model = CausalLM.fromWeights({ config: llama.config, weights: baseWeights(llama), lora: { rank: 3, scale: 1, layers: [1], targetModules: ['q_proj', 'mlp.down_proj'] } });
    const keys = [...model.loraParameters.keys()];

    expect(keys).toEqual([
      'model.layers.1.self_attn.q_proj.lora_a',
      'model.layers.1.self_attn.q_proj.lora_b',
      'model.layers.1.mlp.down_proj.lora_a',
      'model.layers.1.mlp.down_proj.lora_b',
    ]);
    const registered = tf.engine().registeredVariables;
    for (const [key, variable] of model.loraParameters) {
      expect(variable.name).toBe(key);
      expect(registered[key]).toBe(variable);
      expect(variable.trainable).toBe(true);
    }
    // q_proj: hidden 32 -> 4 heads * 8; down_proj: intermediate 48 -> hidden 32.
    expect(model.loraParameters.get('model.layers.1.self_attn.q_proj.lora_a')?.shape).toEqual([32, 3]);
    expect(model.loraParameters.get('model.layers.1.self_attn.q_proj.lora_b')?.shape).toEqual([3, 32]);
    expect(model.loraParameters.get('model.layers.1.mlp.down_proj.lora_a')?.shape).toEqual([48, 3]);
    expect(model.loraParameters.get('model.layers.1.mlp.down_proj.lora_b')?.shape).toEqual([3, 32]);
    model.dispose();
  });

  it('initialises A uniformly and B at zero', () => {
    const model = CausalLM.fromWeights({ config: llama.config, weights: baseWeights(llama), lora: { rank: 3, scale: 1, seed: 5 } });
    const a = model.loraParameters.get('model.layers.0.mlp.down_proj.lora_a') as tf.Variable;
    const b = model.loraParameters.get('model.layers.0.mlp.down_proj.lora_b') as tf.Variable;
    const values = Array.from(a.dataSync());
    // down_proj reads the intermediate size 48, so the bound is 1 / sqrt(48) = 0.1443.
    const bound = 1 / Math.sqrt(48);

    expect(Math.max(...values.map(Math.abs))).toBeLessThanOrEqual(bound);
    expect(Math.max(...values.map(Math.abs))).toBeGreaterThan(0.9 * bound);
    expect(new Set(values).size).toBe(values.length);
    expect(Array.from(b.dataSync()).every((value) => value === 0)).toBe(true);
    model.dispose();
  });

  it('draws A from the seeded generator in layer order', () => {
    const model = CausalLM.fromWeights({ config: llama.config, weights: baseWeights(llama), lora: { rank: 3, scale: 1, seed: 5 } });
    // The first parameter drawn is layer 0's q_proj lora_a ([32, 3]), element by element.
    const random = new SeededRandom(5);
    const expected = Array.from({ length: 32 * 3 }, () => Math.fround((2 * random.nextFloat() - 1) / Math.sqrt(32)));
    const actual = Array.from((model.loraParameters.get('model.layers.0.self_attn.q_proj.lora_a') as tf.Variable).dataSync());

    expect(actual).toEqual(expected);
    model.dispose();
  });

  it('gives other values for another seed', () => {
    const first = CausalLM.fromWeights({ config: llama.config, weights: baseWeights(llama), lora: { rank: 2, scale: 1, seed: 1 } });
    const firstValues = Array.from(first.loraParameters.get('model.layers.0.self_attn.q_proj.lora_a')?.dataSync() ?? []);
    first.dispose();
    const second = CausalLM.fromWeights({ config: llama.config, weights: baseWeights(llama), lora: { rank: 2, scale: 1, seed: 2 } });
    const secondValues = Array.from(second.loraParameters.get('model.layers.0.self_attn.q_proj.lora_a')?.dataSync() ?? []);
    second.dispose();

    expect(firstValues).not.toEqual(secondValues);
  });

  it('round-trips LoRA weights', () => {
    const model = withTrainedAdapter(qwen);
    const copies = model.getLoraWeights();
    const expected = loraWeights(qwen);

    for (const [key, tensor] of Object.entries(expected)) {
      expect(Array.from((copies[key] as tf.Tensor).dataSync()), key).toEqual(Array.from(tensor.dataSync()));
    }
    tf.dispose(Object.values(copies));
    // The model still works after the copies are disposed.
    expect(logitsOf(model, [[1, 2, 3]]).length).toBe(3 * qwen.config.vocabSize);
    tf.dispose(Object.values(expected));
    model.dispose();
  });

  it('rejects mismatched LoRA weights', () => {
    const model = CausalLM.fromWeights({ config: qwen.config, weights: baseWeights(qwen), lora: { rank: 2, scale: 1 } });
    const adapter = loraWeights(qwen);

    const error = (() => {
      try {
        model.setLoraWeights(adapter);
      } catch (caught) {
        return caught;
      }
      return null;
    })();

    expect(error).toBeInstanceOf(ShapeError);
    expect((error as ShapeError).code).toBe('LORA_WEIGHTS_MISMATCH');
    expect((error as Error).message).toContain('wrong shape');
    tf.dispose(Object.values(adapter));
    model.dispose();
  });

  it('sets the scale with the weights', () => {
    const model = withTrainedAdapter(qwen);
    const adapter = loraWeights(qwen);
    model.setLoraWeights(adapter, 0.5);

    expect(model.loraScale).toBe(0.5);
    tf.dispose(Object.values(adapter));
    model.dispose();
  });

  it.each([
    [{ rank: 0, scale: 1 }, 'rank'],
    [{ rank: 2, scale: Number.NaN }, 'scale'],
    [{ rank: 2, scale: 1, dropout: 1 }, 'dropout'],
    [{ rank: 2, scale: 1, targetModules: ['attn'] }, 'targetModules'],
    [{ rank: 2, scale: 1, layers: [2] }, 'layers'],
  ])('rejects invalid LoRA option %o', (lora, field) => {
    const weights = baseWeights(llama);
    const error = (() => {
      try {
        CausalLM.fromWeights({ config: llama.config, weights, lora });
      } catch (caught) {
        return caught;
      }
      return null;
    })();

    expect(error).toBeInstanceOf(ArgumentError);
    expect((error as ArgumentError).code).toBe('LORA_INVALID_OPTION');
    expect((error as ArgumentError).details.field).toBe(field);
    tf.dispose(Object.values(weights));
  });
});

describe('CausalLM merge', () => {
  it('merged logits equal the adapter logits', () => {
    const model = withTrainedAdapter(qwen);
    const unmerged = logitsOf(model, qwen.inputs.input_ids, qwen.inputs.attention_mask);
    model.merge();
    const merged = logitsOf(model, qwen.inputs.input_ids, qwen.inputs.attention_mask);

    expect(model.isMerged).toBe(true);
    expect(relativeError(merged, unmerged)).toBeLessThan(1e-5);
    model.dispose();
  });

  it('unmerge restores weights and logits', () => {
    const model = withTrainedAdapter(llama);
    const before = model.getWeights();
    const logitsBefore = logitsOf(model, llama.inputs.input_ids, llama.inputs.attention_mask);

    model.merge();
    model.unmerge();
    const after = model.getWeights();
    const logitsAfter = logitsOf(model, llama.inputs.input_ids, llama.inputs.attention_mask);

    expect(model.isMerged).toBe(false);
    for (const [name, tensor] of Object.entries(before)) {
      // One float32 rounding of W + delta, then of the difference: about 1e-7 relative.
      expect(relativeError((after[name] as tf.Tensor).dataSync(), tensor.dataSync()), name).toBeLessThan(1e-6);
    }
    expect(relativeError(logitsAfter, logitsBefore)).toBeLessThan(1e-6);
    tf.dispose([...Object.values(before), ...Object.values(after)]);
    model.dispose();
  });

  it('merges only adapted weights', () => {
    const model = withTrainedAdapter(llama);
    const before = model.getWeights();
    model.merge();
    const after = model.getWeights();

    for (const [name, tensor] of Object.entries(before)) {
      const changed = relativeError((after[name] as tf.Tensor).dataSync(), tensor.dataSync()) > 0;
      // The llama fixture adapts q_proj, v_proj and down_proj of layer 1.
      const adapted = /^model\.layers\.1\.(self_attn\.q_proj|self_attn\.v_proj|mlp\.down_proj)\.weight$/.test(name);
      expect(changed, name).toBe(adapted);
    }
    tf.dispose([...Object.values(before), ...Object.values(after)]);
    model.dispose();
  });

  it('rejects training while merged', () => {
    const model = withTrainedAdapter(qwen);
    model.merge();
    const batch = { inputIds: qwen.inputs.input_ids, labels: qwen.inputs.labels, lossMask: qwen.inputs.loss_mask };

    expect(() => model.lossAndGradients(batch)).toThrow(/unmerge\(\) first/);
    expect(() => model.merge()).toThrow(ArgumentError);
    model.unmerge();
    expect(() => model.unmerge()).toThrow(ArgumentError);
    model.dispose();
  });
});

describe('CausalLM training interface', () => {
  const batchOf = (fixture: ModelFixture) => ({
    inputIds: fixture.inputs.input_ids,
    labels: fixture.inputs.labels,
    lossMask: fixture.inputs.loss_mask,
    attentionMask: fixture.inputs.attention_mask,
  });

  it('computes gradients for LoRA parameters only', () => {
    const model = withTrainedAdapter(llama);
    const weightsBefore = model.getWeights();
    const variablesBefore = Object.keys(tf.engine().registeredVariables).sort();

    const result = model.lossAndGradients(batchOf(llama));

    expect(Object.keys(result.grads).sort()).toEqual([...model.loraParameters.keys()].sort());
    expect(Object.keys(tf.engine().registeredVariables).sort()).toEqual(variablesBefore);
    const weightsAfter = model.getWeights();
    for (const [name, tensor] of Object.entries(weightsBefore)) {
      expect(Array.from((weightsAfter[name] as tf.Tensor).dataSync()), name).toEqual(Array.from(tensor.dataSync()));
    }
    tf.dispose([result.lossSum, ...Object.values(result.grads), ...Object.values(weightsBefore), ...Object.values(weightsAfter)]);
    model.dispose();
  });

  it('accepts flat batches', () => {
    const model = withTrainedAdapter(qwen);
    const nested = model.computeLoss(batchOf(qwen));
    const flat = model.computeLoss({
      inputIds: Int32Array.from(qwen.inputs.input_ids.flat()),
      labels: Int32Array.from(qwen.inputs.labels.flat()),
      lossMask: Float32Array.from(qwen.inputs.loss_mask.flat()),
      attentionMask: Int32Array.from(qwen.inputs.attention_mask.flat()),
      batchSize: 2,
      seqLength: 7,
    });

    expect(flat.tokenCount).toBe(nested.tokenCount);
    expect(flat.lossSum.dataSync()[0]).toBe(nested.lossSum.dataSync()[0]);
    // computeLoss runs the same forward pass as the golden test of lossAndGradients.
    expect(Math.abs((nested.lossSum.dataSync()[0] as number) - qwen.expected.loss_sum) / qwen.expected.loss_sum).toBeLessThan(1e-5);
    tf.dispose([nested.lossSum, flat.lossSum]);
    model.dispose();
  });

  it('rejects a batch with ragged rows', () => {
    const model = withTrainedAdapter(qwen);
    const batch = { inputIds: [[1, 2, 3], [4, 5]], labels: [[2, 3, 0], [5, 0, 0]], lossMask: [[1, 1, 0], [1, 0, 0]] };

    expect(() => model.lossAndGradients(batch)).toThrow(ShapeError);
    model.dispose();
  });

  it('needs LoRA parameters for gradients', () => {
    const model = CausalLM.fromWeights({ config: qwen.config, weights: baseWeights(qwen) });

    expect(() => model.lossAndGradients(batchOf(qwen))).toThrow(/lora/i);
    model.dispose();
  });

  it('applies seeded dropout in training only', () => {
    const model = withTrainedAdapter(qwen, { dropout: 0.5 });
    const reference = withTrainedAdapter(qwen);
    const run = (options: { training?: boolean; dropoutSeed?: number }): Float32Array =>
      tf.tidy(() => model.forward(tf.tensor2d(qwen.inputs.input_ids, undefined, 'int32'), options).dataSync() as Float32Array);

    const evaluation = run({});
    const expected = logitsOf(reference, qwen.inputs.input_ids);
    const first = run({ training: true, dropoutSeed: 1 });
    const again = run({ training: true, dropoutSeed: 1 });
    const other = run({ training: true, dropoutSeed: 2 });

    expect(Array.from(evaluation)).toEqual(Array.from(expected));
    expect(Array.from(first)).toEqual(Array.from(again));
    expect(relativeError(first, evaluation)).toBeGreaterThan(1e-3);
    expect(relativeError(other, first)).toBeGreaterThan(1e-3);
    model.dispose();
    reference.dispose();
  });

  it('dropout gradients match finite differences', () => {
    const model = withTrainedAdapter(llama, { dropout: 0.3 });
    const batch = batchOf(llama);
    const options = { training: true, dropoutSeed: 7 };
    const key = 'model.layers.1.self_attn.v_proj.lora_a';
    const variable = model.loraParameters.get(key) as tf.Variable;
    const result = model.lossAndGradients(batch, options);
    const gradient = (result.grads[key] as tf.Tensor).dataSync();

    // Central differences of the summed loss with the same dropout masks, for three coordinates.
    const original = variable.dataSync().slice();
    const lossAt = (index: number, delta: number): number => {
      const values = original.slice();
      values[index] = (values[index] as number) + delta;
      const perturbed = tf.tensor(values, variable.shape);
      variable.assign(perturbed);
      perturbed.dispose();
      const loss = model.lossAndGradients(batch, options);
      const value = loss.lossSum.dataSync()[0] as number;
      tf.dispose([loss.lossSum, ...Object.values(loss.grads)]);
      return value;
    };
    const step = 1e-2;
    for (const index of [0, 17, 40]) {
      const numeric = (lossAt(index, step) - lossAt(index, -step)) / (2 * step);
      expect(Math.abs(numeric - (gradient[index] as number))).toBeLessThan(2e-2 * Math.max(1, Math.abs(numeric)));
    }
    const restored = tf.tensor(original, variable.shape);
    variable.assign(restored);
    restored.dispose();
    tf.dispose([result.lossSum, ...Object.values(result.grads)]);
    model.dispose();
  });
});

describe('CausalLM key/value cache', () => {
  it.each(['cpu', 'wasm'] as const)('chunked forward equals full forward on %s', async (backend) => {
    await initBackend({ backend });
    const model = withTrainedAdapter(qwen);
    const ids = qwen.inputs.left_input_ids;
    const mask = qwen.inputs.left_attention_mask;
    const full = logitsOf(model, ids, mask);
    const before = tf.memory().numTensors;

    const cache = model.createCache();
    const chunks: Float32Array[] = [];
    for (const [start, end] of [
      [0, 4],
      [4, 5],
      [5, 7],
    ] as const) {
      chunks.push(
        tf.tidy(() => {
          const input = tf.tensor2d(ids.map((row) => row.slice(start, end)), undefined, 'int32');
          const chunkMask = tf.tensor2d(mask.map((row) => row.slice(start, end)));
          return model.forward(input, { attentionMask: chunkMask, cache }).dataSync() as Float32Array;
        }),
      );
    }
    expect(cache.length).toBe(7);
    cache.dispose();
    expect(tf.memory().numTensors).toBe(before);

    // Reassemble [batch, time, vocab] from the chunks and compare at real positions.
    const vocab = qwen.config.vocabSize;
    const chunked = new Float32Array(full.length);
    let offset = 0;
    for (const [index, chunk] of chunks.entries()) {
      const width = [4, 1, 2][index] as number;
      for (let row = 0; row < 2; row++) {
        chunked.set(chunk.subarray(row * width * vocab, (row + 1) * width * vocab), (row * 7 + offset) * vocab);
      }
      offset += width;
    }
    const realRows = mask.flatMap((row, r) => row.map((flag, t) => (flag === 1 ? r * 7 + t : -1))).filter((i) => i >= 0);
    const pick = (values: Float32Array): number[] => realRows.flatMap((i) => Array.from(values.subarray(i * vocab, (i + 1) * vocab)));
    expect(relativeError(pick(chunked), pick(full))).toBeLessThan(1e-5);
    model.dispose();
    await initBackend({ backend: 'cpu' });
  });

  it('uses explicit position ids', () => {
    const model = withTrainedAdapter(qwen);
    const ids = [[3, 4, 5, 6]];
    const run = (positions: number[][]): Float32Array =>
      tf.tidy(() =>
        model.forward(tf.tensor2d(ids, undefined, 'int32'), { positionIds: tf.tensor2d(positions, undefined, 'int32') }).dataSync() as Float32Array,
      );

    const implicit = logitsOf(model, ids);
    const counted = run([[0, 1, 2, 3]]);
    const shifted = run([[3, 4, 5, 6]]);

    expect(Array.from(counted)).toEqual(Array.from(implicit));
    // Rotary attention depends only on position differences, so a shift changes the logits only
    // through float32 rounding of the angles.
    expect(relativeError(shifted, implicit)).toBeLessThan(1e-4);
    expect(relativeError(run([[0, 2, 4, 6]]), implicit)).toBeGreaterThan(1e-3);
    expect(() => run([[0, 1, -1, 2]])).toThrow(/negative/);
    model.dispose();
  });

  it('rejects another batch size', () => {
    const model = withTrainedAdapter(qwen);
    const cache = new KVCache(qwen.config.numHiddenLayers);
    tf.tidy(() => {
      model.forward(tf.tensor2d([[1, 2]], undefined, 'int32'), { cache });
    });

    expect(() => tf.tidy(() => model.forward(tf.tensor2d([[1], [2]], undefined, 'int32'), { cache }))).toThrow(/KVCache/);
    cache.dispose();
    model.dispose();
  });
});

describe('CausalLM weights and ownership', () => {
  it('reports every weight problem at once', () => {
    const weights = baseWeights(llama);
    const removed = weights['model.layers.0.mlp.up_proj.weight'] as tf.Tensor;
    delete weights['model.layers.0.mlp.up_proj.weight'];
    const extra = tf.zeros([3]);
    weights['model.layers.0.mlp.extra.weight'] = extra;
    const wrong = weights['model.norm.weight'] as tf.Tensor;
    weights['model.norm.weight'] = tf.zeros([31]);

    const error = (() => {
      try {
        CausalLM.fromWeights({ config: llama.config, weights });
      } catch (caught) {
        return caught;
      }
      return null;
    })() as ShapeError;

    expect(error).toBeInstanceOf(ShapeError);
    expect(error.code).toBe('MODEL_WEIGHTS_MISMATCH');
    expect(error.details.missing).toEqual(['model.layers.0.mlp.up_proj.weight']);
    expect(error.details.unexpected).toEqual(['model.layers.0.mlp.extra.weight']);
    expect(error.details.wrongShape).toEqual(['model.norm.weight [31], expected [32]']);
    // Nothing was disposed: the caller still owns every tensor.
    expect(Object.values(weights).some((tensor) => tensor.isDisposed)).toBe(false);
    tf.dispose([...Object.values(weights), removed, wrong]);
  });

  it('frees every tensor on dispose', () => {
    const before = tf.memory().numTensors;
    const model = withTrainedAdapter(qwen);
    tf.tidy(() => {
      model.forward(tf.tensor2d([[1, 2, 3]], undefined, 'int32'));
    });
    const result = model.lossAndGradients({ inputIds: [[1, 2, 3]], labels: [[2, 3, 4]], lossMask: [[1, 1, 1]] });
    tf.dispose([result.lossSum, ...Object.values(result.grads)]);
    model.dispose();

    expect(tf.memory().numTensors).toBe(before);
    expect(Object.keys(tf.engine().registeredVariables).filter((name) => name.startsWith('model.'))).toEqual([]);
    expect(() => tf.tidy(() => model.forward(tf.tensor2d([[1]], undefined, 'int32')))).toThrow(/disposed/);
  });

  it('rejects token ids outside the vocabulary', () => {
    const model = CausalLM.fromWeights({ config: qwen.config, weights: baseWeights(qwen) });

    expect(() => logitsOf(model, [[1, 97]])).toThrow(/outside the vocabulary/);
    model.dispose();
  });

  it('separates live models sharing adapter keys', () => {
    const before = tf.memory().numTensors;
    const first = withTrainedAdapter(qwen);
    const second = CausalLM.fromWeights({ config: qwen.config, weights: baseWeights(qwen), lora: { rank: 4, scale: 2 } });
    const key = 'model.layers.0.self_attn.q_proj.lora_a';

    expect(first.loraParameters.get(key)?.name).toBe(key);
    expect(second.loraParameters.get(key)?.name).toBe(`${key}#2`);
    const batch = { inputIds: [[1, 2, 3]], labels: [[2, 3, 4]], lossMask: [[1, 1, 1]] };
    const result = second.lossAndGradients(batch);
    expect(Object.keys(result.grads)).toContain(key);
    tf.dispose([result.lossSum, ...Object.values(result.grads)]);
    // The first model's adapter still changes its logits; the second's fresh one does not.
    expect(relativeError(logitsOf(first, [[1, 2, 3]]), logitsOf(second, [[1, 2, 3]]))).toBeGreaterThan(1e-3);

    first.dispose();
    const third = CausalLM.fromWeights({ config: qwen.config, weights: baseWeights(qwen), lora: { rank: 4, scale: 2 } });
    expect(third.loraParameters.get(key)?.name).toBe(key);
    second.dispose();
    third.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });

  it('rejects an invalid config', () => {
    const weights = baseWeights(qwen);
    const config: ModelConfig = { ...qwen.config, numKeyValueHeads: 3 };

    expect(() => CausalLM.fromWeights({ config, weights })).toThrow(/multiple of numKeyValueHeads/);
    tf.dispose(Object.values(weights));
  });
});
