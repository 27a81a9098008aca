/**
 * loadCausalLM: a Hugging Face folder on disk, with and without an adapter, gives the reference logits.
 */
import * as tf from '@tensorflow/tfjs';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';

import { initBackend } from '../src/backend/index.js';
import { writeSafetensors } from '../src/io/index.js';
import { loadCausalLM, type CausalLM } from '../src/model/index.js';
import { baseWeights, loadFixture, loraWeights, realPositions, relativeError, type ModelFixture } from './fixtures/model/fixture.js';

// Every test must leave the number of live tensors as it found it.
let tensorsAtStart = 0;
beforeEach(() => {
  tensorsAtStart = tf.memory().numTensors;
});
afterEach(() => {
  expect(tf.memory().numTensors).toBe(tensorsAtStart);
});

const HERE = path.dirname(fileURLToPath(import.meta.url));
let fixture: ModelFixture;
let folder: string;

beforeAll(async () => {
  await initBackend({ backend: 'cpu' });
  fixture = await loadFixture('llama');
  folder = mkdtempSync(path.join(tmpdir(), 'nl-model-load-'));
  const meta = JSON.parse(readFileSync(path.join(HERE, 'fixtures/model/llama.json'), 'utf8')) as { config: unknown };
  writeFileSync(path.join(folder, 'config.json'), JSON.stringify(meta.config));
  const weights = baseWeights(fixture);
  await writeSafetensors(path.join(folder, 'model.safetensors'), weights);
  tf.dispose(Object.values(weights));
});

afterAll(() => {
  tf.dispose(Object.values(fixture.tensors));
  rmSync(folder, { recursive: true, force: true });
});

function realLogits(model: CausalLM, expectedName: string): { actual: number[]; expected: number[] } {
  const vocab = fixture.config.vocabSize;
  const values = tf.tidy(() =>
    model.forward(tf.tensor2d(fixture.inputs.input_ids, undefined, 'int32'), { attentionMask: tf.tensor2d(fixture.inputs.attention_mask) }).dataSync(),
  );
  return {
    actual: realPositions(values, fixture.inputs.attention_mask, vocab),
    expected: realPositions(fixture.tensors[expectedName]!.dataSync(), fixture.inputs.attention_mask, vocab),
  };
}

describe('loadCausalLM', () => {
  it('loads the base model', async () => {
    const before = tf.memory().numTensors;
    const model = await loadCausalLM(folder);
    const { actual, expected } = realLogits(model, 'expected.base_logits');

    expect(model.loraParameters.size).toBe(0);
    expect(relativeError(actual, expected)).toBeLessThan(1e-4);
    model.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });

  it('loads an adapter', async () => {
    const weights = loraWeights(fixture);
    const adapter = {
      rank: fixture.lora.rank,
      scale: fixture.lora.scale,
      targetModules: ['self_attn.q_proj', 'self_attn.v_proj', 'mlp.down_proj'],
      layers: fixture.lora.layers,
      weights,
    };
    const model = await loadCausalLM(folder, { adapter, lora: { seed: 3 } });
    const { actual, expected } = realLogits(model, 'expected.logits');

    expect(model.loraScale).toBe(fixture.lora.scale);
    expect(model.loraParameters.size).toBe(6);
    expect(relativeError(actual, expected)).toBeLessThan(1e-4);
    model.dispose();
    // The caller keeps ownership of the adapter tensors.
    expect(Object.values(weights).some((tensor) => tensor.isDisposed)).toBe(false);
    tf.dispose(Object.values(weights));
  });

  it('adds fresh adapters', async () => {
    const model = await loadCausalLM(folder, { lora: { rank: 2, scale: 4 } });

    expect(model.loraParameters.size).toBe(2 * 7 * 2);
    model.dispose();
  });

  it('rejects options conflicting with adapter', async () => {
    const adapter = { rank: 3, scale: 1, targetModules: ['q_proj'], layers: [1], weights: {} };
    await expect(loadCausalLM(folder, { adapter, lora: { rank: 8, scale: 1 } })).rejects.toThrow(/conflict with the adapter/);
  });
});
