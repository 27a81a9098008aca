import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { ConfigError, FileFormatError, loadModelConfig, NestedLearningError, parseModelConfig } from '../src/index.js';

const TINY_QWEN2 = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'hf', 'tiny-qwen2');

/** The architecture fields of meta-llama/Llama-3.2-1B's config.json. */
const LLAMA_3_2_1B = {
  architectures: ['LlamaForCausalLM'],
  attention_bias: false,
  bos_token_id: 128000,
  eos_token_id: 128001,
  head_dim: 64,
  hidden_act: 'silu',
  hidden_size: 2048,
  intermediate_size: 8192,
  max_position_embeddings: 131072,
  mlp_bias: false,
  model_type: 'llama',
  num_attention_heads: 32,
  num_hidden_layers: 16,
  num_key_value_heads: 8,
  rms_norm_eps: 1e-5,
  rope_scaling: { factor: 32.0, high_freq_factor: 4.0, low_freq_factor: 1.0, original_max_position_embeddings: 8192, rope_type: 'llama3' },
  rope_theta: 500000.0,
  tie_word_embeddings: true,
  torch_dtype: 'bfloat16',
  vocab_size: 128256,
};

function thrown(action: () => unknown): NestedLearningError {
  try {
    action();
  } catch (error) {
    if (!NestedLearningError.isInstance(error)) throw error;
    return error;
  }
  throw new Error('expected an error, but none was thrown');
}

let tmpDir: string;

beforeAll(async () => {
  tmpDir = await fs.mkdtemp(path.join(os.tmpdir(), 'hf-config-test-'));
});

afterAll(async () => {
  await fs.rm(tmpDir, { recursive: true, force: true });
});

describe('parseModelConfig', () => {
  it('reads a Llama 3.2 config', () => {
    const config = parseModelConfig(LLAMA_3_2_1B);
    expect(config).toEqual({
      modelType: 'llama',
      hiddenSize: 2048,
      intermediateSize: 8192,
      numHiddenLayers: 16,
      numAttentionHeads: 32,
      numKeyValueHeads: 8,
      headDim: 64,
      rmsNormEps: 1e-5,
      ropeTheta: 500000,
      ropeScaling: LLAMA_3_2_1B.rope_scaling,
      vocabSize: 128256,
      tieWordEmbeddings: true,
      attentionBias: false,
      mlpBias: false,
      torchDtype: 'bfloat16',
      maxPositionEmbeddings: 131072,
      bosTokenId: 128000,
      eosTokenId: 128001,
    });
  });

  it('fills Llama defaults', () => {
    const config = parseModelConfig({
      model_type: 'llama',
      hidden_size: 64,
      intermediate_size: 128,
      num_hidden_layers: 2,
      num_attention_heads: 4,
      vocab_size: 100,
    });
    expect(config.numKeyValueHeads).toBe(4);
    // head_dim = hidden_size / num_attention_heads = 64 / 4.
    expect(config.headDim).toBe(16);
    expect(config.rmsNormEps).toBe(1e-6);
    expect(config.ropeTheta).toBe(10000);
    expect(config.ropeScaling).toBeNull();
    expect(config.tieWordEmbeddings).toBe(false);
    expect(config.attentionBias).toBe(false);
    expect(config.mlpBias).toBe(false);
    expect(config.torchDtype).toBeUndefined();
    expect(config.eosTokenId).toBeUndefined();
  });

  it('gives Qwen2 q/k/v biases', () => {
    const config = parseModelConfig({
      architectures: ['Qwen2ForCausalLM'],
      model_type: 'qwen2',
      hidden_size: 896,
      intermediate_size: 4864,
      num_hidden_layers: 24,
      num_attention_heads: 14,
      num_key_value_heads: 2,
      rope_theta: 1000000.0,
      tie_word_embeddings: true,
      vocab_size: 151936,
      eos_token_id: [151645, 151643],
    });
    expect(config.modelType).toBe('qwen2');
    expect(config.attentionBias).toBe(true);
    // 896 / 14 heads = 64.
    expect(config.headDim).toBe(64);
    expect(config.eosTokenId).toEqual([151645, 151643]);
  });

  it('reads rope_parameters', () => {
    const base = { ...LLAMA_3_2_1B, rope_theta: undefined, rope_scaling: undefined };
    const plain = parseModelConfig({ ...base, rope_parameters: { rope_theta: 250000, rope_type: 'default' } });
    const scaled = parseModelConfig({ ...base, rope_parameters: { rope_theta: 500000, rope_type: 'llama3', factor: 8 } });

    expect(plain.ropeTheta).toBe(250000);
    expect(plain.ropeScaling).toBeNull();
    expect(scaled.ropeTheta).toBe(500000);
    expect(scaled.ropeScaling).toEqual({ rope_theta: 500000, rope_type: 'llama3', factor: 8 });
  });

  it('reads dtype as torchDtype', () => {
    expect(parseModelConfig({ ...LLAMA_3_2_1B, torch_dtype: undefined, dtype: 'float16' }).torchDtype).toBe('float16');
  });

  it('infers the type from architectures', () => {
    expect(parseModelConfig({ ...LLAMA_3_2_1B, model_type: undefined }).modelType).toBe('llama');
  });

  it('rejects an unknown model_type', () => {
    const error = thrown(() => parseModelConfig({ ...LLAMA_3_2_1B, model_type: 'mistral', architectures: ['MistralForCausalLM'] }, { source: 'x/config.json' }));
    expect(error).toBeInstanceOf(ConfigError);
    expect(error.code).toBe('MODEL_TYPE_UNSUPPORTED');
    expect(error.message).toContain('"mistral"');
    expect(error.message).toContain('x/config.json');
    expect(error.message).toContain('llama (LlamaForCausalLM)');
    expect(error.message).toContain('qwen2 (Qwen2ForCausalLM)');
  });

  it('rejects a non-causal-LM head', () => {
    const error = thrown(() => parseModelConfig({ ...LLAMA_3_2_1B, model_type: 'qwen2', architectures: ['Qwen2ForSequenceClassification'] }));
    expect(error.code).toBe('MODEL_TYPE_UNSUPPORTED');
    expect(error.message).toContain('Qwen2ForSequenceClassification');
  });

  it('reports every invalid field together', () => {
    const error = thrown(() =>
      parseModelConfig({ ...LLAMA_3_2_1B, hidden_size: -1, vocab_size: undefined, num_key_value_heads: 5, tie_word_embeddings: 'yes' }),
    );
    expect(error.code).toBe('MODEL_CONFIG_INVALID');
    expect(error.message).toContain('hidden_size must be a positive integer, got -1');
    expect(error.message).toContain('vocab_size is missing');
    expect(error.message).toContain('num_attention_heads (32) must be a multiple of num_key_value_heads (5)');
    expect(error.message).toContain('tie_word_embeddings must be true or false');
    expect(error.details.problems).toHaveLength(4);
  });

  it('requires head_dim when heads do not divide hidden', () => {
    const error = thrown(() => parseModelConfig({ ...LLAMA_3_2_1B, head_dim: undefined, hidden_size: 2050 }));
    expect(error.message).toContain('head_dim must be given');
  });

  it('rejects an activation other than silu', () => {
    const error = thrown(() => parseModelConfig({ ...LLAMA_3_2_1B, hidden_act: 'gelu' }));
    expect(error.code).toBe('MODEL_CONFIG_UNSUPPORTED');
    expect(error.message).toContain('"gelu"');
  });

  it('rejects a non-object', () => {
    expect(thrown(() => parseModelConfig([1])).code).toBe('MODEL_CONFIG_INVALID');
  });
});

describe('loadModelConfig', () => {
  it('loads the tiny Qwen2 folder', async () => {
    const config = await loadModelConfig(TINY_QWEN2);
    expect(config.modelType).toBe('qwen2');
    expect(config.hiddenSize).toBe(16);
    expect(config.numKeyValueHeads).toBe(2);
    expect(config.headDim).toBe(4);
    expect(config.ropeTheta).toBe(1000000);
    expect(config.torchDtype).toBe('bfloat16');
  });

  it('accepts the config file path', async () => {
    expect((await loadModelConfig(path.join(TINY_QWEN2, 'config.json'))).vocabSize).toBe(32);
  });

  it('reports a missing config.json', async () => {
    const error = await loadModelConfig(tmpDir).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(FileFormatError);
    expect((error as FileFormatError).code).toBe('MODEL_CONFIG_NOT_FOUND');
    expect((error as Error).message).toContain(path.join(tmpDir, 'config.json'));
  });

  it('reports invalid JSON', async () => {
    const folder = path.join(tmpDir, 'broken');
    await fs.mkdir(folder);
    await fs.writeFile(path.join(folder, 'config.json'), '{"model_type": ');
    const error = await loadModelConfig(folder).catch((e: unknown) => e);
    expect((error as FileFormatError).code).toBe('MODEL_CONFIG_INVALID_JSON');
  });
});
