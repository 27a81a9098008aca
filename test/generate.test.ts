/**
 * Generation: the key/value cache gives the same tokens as recomputing the sequence, batches with
 * left padding give the same tokens as single prompts, sampling is seeded, and stop tokens end a row.
 */
import * as tf from '@tensorflow/tfjs';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';

import { initBackend } from '../src/backend/index.js';
import { ArgumentError } from '../src/errors.js';
import { CausalLM } from '../src/model/index.js';
import { baseWeights, loadFixture, loraWeights, type FixtureName, type ModelFixture } from './fixtures/model/fixture.js';

// Every test must leave the number of live tensors as it found it.
let tensorsAtStart = 0;
beforeEach(() => {
  tensorsAtStart = tf.memory().numTensors;
});
afterEach(() => {
  expect(tf.memory().numTensors).toBe(tensorsAtStart);
});

const fixtures = new Map<FixtureName, ModelFixture>();

beforeAll(async () => {
  await initBackend({ backend: 'cpu' });
  for (const name of ['qwen2', 'llama'] as const) {
    fixtures.set(name, await loadFixture(name));
  }
});

afterAll(() => {
  for (const fixture of fixtures.values()) {
    tf.dispose(Object.values(fixture.tensors));
  }
});

function adaptedModel(name: FixtureName, eosTokenId?: number): CausalLM {
  const fixture = fixtures.get(name) as ModelFixture;
  const lora = fixture.lora;
  const config = eosTokenId === undefined ? fixture.config : { ...fixture.config, eosTokenId };
  const model = CausalLM.fromWeights({
    config,
    weights: baseWeights(fixture),
    lora: { rank: lora.rank, scale: lora.scale, targetModules: lora.target_modules, layers: lora.layers },
  });
  const adapter = loraWeights(fixture);
  model.setLoraWeights(adapter);
  tf.dispose(Object.values(adapter));
  return model;
}

const PROMPTS = [[5, 17, 33, 2, 9], [40], [11, 12, 13]];

describe.each(['qwen2', 'llama'] as const)('generate on %s', (name) => {
  it.each(['cpu', 'wasm'] as const)('greedy cached equals uncached on %s', async (backend) => {
    await initBackend({ backend });
    const model = adaptedModel(name);
    const before = tf.memory().numTensors;

    const cached = model.generate(PROMPTS, { maxNewTokens: 10, stopTokenIds: [] });
    const uncached = model.generate(PROMPTS, { maxNewTokens: 10, stopTokenIds: [], useCache: false });

    expect(cached.map((tokens) => tokens.length)).toEqual([10, 10, 10]);
    expect(cached).toEqual(uncached);
    expect(tf.memory().numTensors).toBe(before);
    model.dispose();
    await initBackend({ backend: 'cpu' });
  });

  it('batched prompts equal single prompts', () => {
    const model = adaptedModel(name);
    const batched = model.generate(PROMPTS, { maxNewTokens: 6, stopTokenIds: [] });
    const single = PROMPTS.map((prompt) => (model.generate(prompt, { maxNewTokens: 6, stopTokenIds: [] })[0] as number[]));

    expect(batched).toEqual(single);
    model.dispose();
  });

  it('samples the same tokens for a seed', () => {
    const model = adaptedModel(name);
    const options = { maxNewTokens: 12, temperature: 1.5, topK: 20, topP: 0.95, seed: 3, stopTokenIds: [] };

    const first = model.generate(PROMPTS, options);
    const again = model.generate(PROMPTS, options);
    const uncached = model.generate(PROMPTS, { ...options, useCache: false });
    const other = model.generate(PROMPTS, { ...options, seed: 4 });

    expect(again).toEqual(first);
    expect(uncached).toEqual(first);
    expect(other).not.toEqual(first);
    model.dispose();
  });
});

describe('generate stopping', () => {
  it('ends a row at a stop token and includes it', () => {
    const model = adaptedModel('llama');
    const free = model.generate(PROMPTS, { maxNewTokens: 8, stopTokenIds: [] });
    // Stop at the third token of the first row; the other rows stop at that token too if they produce it.
    const stop = (free[0] as number[])[2] as number;

    const stopped = model.generate(PROMPTS, { maxNewTokens: 8, stopTokenIds: [stop] });

    stopped.forEach((tokens, row) => {
      const full = free[row] as number[];
      const end = full.indexOf(stop);
      expect(tokens).toEqual(end === -1 ? full : full.slice(0, end + 1));
    });
    expect(stopped[0]).toEqual((free[0] as number[]).slice(0, 3));
    model.dispose();
  });

  it('stops at the config eos token by default', () => {
    const probe = adaptedModel('qwen2');
    const first = (probe.generate([7, 8, 9], { maxNewTokens: 1, stopTokenIds: [] })[0] as number[])[0] as number;
    probe.dispose();
    const model = adaptedModel('qwen2', first);

    expect(model.generate([7, 8, 9], { maxNewTokens: 5 })).toEqual([[first]]);
    model.dispose();
  });

  it.each([
    [{ maxNewTokens: 0 }, 'maxNewTokens'],
    [{ temperature: -1 }, 'temperature'],
    [{ topK: 1.5 }, 'topK'],
    [{ topP: 0 }, 'topP'],
    [{ padTokenId: 1000 }, 'padTokenId'],
  ])('rejects invalid option %o', (options, field) => {
    const model = adaptedModel('qwen2');
    const error = (() => {
      try {
        model.generate([1, 2], options);
      } catch (caught) {
        return caught;
      }
      return null;
    })();

    expect(error).toBeInstanceOf(ArgumentError);
    expect((error as ArgumentError).code).toBe('GENERATE_INVALID_OPTION');
    expect((error as ArgumentError).details.field).toBe(field);
    model.dispose();
  });

  it('rejects an empty prompt', () => {
    const model = adaptedModel('qwen2');
    expect(() => model.generate([[1, 2], []])).toThrow(/promptIds\[1\]/);
    model.dispose();
  });
});
