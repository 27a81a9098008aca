import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import * as tf from '@tensorflow/tfjs';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';

import { readAdapter, readMlxAdapter, readPeftAdapter, writeMlxAdapter, writePeftAdapter, type LoraAdapter } from '../src/adapters/index.js';
import { ArgumentError, FileFormatError } from '../src/errors.js';
import { loadCausalLM } from '../src/model/index.js';
import { writeTinyExperimentInputs, type TinyInputs } from './fixtures/trainer/tiny-model.js';

let root: string;
let inputs: TinyInputs;
let tensorsBefore: number;

beforeAll(async () => {
  await tf.setBackend('cpu');
  root = await mkdtemp(join(tmpdir(), 'nl-robust-files-'));
  inputs = await writeTinyExperimentInputs(root, { numHiddenLayers: 1 });
  tensorsBefore = tf.memory().numTensors;
});

afterEach(() => {
  expect(tf.memory().numTensors).toBe(tensorsBefore);
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

/** Builds a rank-2 adapter on q_proj of layer 0 of the tiny model (hidden size 16), filled with `value`. */
function tinyAdapter(value: number): LoraAdapter {
  return {
    format: 'mlx',
    rank: 2,
    scale: 2,
    dropout: 0,
    targetModules: ['self_attn.q_proj'],
    layers: [0],
    weights: {
      'model.layers.0.self_attn.q_proj.lora_a': tf.fill([16, 2], value),
      'model.layers.0.self_attn.q_proj.lora_b': tf.fill([2, 16], value),
    },
    config: {},
  };
}

async function writeAdapterPair(name: string, value: number): Promise<{ peft: string; mlx: string }> {
  const adapter = tinyAdapter(value);
  const peft = join(root, `${name}-peft`);
  const mlx = join(root, `${name}-mlx`);
  try {
    await writePeftAdapter(peft, adapter);
    await writeMlxAdapter(mlx, adapter);
  } finally {
    tf.dispose(Object.values(adapter.weights));
  }
  return { peft, mlx };
}

async function rejection(promise: Promise<unknown>): Promise<Error> {
  try {
    await promise;
  } catch (error) {
    return error as Error;
  }
  throw new Error('expected a rejection');
}

describe('adapter folder robustness', () => {
  it('reads a finite adapter', async () => {
    const { peft } = await writeAdapterPair('finite', 0.5);

    const adapter = await readAdapter(peft);
    tf.dispose(Object.values(adapter.weights));

    expect(adapter.rank).toBe(2);
  });

  it('rejects a file as adapter folder', async () => {
    // Guards against a bare ENOTDIR from fs.stat when the caller passes a file path.
    const { peft } = await writeAdapterPair('as-file', 0.5);
    const file = join(peft, 'adapter_config.json');

    for (const read of [readAdapter, readPeftAdapter, readMlxAdapter]) {
      const error = await rejection(read(file));
      expect(error).toBeInstanceOf(FileFormatError);
      expect((error as FileFormatError).code).toBe('ADAPTER_NOT_A_FOLDER');
      expect(error.message).toBe(
        `Adapter path ${file} is a file, not a folder. Pass the folder that contains adapter_config.json and the weights file.`,
      );
    }
  });

  it('rejects writing over a file', async () => {
    // Guards against a bare EEXIST from mkdir when the output path of a write is a file.
    const file = join(root, 'existing-file');
    await writeFile(file, 'not a folder');

    for (const write of [writePeftAdapter, writeMlxAdapter]) {
      const adapter = tinyAdapter(0.5);
      const error = await rejection(write(file, adapter));
      tf.dispose(Object.values(adapter.weights));

      expect(error).toBeInstanceOf(ArgumentError);
      expect((error as ArgumentError).code).toBe('ADAPTER_WRITE_FAILED');
      expect(error.message).toBe(`Cannot write the adapter to ${file}: the path or one of its parents is a file. Pass the path of a folder.`);
    }
    expect(await readFile(file, 'utf8')).toBe('not a folder');
  });

  it('rejects NaN adapter weights', async () => {
    // Guards against an adapter saved from a diverged run loading silently, after which every
    // training step is non-finite and the NaN weights are written into each new checkpoint.
    const { peft, mlx } = await writeAdapterPair('nan', Number.NaN);

    const peftError = await rejection(readAdapter(peft));
    expect(peftError).toBeInstanceOf(FileFormatError);
    expect((peftError as FileFormatError).code).toBe('ADAPTER_WEIGHTS_NON_FINITE');
    // PEFT names the tensors as its file does; 16 x 2 = 32 values each.
    expect(peftError.message).toContain(
      '2 tensor(s) contain NaN or infinite values: base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight (32 of 32 values)',
    );

    const mlxError = await rejection(readAdapter(mlx));
    expect((mlxError as FileFormatError).code).toBe('ADAPTER_WEIGHTS_NON_FINITE');
    expect(mlxError.message).toContain('model.layers.0.self_attn.q_proj.lora_a (32 of 32 values)');
    expect(mlxError.message).toContain('use an earlier checkpoint or train it again');
  });

  it('rejects infinite adapter weights', async () => {
    const { mlx } = await writeAdapterPair('infinite', Number.POSITIVE_INFINITY);

    const error = await rejection(readAdapter(mlx));

    expect((error as FileFormatError).code).toBe('ADAPTER_WEIGHTS_NON_FINITE');
  });
});

describe('model folder robustness', () => {
  it('rejects a file as model folder', async () => {
    // Guards against a bare ENOTDIR: a path ending in .json is read as the config itself, and the
    // weights were then looked up under the file.
    const file = join(inputs.modelDir, 'config.json');

    const error = await rejection(loadCausalLM(file, { lora: { rank: 2, scale: 1, targetModules: ['q_proj'] } }));

    expect(error).toBeInstanceOf(FileFormatError);
    expect((error as FileFormatError).code).toBe('CHECKPOINT_NOT_A_FOLDER');
    expect(error.message).toBe(
      `Model path ${file} is a file, not a folder. Pass the folder of a Hugging Face model, which contains config.json and the safetensors weights.`,
    );
  });
});

describe('LoRA rank robustness', () => {
  it('rejects a rank above the projection size', async () => {
    // Guards against loraRank 1e9 failing with a bare RangeError ("Invalid typed array length")
    // while lora_a was allocated.
    const lora = { rank: 1e9, scale: 1, targetModules: ['q_proj', 'v_proj'] };

    const error = await rejection(loadCausalLM(inputs.modelDir, { lora }));

    expect(error).toBeInstanceOf(ArgumentError);
    expect((error as ArgumentError).code).toBe('LORA_INVALID_OPTION');
    // v_proj maps hidden 16 to 2 key-value heads x head size 4 = 8, the smallest of the two projections.
    expect(error.message).toBe(
      'Invalid LoRA option rank: 1000000000. Expected a positive integer of at most 8, the smaller dimension of v_proj ([16, 8]), ' +
        'because a LoRA update cannot have a higher rank than its matrix.',
    );
  });

  it('accepts a rank equal to the projection size', async () => {
    const model = await loadCausalLM(inputs.modelDir, { lora: { rank: 8, scale: 1, targetModules: ['q_proj', 'v_proj'] } });
    const weights = model.getLoraWeights();
    const rank = weights['model.layers.0.self_attn.v_proj.lora_a']?.shape[1];
    tf.dispose(Object.values(weights));
    model.dispose();

    expect(rank).toBe(8);
  });
});
