import * as tf from '@tensorflow/tfjs';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';

import {
  expectedWeightShapes,
  FileFormatError,
  loadCheckpointWeights,
  loadModelConfig,
  NestedLearningError,
  parseModelConfig,
  readSafetensors,
  ShapeError,
  writeSafetensors,
} from '../src/index.js';
import type { ModelConfig } from '../src/model/types.js';

const FIXTURES = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'hf');
const TINY_QWEN2 = path.join(FIXTURES, 'tiny-qwen2');

interface ExpectedWeight {
  shape: number[];
  sum: number;
  first: number[];
}

async function thrownAsync(action: () => Promise<unknown>): Promise<NestedLearningError> {
  try {
    await action();
  } catch (error) {
    if (!NestedLearningError.isInstance(error)) throw error;
    return error;
  }
  throw new Error('expected an error, but none was thrown');
}

let tmpDir: string;
let config: ModelConfig;
let expected: Record<string, ExpectedWeight>;

/** Copies the tiny model into a new temporary folder that a test may damage. */
async function copyTinyModel(name: string): Promise<string> {
  const folder = path.join(tmpDir, name);
  await fs.cp(TINY_QWEN2, folder, { recursive: true });
  return folder;
}

/** Writes the tiny model as one model.safetensors, after `edit` changes its tensors. */
async function writeSingleFileModel(name: string, edit: (tensors: Record<string, tf.Tensor>) => void): Promise<string> {
  const folder = path.join(tmpDir, name);
  await fs.mkdir(folder);
  await fs.copyFile(path.join(TINY_QWEN2, 'config.json'), path.join(folder, 'config.json'));
  const tensors: Record<string, tf.Tensor> = {};
  for (const shard of ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors']) {
    Object.assign(tensors, (await readSafetensors(path.join(TINY_QWEN2, shard))).tensors);
  }
  const before = new Set(Object.values(tensors));
  edit(tensors);
  await writeSafetensors(path.join(folder, 'model.safetensors'), tensors, { dtype: 'BF16' });
  tf.dispose([...before, ...Object.values(tensors)]);
  return folder;
}

beforeAll(async () => {
  await tf.setBackend('cpu');
  tmpDir = await fs.mkdtemp(path.join(os.tmpdir(), 'hf-checkpoint-test-'));
  config = await loadModelConfig(TINY_QWEN2);
  expected = JSON.parse(await fs.readFile(path.join(FIXTURES, 'tiny-qwen2.expected.json'), 'utf8')) as Record<string, ExpectedWeight>;
});

afterAll(async () => {
  await fs.rm(tmpDir, { recursive: true, force: true });
});

let tensorsBefore = 0;
beforeEach(() => {
  tensorsBefore = tf.memory().numTensors;
});
afterEach(() => {
  expect(tf.memory().numTensors).toBe(tensorsBefore);
});

describe('expectedWeightShapes', () => {
  it('lists the tiny Qwen2 weights', () => {
    const shapes = expectedWeightShapes(config);
    // The fixture has the weight names and shapes of transformers' Qwen2ForCausalLM.
    expect(Object.keys(shapes).sort()).toEqual(Object.keys(expected).sort());
    for (const [name, { shape }] of Object.entries(expected)) {
      expect(shapes[name], name).toEqual(shape);
    }
  });

  it('follows Llama bias flags', () => {
    const llama = parseModelConfig({
      model_type: 'llama',
      hidden_size: 8,
      intermediate_size: 12,
      num_hidden_layers: 1,
      num_attention_heads: 2,
      num_key_value_heads: 1,
      vocab_size: 10,
      attention_bias: true,
      mlp_bias: true,
      tie_word_embeddings: true,
    });
    const shapes = expectedWeightShapes(llama);

    expect(shapes['model.layers.0.self_attn.o_proj.bias']).toEqual([8]);
    expect(shapes['model.layers.0.self_attn.k_proj.weight']).toEqual([4, 8]);
    expect(shapes['model.layers.0.mlp.down_proj.bias']).toEqual([8]);
    expect(shapes['model.layers.0.mlp.down_proj.weight']).toEqual([8, 12]);
    expect(shapes['lm_head.weight']).toBeUndefined();
  });

  it('omits the Qwen2 o_proj bias', () => {
    const shapes = expectedWeightShapes(config);
    expect(shapes['model.layers.0.self_attn.q_proj.bias']).toEqual([16]);
    expect(shapes['model.layers.0.self_attn.o_proj.bias']).toBeUndefined();
  });
});

describe('loadCheckpointWeights', () => {
  it('loads the sharded bf16 checkpoint', async () => {
    const weights = await loadCheckpointWeights(TINY_QWEN2, config);

    expect(Object.keys(weights).sort()).toEqual(Object.keys(expected).sort());
    for (const [name, reference] of Object.entries(expected)) {
      const tensor = weights[name] as tf.Tensor;
      const values = Array.from(tensor.dataSync());
      expect(tensor.dtype, name).toBe('float32');
      expect(tensor.shape, name).toEqual(reference.shape);
      // bf16 -> f32 widening is exact, so the first values match PyTorch's exactly; the sum
      // differs only by float64 summation order.
      expect(values.slice(0, 4), name).toEqual(reference.first);
      expect(values.reduce((total, value) => total + value, 0)).toBeCloseTo(reference.sum, 9);
    }
    tf.dispose(Object.values(weights));
  });

  it('loads a single-file checkpoint', async () => {
    const folder = await writeSingleFileModel('single', () => {});
    const single = await loadCheckpointWeights(folder, config);
    const sharded = await loadCheckpointWeights(TINY_QWEN2, config);

    for (const name of Object.keys(expected)) {
      expect(Array.from(single[name]?.dataSync() ?? []), name).toEqual(Array.from(sharded[name]?.dataSync() ?? [0]));
    }
    tf.dispose([...Object.values(single), ...Object.values(sharded)]);
  });

  it('reports a missing shard', async () => {
    const folder = await copyTinyModel('missing-shard');
    await fs.rm(path.join(folder, 'model-00002-of-00002.safetensors'));

    const error = await thrownAsync(() => loadCheckpointWeights(folder, config));
    expect(error).toBeInstanceOf(FileFormatError);
    expect(error.code).toBe('CHECKPOINT_SHARD_MISSING');
    // Shard 2 contains layer 1 (12 weights with the q/k/v biases), the final norm and lm_head.
    expect(error.message).toContain('model-00002-of-00002.safetensors (14 weights)');
    expect(error.message).toContain('1 of 2 shard files');
  });

  it('reports missing and unexpected weights together', async () => {
    const folder = await writeSingleFileModel('missing-weight', (tensors) => {
      delete tensors['model.norm.weight'];
      tensors['model.extra.weight'] = tf.zeros([2]);
    });

    const error = await thrownAsync(() => loadCheckpointWeights(folder, config));
    expect(error.code).toBe('CHECKPOINT_WEIGHTS_MISMATCH');
    expect(error.message).toContain('1 missing: model.norm.weight');
    expect(error.message).toContain('1 unexpected: model.extra.weight');
    expect(error.details.missing).toEqual(['model.norm.weight']);
    expect(error.details.unexpected).toEqual(['model.extra.weight']);
  });

  it('reports a wrong shape', async () => {
    const folder = await writeSingleFileModel('wrong-shape', (tensors) => {
      tensors['model.layers.0.self_attn.k_proj.weight'] = tf.transpose(tensors['model.layers.0.self_attn.k_proj.weight'] as tf.Tensor);
    });

    const error = await thrownAsync(() => loadCheckpointWeights(folder, config));
    expect(error).toBeInstanceOf(ShapeError);
    expect(error.code).toBe('CHECKPOINT_SHAPE_MISMATCH');
    expect(error.message).toContain('model.layers.0.self_attn.k_proj.weight is [16, 8] in model.safetensors, expected [8, 16]');
  });

  it('reports a weight absent from its shard', async () => {
    const folder = await copyTinyModel('index-mismatch');
    const shardPath = path.join(folder, 'model-00002-of-00002.safetensors');
    const { tensors } = await readSafetensors(shardPath);
    const { 'model.norm.weight': norm, ...rest } = tensors;
    await writeSafetensors(shardPath, rest, { dtype: 'BF16' });
    tf.dispose(Object.values(tensors));
    expect(norm).toBeDefined();

    const error = await thrownAsync(() => loadCheckpointWeights(folder, config));
    expect(error.code).toBe('CHECKPOINT_WEIGHTS_MISMATCH');
    expect(error.message).toContain('model.norm.weight (listed in model.safetensors.index.json but absent from model-00002-of-00002.safetensors)');
  });

  it('reports a folder without weights', async () => {
    const folder = path.join(tmpDir, 'empty');
    await fs.mkdir(folder);
    await fs.writeFile(path.join(folder, 'pytorch_model.bin'), '');

    const error = await thrownAsync(() => loadCheckpointWeights(folder, config));
    expect(error.code).toBe('CHECKPOINT_NOT_FOUND');
    expect(error.message).toContain('PyTorch .bin weights');
  });

  it('rejects a shard path outside the folder', async () => {
    const folder = await copyTinyModel('traversal');
    const indexPath = path.join(folder, 'model.safetensors.index.json');
    await fs.writeFile(indexPath, JSON.stringify({ weight_map: { 'model.norm.weight': '../elsewhere.safetensors' } }));

    const error = await thrownAsync(() => loadCheckpointWeights(folder, config));
    expect(error.code).toBe('CHECKPOINT_INDEX_INVALID');
  });

  it('skips inv_freq and a tied lm_head', async () => {
    const tied: ModelConfig = { ...config, tieWordEmbeddings: true };
    const folder = await writeSingleFileModel('tied', (tensors) => {
      tensors['model.layers.0.self_attn.rotary_emb.inv_freq'] = tf.ones([2]);
    });

    const weights = await loadCheckpointWeights(folder, tied);
    expect(weights['lm_head.weight']).toBeUndefined();
    expect(weights['model.layers.0.self_attn.rotary_emb.inv_freq']).toBeUndefined();
    expect(Object.keys(weights)).toHaveLength(Object.keys(expected).length - 1);
    tf.dispose(Object.values(weights));
  });
});
