/**
 * Golden tests of the decoder against an independent float64 PyTorch reference
 * (test/fixtures/model/make_fixtures.py): logits, LoRA gradients and greedy generation.
 */
import * as tf from '@tensorflow/tfjs';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';

import { initBackend } from '../src/backend/index.js';
import { CausalLM } from '../src/model/index.js';
import {
  baseWeights,
  expectedGradients,
  loadFixture,
  loraWeights,
  realPositions,
  relativeError,
  type FixtureName,
  type ModelFixture,
} from './fixtures/model/fixture.js';

// Every test must leave the number of live tensors as it found it.
let tensorsAtStart = 0;
beforeEach(() => {
  tensorsAtStart = tf.memory().numTensors;
});
afterEach(() => {
  expect(tf.memory().numTensors).toBe(tensorsAtStart);
});

const FIXTURES: FixtureName[] = ['qwen2', 'llama', 'llama-bias'];
const BACKENDS = ['cpu', 'wasm'] as const;

function buildModel(fixture: ModelFixture, withAdapter: boolean): CausalLM {
  const lora = fixture.lora;
  const model = CausalLM.fromWeights({
    config: fixture.config,
    weights: baseWeights(fixture),
    lora: withAdapter ? { rank: lora.rank, scale: lora.scale, targetModules: lora.target_modules, layers: lora.layers } : undefined,
  });
  if (withAdapter) {
    const adapter = loraWeights(fixture);
    model.setLoraWeights(adapter);
    tf.dispose(Object.values(adapter));
  }
  return model;
}

describe.each(BACKENDS)('golden on %s', (backend) => {
  const fixtures = new Map<FixtureName, ModelFixture>();

  beforeAll(async () => {
    await initBackend({ backend });
    for (const name of FIXTURES) {
      fixtures.set(name, await loadFixture(name));
    }
  });

  afterAll(() => {
    for (const fixture of fixtures.values()) {
      tf.dispose(Object.values(fixture.tensors));
    }
  });

  describe.each(FIXTURES)('%s', (name) => {
    it('logits with adapter match reference', () => {
      const fixture = fixtures.get(name) as ModelFixture;
      const model = buildModel(fixture, true);
      const before = tf.memory().numTensors;

      const ids = tf.tensor2d(fixture.inputs.input_ids, undefined, 'int32');
      const mask = tf.tensor2d(fixture.inputs.attention_mask);
      const logits = model.forward(ids, { attentionMask: mask });
      const actual = realPositions(logits.dataSync(), fixture.inputs.attention_mask, fixture.config.vocabSize);
      const expected = realPositions(fixture.tensors['expected.logits']!.dataSync(), fixture.inputs.attention_mask, fixture.config.vocabSize);
      tf.dispose([ids, mask, logits]);

      expect(tf.memory().numTensors).toBe(before);
      expect(relativeError(actual, expected)).toBeLessThan(1e-4);
      model.dispose();
    });

    it('base logits match reference', () => {
      const fixture = fixtures.get(name) as ModelFixture;
      const model = buildModel(fixture, false);
      const ids = tf.tensor2d(fixture.inputs.input_ids, undefined, 'int32');
      const mask = tf.tensor2d(fixture.inputs.attention_mask);
      const logits = model.forward(ids, { attentionMask: mask });
      const actual = realPositions(logits.dataSync(), fixture.inputs.attention_mask, fixture.config.vocabSize);
      const expected = realPositions(
        fixture.tensors['expected.base_logits']!.dataSync(),
        fixture.inputs.attention_mask,
        fixture.config.vocabSize,
      );
      tf.dispose([ids, mask, logits]);
      model.dispose();

      expect(relativeError(actual, expected)).toBeLessThan(1e-4);
    });

    it('left-padded logits match reference', () => {
      const fixture = fixtures.get(name) as ModelFixture;
      const model = buildModel(fixture, true);
      const ids = tf.tensor2d(fixture.inputs.left_input_ids, undefined, 'int32');
      const mask = tf.tensor2d(fixture.inputs.left_attention_mask);
      const logits = model.forward(ids, { attentionMask: mask });
      const actual = realPositions(logits.dataSync(), fixture.inputs.left_attention_mask, fixture.config.vocabSize);
      const expected = realPositions(
        fixture.tensors['expected.left_logits']!.dataSync(),
        fixture.inputs.left_attention_mask,
        fixture.config.vocabSize,
      );
      tf.dispose([ids, mask, logits]);
      model.dispose();

      expect(relativeError(actual, expected)).toBeLessThan(1e-4);
    });

    it('LoRA gradients match autograd', () => {
      const fixture = fixtures.get(name) as ModelFixture;
      const model = buildModel(fixture, true);
      const before = tf.memory().numTensors;

      const result = model.lossAndGradients(
        {
          inputIds: fixture.inputs.input_ids,
          labels: fixture.inputs.labels,
          lossMask: fixture.inputs.loss_mask,
          attentionMask: fixture.inputs.attention_mask,
        },
        { training: false },
      );
      const lossSum = result.lossSum.dataSync()[0] as number;
      const expectedCount = fixture.inputs.loss_mask.flat().reduce((sum, value) => sum + value, 0);
      const expectedGrads = expectedGradients(fixture);

      expect(Math.abs(lossSum - fixture.expected.loss_sum) / fixture.expected.loss_sum).toBeLessThan(1e-5);
      expect(result.tokenCount).toBe(expectedCount);
      expect(Object.keys(result.grads).sort()).toEqual(Object.keys(expectedGrads).sort());
      for (const [key, expected] of Object.entries(expectedGrads)) {
        const actual = result.grads[key] as tf.Tensor;
        expect(actual.shape, key).toEqual(expected.shape);
        expect(relativeError(actual.dataSync(), expected.dataSync()), key).toBeLessThan(1e-4);
      }

      tf.dispose([result.lossSum, ...Object.values(result.grads)]);
      expect(tf.memory().numTensors).toBe(before);
      model.dispose();
    });

    it('greedy generation matches reference', () => {
      const fixture = fixtures.get(name) as ModelFixture;
      const model = buildModel(fixture, true);
      const before = tf.memory().numTensors;
      const steps = fixture.expected.greedy_tokens.length;

      const cached = model.generate(fixture.expected.greedy_prompt, { maxNewTokens: steps, stopTokenIds: [] });
      const uncached = model.generate(fixture.expected.greedy_prompt, { maxNewTokens: steps, stopTokenIds: [], useCache: false });

      expect(cached).toEqual([fixture.expected.greedy_tokens]);
      expect(uncached).toEqual([fixture.expected.greedy_tokens]);
      expect(tf.memory().numTensors).toBe(before);
      model.dispose();
    });
  });
});
