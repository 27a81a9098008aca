import * as tf from '@tensorflow/tfjs';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';

import {
  ArgumentError,
  bf16ToF32,
  convertAdapter,
  detectAdapterFormat,
  FileFormatError,
  loadModelConfig,
  mlxKeyToPeft,
  NestedLearningError,
  openSafetensors,
  parseLayerAdapterKey,
  peftKeyToMlx,
  readAdapter,
  readMlxAdapter,
  readPeftAdapter,
  readSafetensors,
  ShapeError,
  validateAdapter,
  writeMlxAdapter,
  writePeftAdapter,
  writeSafetensors,
  type LoraAdapter,
} from '../src/index.js';
import type { ModelConfig } from '../src/model/types.js';

const FIXTURES = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures');
const ADAPTERS = path.join(FIXTURES, 'adapters');

async function thrownAsync(action: () => Promise<unknown>): Promise<NestedLearningError> {
  try {
    await action();
  } catch (error) {
    if (!NestedLearningError.isInstance(error)) throw error;
    return error;
  }
  throw new Error('expected an error, but none was thrown');
}

function thrown(action: () => unknown): NestedLearningError {
  try {
    action();
  } catch (error) {
    if (!NestedLearningError.isInstance(error)) throw error;
    return error;
  }
  throw new Error('expected an error, but none was thrown');
}

/** Decodes the stored bytes of every tensor of a safetensors file, keyed by name. */
async function rawTensors(filePath: string): Promise<Map<string, { dtype: string; shape: number[]; bytes: number[] }>> {
  const file = await openSafetensors(filePath);
  const result = new Map<string, { dtype: string; shape: number[]; bytes: number[] }>();
  for (const entry of file.entries) {
    const raw = await file.readRaw(entry.name);
    result.set(entry.name, { dtype: raw.dtype, shape: raw.shape, bytes: Array.from(raw.data) });
  }
  await file.close();
  return result;
}

/** Reads a 2-D F32 or BF16 tensor of a file into float64 rows, without tfjs. */
async function matrixFromFile(filePath: string, name: string): Promise<number[][]> {
  const file = await openSafetensors(filePath);
  const raw = await file.readRaw(name);
  await file.close();
  const [rows, columns] = raw.shape as [number, number];
  const view = new DataView(raw.data.buffer, raw.data.byteOffset, raw.data.byteLength);
  const value = (index: number): number => (raw.dtype === 'BF16' ? bf16ToF32(view.getUint16(2 * index, true)) : view.getFloat32(4 * index, true));
  return Array.from({ length: rows }, (_, row) => Array.from({ length: columns }, (_, column) => value(row * columns + column)));
}

function transposeRows(matrix: number[][]): number[][] {
  return (matrix[0] ?? []).map((_, column) => matrix.map((row) => row[column] as number));
}

function disposeAdapter(adapter: LoraAdapter): void {
  tf.dispose(Object.values(adapter.weights));
}

async function readJson(filePath: string): Promise<Record<string, unknown>> {
  return JSON.parse(await fs.readFile(filePath, 'utf8')) as Record<string, unknown>;
}

/** Copies an adapter fixture to a temporary folder and lets `edit` change its config. */
async function copyAdapter(name: string, copyName: string, edit: (config: Record<string, unknown>) => void = () => {}): Promise<string> {
  const folder = path.join(tmpDir, copyName);
  await fs.cp(path.join(ADAPTERS, name), folder, { recursive: true });
  const config = await readJson(path.join(folder, 'adapter_config.json'));
  edit(config);
  await fs.writeFile(path.join(folder, 'adapter_config.json'), JSON.stringify(config));
  return folder;
}

let tmpDir: string;
let tinyQwen2: ModelConfig;

beforeAll(async () => {
  await tf.setBackend('cpu');
  tmpDir = await fs.mkdtemp(path.join(os.tmpdir(), 'adapters-test-'));
  tinyQwen2 = await loadModelConfig(path.join(FIXTURES, 'hf', 'tiny-qwen2'));
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

describe('adapter keys', () => {
  it('maps PEFT keys to mlx', () => {
    expect(peftKeyToMlx('base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight')).toBe('model.layers.3.self_attn.q_proj.lora_a');
    expect(peftKeyToMlx('base_model.model.model.layers.3.mlp.down_proj.lora_B.weight')).toBe('model.layers.3.mlp.down_proj.lora_b');
  });

  it('maps mlx keys to PEFT', () => {
    expect(mlxKeyToPeft('model.layers.0.self_attn.v_proj.lora_a')).toBe('base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight');
    expect(mlxKeyToPeft('model.layers.0.self_attn.v_proj.lora_b')).toBe('base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight');
  });

  it('rewrites only prefix and suffix', () => {
    const peft = 'base_model.model.model.layers.1.mlp.weight_gate.lora_A.weight';
    expect(peftKeyToMlx(peft)).toBe('model.layers.1.mlp.weight_gate.lora_a');
    expect(mlxKeyToPeft(peftKeyToMlx(peft))).toBe(peft);

    // A module path that itself contains ".lora_A.weight" keeps it: only the final suffix changes.
    const nested = 'base_model.model.model.layers.2.block.lora_A.weight.proj.lora_B.weight';
    expect(peftKeyToMlx(nested)).toBe('model.layers.2.block.lora_A.weight.proj.lora_b');
    expect(mlxKeyToPeft(peftKeyToMlx(nested))).toBe(nested);
  });

  it('rejects keys of another form', () => {
    expect(thrown(() => peftKeyToMlx('model.layers.0.self_attn.q_proj.lora_A.weight')).code).toBe('ADAPTER_KEY_INVALID');
    expect(thrown(() => peftKeyToMlx('base_model.model.model.layers.0.q_proj.lora_A.default.weight')).code).toBe('ADAPTER_KEY_INVALID');
    expect(thrown(() => mlxKeyToPeft('model.layers.0.self_attn.q_proj.weight')).code).toBe('ADAPTER_KEY_INVALID');
  });

  it('splits layer keys', () => {
    expect(parseLayerAdapterKey('model.layers.12.mlp.up_proj.lora_b')).toEqual({ layer: 12, modulePath: 'mlp.up_proj', matrix: 'lora_b' });
    expect(parseLayerAdapterKey('lm_head.lora_a')).toBeUndefined();
    expect(parseLayerAdapterKey('model.layers.01.mlp.up_proj.lora_a')).toBeUndefined();
  });
});

describe('readPeftAdapter', () => {
  it('reads the PEFT fixture', async () => {
    const folder = path.join(ADAPTERS, 'peft-tiny-qwen2');
    const adapter = await readPeftAdapter(folder);

    expect(adapter.format).toBe('peft');
    expect(adapter.rank).toBe(4);
    // lora_alpha 8 / r 4.
    expect(adapter.scale).toBe(2);
    expect(adapter.dropout).toBe(0.05);
    expect(adapter.targetModules).toEqual(['self_attn.q_proj', 'self_attn.v_proj']);
    expect(adapter.layers).toEqual([0, 1]);
    expect(adapter.config.base_model_name_or_path).toBe('tiny-qwen2');
    expect(Object.keys(adapter.weights).sort()).toEqual([
      'model.layers.0.self_attn.q_proj.lora_a',
      'model.layers.0.self_attn.q_proj.lora_b',
      'model.layers.0.self_attn.v_proj.lora_a',
      'model.layers.0.self_attn.v_proj.lora_b',
      'model.layers.1.self_attn.q_proj.lora_a',
      'model.layers.1.self_attn.q_proj.lora_b',
      'model.layers.1.self_attn.v_proj.lora_a',
      'model.layers.1.self_attn.v_proj.lora_b',
    ]);
    expect(adapter.weights['model.layers.1.self_attn.v_proj.lora_a']?.shape).toEqual([16, 4]);
    expect(adapter.weights['model.layers.1.self_attn.v_proj.lora_b']?.shape).toEqual([4, 8]);

    // Values are the transposes of the stored PEFT matrices.
    const weightsPath = path.join(folder, 'adapter_model.safetensors');
    const storedA = await matrixFromFile(weightsPath, 'base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight');
    const storedB = await matrixFromFile(weightsPath, 'base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight');
    expect(adapter.weights['model.layers.1.self_attn.v_proj.lora_a']?.arraySync()).toEqual(transposeRows(storedA));
    expect(adapter.weights['model.layers.1.self_attn.v_proj.lora_b']?.arraySync()).toEqual(transposeRows(storedB));

    expect(() => validateAdapter(adapter, tinyQwen2)).not.toThrow();
    disposeAdapter(adapter);
  });

  it('reads rsLoRA and BF16', async () => {
    const folder = path.join(ADAPTERS, 'peft-rslora-bf16');
    const adapter = await readPeftAdapter(folder);

    // use_rslora: lora_alpha 8 / sqrt(r 4) = 4.
    expect(adapter.scale).toBe(4);
    expect(adapter.layers).toEqual([1]);
    expect(adapter.targetModules).toEqual(['mlp.down_proj', 'self_attn.o_proj']);
    expect(adapter.weights['model.layers.1.mlp.down_proj.lora_a']?.shape).toEqual([32, 4]);

    const storedA = await matrixFromFile(path.join(folder, 'adapter_model.safetensors'), 'base_model.model.model.layers.1.mlp.down_proj.lora_A.weight');
    expect(adapter.weights['model.layers.1.mlp.down_proj.lora_a']?.arraySync()).toEqual(transposeRows(storedA));
    expect(() => validateAdapter(adapter, tinyQwen2)).not.toThrow();
    disposeAdapter(adapter);
  });

  it.each([
    ['DoRA', { use_dora: true }, 'ADAPTER_UNSUPPORTED'],
    ['rank_pattern', { rank_pattern: { q_proj: 8 } }, 'ADAPTER_UNSUPPORTED'],
    ['another peft_type', { peft_type: 'IA3' }, 'ADAPTER_UNSUPPORTED'],
    ['lora_only bias', { bias: 'lora_only' }, 'ADAPTER_UNSUPPORTED'],
    ['a wrong r', { r: 8 }, 'ADAPTER_RANK_MISMATCH'],
    ['excluded layers', { layers_to_transform: [0] }, 'ADAPTER_LAYERS_MISMATCH'],
    ['a string alpha', { lora_alpha: '8' }, 'ADAPTER_CONFIG_INVALID'],
  ])('rejects %s', async (label, change, code) => {
    const folder = await copyAdapter('peft-tiny-qwen2', `peft-${label.replace(/\W+/g, '-')}`, (config) => Object.assign(config, change));
    const error = await thrownAsync(() => readPeftAdapter(folder));
    expect(error).toBeInstanceOf(FileFormatError);
    expect(error.code).toBe(code);
  });

  it('rejects non-LoRA weights', async () => {
    const folder = await copyAdapter('peft-tiny-qwen2', 'peft-extra-key');
    const weightsPath = path.join(folder, 'adapter_model.safetensors');
    const { tensors } = await readSafetensors(weightsPath);
    const magnitude = tf.ones([16]);
    await writeSafetensors(weightsPath, { ...tensors, 'base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector': magnitude });
    tf.dispose([...Object.values(tensors), magnitude]);

    const error = await thrownAsync(() => readPeftAdapter(folder));
    expect(error.code).toBe('ADAPTER_KEY_UNSUPPORTED');
    expect(error.message).toContain('lora_magnitude_vector');
  });

  it('rejects a lone lora_A', async () => {
    const folder = await copyAdapter('peft-tiny-qwen2', 'peft-missing-b');
    const weightsPath = path.join(folder, 'adapter_model.safetensors');
    const { tensors } = await readSafetensors(weightsPath);
    const { 'base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight': _removed, ...rest } = tensors;
    await writeSafetensors(weightsPath, rest);
    tf.dispose(Object.values(tensors));

    const error = await thrownAsync(() => readPeftAdapter(folder));
    expect(error.code).toBe('ADAPTER_WEIGHTS_INVALID');
    expect(error.message).toContain('base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight is missing');
  });
});

describe('readMlxAdapter', () => {
  it('reads the mlx fixture', async () => {
    const adapter = await readMlxAdapter(path.join(ADAPTERS, 'mlx-tiny-qwen2'));

    expect(adapter.format).toBe('mlx');
    expect(adapter.rank).toBe(4);
    expect(adapter.scale).toBe(20);
    expect(adapter.dropout).toBe(0);
    expect(adapter.targetModules).toEqual(['mlp.up_proj', 'self_attn.q_proj', 'self_attn.v_proj']);
    expect(adapter.layers).toEqual([0, 1]);
    expect(adapter.weights['model.layers.0.mlp.up_proj.lora_b']?.shape).toEqual([4, 32]);
    expect(() => validateAdapter(adapter, tinyQwen2)).not.toThrow();
    disposeAdapter(adapter);
  });

  it('reads the old lora_layers form', async () => {
    const adapter = await readMlxAdapter(path.join(ADAPTERS, 'mlx-old'));
    expect(adapter.rank).toBe(2);
    expect(adapter.scale).toBe(10);
    expect(adapter.dropout).toBe(0.05);
    expect(adapter.layers).toEqual([1]);

    const folder = path.join(tmpDir, 'mlx-old-rewritten');
    await writeMlxAdapter(folder, adapter);
    const config = await readJson(path.join(folder, 'adapter_config.json'));
    expect(config.num_layers).toBe(1);
    expect(config.lora_layers).toBeUndefined();
    expect(config.fine_tune_type).toBe('lora');
    expect(config.lora_parameters).toEqual({ rank: 2, alpha: 16, dropout: 0.05, scale: 10, keys: ['self_attn.q_proj', 'self_attn.v_proj'] });
    expect(config.model).toBe('tiny-qwen2');
    disposeAdapter(adapter);
  });

  it('rejects DoRA', async () => {
    const folder = await copyAdapter('mlx-tiny-qwen2', 'mlx-dora', (config) => {
      config.fine_tune_type = 'dora';
    });
    expect((await thrownAsync(() => readMlxAdapter(folder))).code).toBe('ADAPTER_UNSUPPORTED');
  });

  it('rejects a wrong rank', async () => {
    const folder = await copyAdapter('mlx-tiny-qwen2', 'mlx-rank', (config) => {
      (config.lora_parameters as Record<string, unknown>).rank = 8;
    });
    const error = await thrownAsync(() => readMlxAdapter(folder));
    expect(error.code).toBe('ADAPTER_RANK_MISMATCH');
    expect(error.message).toContain('rank 8');
  });
});

describe('adapter round trips', () => {
  it('keeps PEFT -> mlx -> PEFT exact', async () => {
    const source = path.join(ADAPTERS, 'peft-tiny-qwen2');
    const mlxFolder = path.join(tmpDir, 'trip-mlx');
    const peftFolder = path.join(tmpDir, 'trip-peft');

    const fromPeft = await readPeftAdapter(source);
    await writeMlxAdapter(mlxFolder, fromPeft, { numHiddenLayers: 2 });
    const fromMlx = await readMlxAdapter(mlxFolder);
    await writePeftAdapter(peftFolder, fromMlx);

    const original = await rawTensors(path.join(source, 'adapter_model.safetensors'));
    const final = await rawTensors(path.join(peftFolder, 'adapter_model.safetensors'));
    expect([...final.keys()].sort()).toEqual([...original.keys()].sort());
    for (const [name, tensor] of original) {
      expect(final.get(name), name).toEqual(tensor);
    }

    const originalConfig = await readJson(path.join(source, 'adapter_config.json'));
    const finalConfig = await readJson(path.join(peftFolder, 'adapter_config.json'));
    for (const key of ['peft_type', 'task_type', 'r', 'lora_alpha', 'lora_dropout', 'target_modules', 'bias', 'use_rslora', 'base_model_name_or_path']) {
      expect(finalConfig[key], key).toEqual(originalConfig[key]);
    }
    expect(finalConfig.layers_to_transform).toEqual([0, 1]);
    expect(fromMlx.scale).toBe(fromPeft.scale);
    disposeAdapter(fromPeft);
    disposeAdapter(fromMlx);
  });

  it('keeps mlx -> PEFT -> mlx exact', async () => {
    const source = path.join(ADAPTERS, 'mlx-tiny-qwen2');
    const peftFolder = path.join(tmpDir, 'trip2-peft');
    const mlxFolder = path.join(tmpDir, 'trip2-mlx');

    await convertAdapter(source, peftFolder, { to: 'peft' });
    await convertAdapter(peftFolder, mlxFolder, { to: 'mlx', numHiddenLayers: 2 });

    const original = await rawTensors(path.join(source, 'adapters.safetensors'));
    const final = await rawTensors(path.join(mlxFolder, 'adapters.safetensors'));
    expect([...final.keys()].sort()).toEqual([...original.keys()].sort());
    for (const [name, tensor] of original) {
      expect(final.get(name), name).toEqual(tensor);
    }

    const peftConfig = await readJson(path.join(peftFolder, 'adapter_config.json'));
    // scale 20 with r = 4 becomes lora_alpha 80.
    expect(peftConfig.lora_alpha).toBe(80);
    expect(peftConfig.target_modules).toEqual(['q_proj', 'up_proj', 'v_proj']);
    expect(peftConfig.base_model_name_or_path).toBe('tiny-qwen2');

    const finalConfig = await readJson(path.join(mlxFolder, 'adapter_config.json'));
    expect(finalConfig.num_layers).toBe(2);
    expect(finalConfig.model).toBe('tiny-qwen2');
    expect(finalConfig.lora_parameters).toEqual({ rank: 4, scale: 20, dropout: 0, keys: ['mlp.up_proj', 'self_attn.q_proj', 'self_attn.v_proj'] });
  });

  it('keeps BF16 and rsLoRA scale', async () => {
    const source = path.join(ADAPTERS, 'peft-rslora-bf16');
    const mlxFolder = path.join(tmpDir, 'trip3-mlx');
    const peftFolder = path.join(tmpDir, 'trip3-peft');

    await convertAdapter(source, mlxFolder, { to: 'mlx', dtype: 'BF16' });
    const viaMlx = await readAdapter(mlxFolder);
    await writePeftAdapter(peftFolder, viaMlx, { dtype: 'BF16', useRslora: true });

    const original = await rawTensors(path.join(source, 'adapter_model.safetensors'));
    const final = await rawTensors(path.join(peftFolder, 'adapter_model.safetensors'));
    for (const [name, tensor] of original) {
      expect(final.get(name), name).toEqual(tensor);
    }
    const finalConfig = await readJson(path.join(peftFolder, 'adapter_config.json'));
    // scale 4 * sqrt(4) = 8, the original lora_alpha.
    expect(finalConfig.lora_alpha).toBe(8);
    expect(finalConfig.use_rslora).toBe(true);
    expect(viaMlx.scale).toBe(4);
    disposeAdapter(viaMlx);
  });

  it('detects the format', async () => {
    expect(await detectAdapterFormat(path.join(ADAPTERS, 'peft-toy'))).toBe('peft');
    expect(await detectAdapterFormat(path.join(ADAPTERS, 'mlx-old'))).toBe('mlx');

    const empty = path.join(tmpDir, 'no-adapter');
    await fs.mkdir(empty);
    await fs.writeFile(path.join(empty, 'adapter_model.bin'), '');
    const error = await thrownAsync(() => readAdapter(empty));
    expect(error.code).toBe('ADAPTER_NOT_FOUND');
    expect(error.message).toContain('safe_serialization=True');
  });
});

describe('adapter toy layer', () => {
  // x is asymmetric so that a transposed A or B changes the result.
  const x = [0.5, -1.25, 2, 0.75, -0.5, 1.5, -2, 0.25];

  /** (alpha / r) * B (A x) in float64, from the PEFT matrices as stored: A [r, in], B [out, r]. */
  function peftReference(a: number[][], b: number[][], alpha: number, rank: number): number[] {
    const ax = a.map((row) => row.reduce((total, value, i) => total + value * (x[i] as number), 0));
    return b.map((row) => (alpha / rank) * row.reduce((total, value, k) => total + value * (ax[k] as number), 0));
  }

  /** scale * (x lora_a) lora_b with tfjs, from the canonical mlx layout. */
  function adapterOutput(adapter: LoraAdapter): number[] {
    const prefix = 'model.layers.0.self_attn.q_proj';
    return tf.tidy(() => {
      const input = tf.tensor2d([x]);
      const hidden = tf.matMul(input, adapter.weights[`${prefix}.lora_a`] as tf.Tensor2D);
      return Array.from(tf.matMul(hidden, adapter.weights[`${prefix}.lora_b`] as tf.Tensor2D).mul(adapter.scale).dataSync());
    });
  }

  it('matches (alpha / r) * B A x', async () => {
    const folder = path.join(ADAPTERS, 'peft-toy');
    const config = await readJson(path.join(folder, 'adapter_config.json'));
    const weightsPath = path.join(folder, 'adapter_model.safetensors');
    const a = await matrixFromFile(weightsPath, 'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight');
    const b = await matrixFromFile(weightsPath, 'base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight');
    const reference = peftReference(a, b, config.lora_alpha as number, config.r as number);

    const adapter = await readPeftAdapter(folder);
    const mlxFolder = path.join(tmpDir, 'toy-mlx');
    await writeMlxAdapter(mlxFolder, adapter);
    const viaMlx = await readMlxAdapter(mlxFolder);

    const direct = adapterOutput(adapter);
    const converted = adapterOutput(viaMlx);
    reference.forEach((expected, index) => {
      expect(Math.abs((direct[index] as number) - expected), `direct element ${index}`).toBeLessThan(1e-6);
      expect(Math.abs((converted[index] as number) - expected), `via mlx element ${index}`).toBeLessThan(1e-6);
    });
    disposeAdapter(adapter);
    disposeAdapter(viaMlx);
  });

  it('catches a missing square transpose', async () => {
    const folder = path.join(ADAPTERS, 'peft-toy');
    const adapter = await readPeftAdapter(folder);
    const prefix = 'model.layers.0.self_attn.q_proj';
    const untransposed: LoraAdapter = {
      ...adapter,
      weights: {
        [`${prefix}.lora_a`]: tf.transpose(adapter.weights[`${prefix}.lora_a`] as tf.Tensor),
        [`${prefix}.lora_b`]: tf.transpose(adapter.weights[`${prefix}.lora_b`] as tf.Tensor),
      },
    };
    const toyModel: ModelConfig = { ...tinyQwen2, hiddenSize: 8, numAttentionHeads: 2, numKeyValueHeads: 2, headDim: 4 };

    // in = out = r = 8: the shapes cannot show the mistake, so validation passes...
    expect(() => validateAdapter(untransposed, toyModel)).not.toThrow();
    // ...but the output differs from the correct one, which the toy comparison above detects.
    const correct = adapterOutput(adapter);
    const wrong = adapterOutput(untransposed);
    const largestDifference = Math.max(...correct.map((value, index) => Math.abs(value - (wrong[index] as number))));
    expect(largestDifference).toBeGreaterThan(0.1);
    disposeAdapter(adapter);
    disposeAdapter(untransposed);
  });
});

describe('validateAdapter', () => {
  let adapter: LoraAdapter;

  beforeAll(async () => {
    adapter = await readPeftAdapter(path.join(ADAPTERS, 'peft-tiny-qwen2'));
  });

  afterAll(() => {
    disposeAdapter(adapter);
  });

  function withWeights(change: Record<string, tf.Tensor | undefined>, overrides: Partial<LoraAdapter> = {}): LoraAdapter {
    const weights = { ...adapter.weights, ...change };
    for (const [key, value] of Object.entries(change)) {
      if (value === undefined) delete weights[key];
    }
    return { ...adapter, ...overrides, weights: weights as Record<string, tf.Tensor> };
  }

  it('names a transposed matrix', () => {
    const key = 'model.layers.0.self_attn.v_proj.lora_b';
    const transposed = tf.transpose(adapter.weights[key] as tf.Tensor);
    const error = thrown(() => validateAdapter(withWeights({ [key]: transposed }), tinyQwen2));
    expect(error).toBeInstanceOf(ShapeError);
    expect(error.code).toBe('ADAPTER_SHAPE_MISMATCH');
    expect(error.message).toContain(`${key} is [8, 4], expected [4, 8] (it is transposed`);
    transposed.dispose();
  });

  it('rejects a different base model', () => {
    const wider: ModelConfig = { ...tinyQwen2, hiddenSize: 32, headDim: 8 };
    const error = thrown(() => validateAdapter(adapter, wider));
    // q_proj of the wider model is [32, 32], so lora_a must be [32, 4].
    expect(error.message).toContain('model.layers.0.self_attn.q_proj.lora_a is [16, 4], expected [32, 4]');
  });

  it('rejects a layer beyond the model', () => {
    const error = thrown(() => validateAdapter(adapter, { ...tinyQwen2, numHiddenLayers: 1 }));
    expect(error.message).toContain('is for layer 1, but the model has 1 layers');
  });

  it('rejects an unknown module', () => {
    const extraA = tf.zeros([16, 4]);
    const extraB = tf.zeros([4, 16]);
    const error = thrown(() =>
      validateAdapter(withWeights({ 'model.layers.0.self_attn.rotary.lora_a': extraA, 'model.layers.0.self_attn.rotary.lora_b': extraB }), tinyQwen2),
    );
    expect(error.message).toContain('"self_attn.rotary", which is not a linear layer');
    tf.dispose([extraA, extraB]);
  });

  it('rejects a missing partner', () => {
    const error = thrown(() => validateAdapter(withWeights({ 'model.layers.1.self_attn.q_proj.lora_b': undefined }), tinyQwen2));
    expect(error.message).toContain('model.layers.1.self_attn.q_proj.lora_b is missing');
  });

  it('rejects a rank that disagrees', () => {
    const error = thrown(() => validateAdapter(withWeights({}, { rank: 8 }), tinyQwen2));
    expect(error.message).toContain('expected [16, 8]');
    expect(error.details.problems).toHaveLength(8);
  });
});

describe('adapter writers', () => {
  it('derives lora_alpha from the scale', async () => {
    const adapter = await readPeftAdapter(path.join(ADAPTERS, 'peft-tiny-qwen2'));
    const folder = path.join(tmpDir, 'alpha-derived');

    await writePeftAdapter(folder, { ...adapter, scale: 1 / 3 }, { baseModelNameOrPath: 'Qwen/Qwen2.5-0.5B' });
    const config = await readJson(path.join(folder, 'adapter_config.json'));
    // 1/3 * 4 = 1.3333...: not within 1e-9 of an integer, so it is written as is.
    expect(config.lora_alpha).toBe((1 / 3) * 4);
    expect(config.base_model_name_or_path).toBe('Qwen/Qwen2.5-0.5B');

    await writePeftAdapter(folder, { ...adapter, scale: 0.1 * 3 }, { alpha: 1.2 });
    expect((await readJson(path.join(folder, 'adapter_config.json'))).lora_alpha).toBe(1.2);
    disposeAdapter(adapter);
  });

  it('rejects an alpha that changes the scale', async () => {
    const adapter = await readPeftAdapter(path.join(ADAPTERS, 'peft-tiny-qwen2'));
    const error = await thrownAsync(() => writePeftAdapter(path.join(tmpDir, 'alpha-bad'), adapter, { alpha: 16 }));
    expect(error).toBeInstanceOf(ArgumentError);
    expect(error.code).toBe('ADAPTER_ALPHA_MISMATCH');
    expect(error.message).toContain('pass 8');
    disposeAdapter(adapter);
  });

  it('rejects num_layers that skip weights', async () => {
    const adapter = await readPeftAdapter(path.join(ADAPTERS, 'peft-tiny-qwen2'));
    const error = await thrownAsync(() => writeMlxAdapter(path.join(tmpDir, 'layers-bad'), adapter, { numLayers: 1, numHiddenLayers: 2 }));
    expect(error.code).toBe('ADAPTER_NUM_LAYERS_INVALID');
    expect(error.message).toContain('layer 0');
    expect(error.message).toContain('Use numLayers 2 or -1');
    disposeAdapter(adapter);
  });

  it('defaults num_layers to all layers', async () => {
    const adapter = await readPeftAdapter(path.join(ADAPTERS, 'peft-rslora-bf16'));
    const all = path.join(tmpDir, 'layers-all');
    const covering = path.join(tmpDir, 'layers-covering');

    await writeMlxAdapter(all, adapter);
    await writeMlxAdapter(covering, adapter, { numHiddenLayers: 2 });

    expect((await readJson(path.join(all, 'adapter_config.json'))).num_layers).toBe(-1);
    // Weights only on layer 1 of 2: the last one layer covers them.
    expect((await readJson(path.join(covering, 'adapter_config.json'))).num_layers).toBe(1);
    disposeAdapter(adapter);
  });
});
