/**
 * Parsing of a Hugging Face `config.json` for the Llama and Qwen2 (also Qwen2.5) decoder families.
 *
 * Defaults for absent fields are those of `transformers` `LlamaConfig` and `Qwen2Config`:
 * `head_dim` = `hidden_size / num_attention_heads`, `rms_norm_eps` 1e-6, `rope_theta` 10000,
 * `tie_word_embeddings` false, and `attention_bias` and `mlp_bias` false for Llama. Qwen2 always
 * has a bias on the q, k and v projections (not on o), and its config has no field to change that.
 *
 * NOTE: an absent `num_key_value_heads` becomes `num_attention_heads` here for both families,
 * as `LlamaConfig` does. `Qwen2Config` defaults it to 32 instead; published Qwen2 configs all set it.
 *
 * Newer `transformers` releases write `rope_parameters` (with `rope_theta` and `rope_type`) in
 * place of `rope_theta` and `rope_scaling`; both forms are read.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import { ConfigError, FileFormatError } from '../errors.js';
import type { ModelConfig } from './types.js';

/** Options of {@link parseModelConfig}. */
export interface ParseModelConfigOptions {
  /** Origin of the JSON for error messages, such as a path or a model name. */
  source?: string;
}

/** Model types this library can load, with the `architectures` names that go with them. */
export const SUPPORTED_ARCHITECTURES: Readonly<Record<ModelConfig['modelType'], readonly string[]>> = {
  llama: ['LlamaForCausalLM'],
  qwen2: ['Qwen2ForCausalLM'],
};

const DEFAULT_RMS_NORM_EPS = 1e-6;
const DEFAULT_ROPE_THETA = 10000;

/**
 * Checks a parsed `config.json` and converts it to a {@link ModelConfig}. Every invalid field is
 * reported in one {@link ConfigError} (`MODEL_CONFIG_INVALID`). An unknown `model_type` or
 * architecture raises `MODEL_TYPE_UNSUPPORTED`, which lists the supported ones.
 */
export function parseModelConfig(json: unknown, options: ParseModelConfigOptions = {}): ModelConfig {
  const source = options.source ?? 'config.json';
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new ConfigError('MODEL_CONFIG_INVALID', `Invalid model config ${source}: expected a JSON object.`, {
      details: { source },
    });
  }
  const raw = json as Record<string, unknown>;
  const modelType = resolveModelType(raw, source);
  const fields = new FieldReader(raw);

  const hiddenSize = fields.positiveInteger('hidden_size');
  const intermediateSize = fields.positiveInteger('intermediate_size');
  const numHiddenLayers = fields.positiveInteger('num_hidden_layers');
  const numAttentionHeads = fields.positiveInteger('num_attention_heads');
  const numKeyValueHeads = fields.positiveInteger('num_key_value_heads', numAttentionHeads);
  const vocabSize = fields.positiveInteger('vocab_size');
  const headDim = readHeadDim(fields, hiddenSize, numAttentionHeads);

  if (numAttentionHeads > 0 && numKeyValueHeads > 0 && numAttentionHeads % numKeyValueHeads !== 0) {
    fields.problems.push(
      `num_attention_heads (${numAttentionHeads}) must be a multiple of num_key_value_heads (${numKeyValueHeads})`,
    );
  }

  const rmsNormEps = fields.positiveNumber('rms_norm_eps', DEFAULT_RMS_NORM_EPS);
  const { ropeTheta, ropeScaling } = readRope(fields);
  const tieWordEmbeddings = fields.boolean('tie_word_embeddings', false);
  const attentionBias = modelType === 'qwen2' ? true : fields.boolean('attention_bias', false);
  const mlpBias = modelType === 'qwen2' ? false : fields.boolean('mlp_bias', false);
  const torchDtype = fields.optionalString('torch_dtype') ?? fields.optionalString('dtype');
  const maxPositionEmbeddings = fields.optionalPositiveInteger('max_position_embeddings');
  const bosTokenId = fields.optionalTokenId('bos_token_id');
  const eosTokenId = fields.optionalTokenIds('eos_token_id');

  const activation = raw.hidden_act;
  if (activation !== undefined && activation !== 'silu') {
    throw new ConfigError(
      'MODEL_CONFIG_UNSUPPORTED',
      `Unsupported hidden_act ${JSON.stringify(activation)} in ${source}: the ${modelType} decoder here uses silu only.`,
      { details: { source, hiddenAct: activation } },
    );
  }

  if (fields.problems.length > 0) {
    throw new ConfigError(
      'MODEL_CONFIG_INVALID',
      `Invalid model config ${source}: ${fields.problems.join('; ')}. Fix these fields in config.json.`,
      { details: { source, problems: fields.problems } },
    );
  }

  return {
    modelType,
    hiddenSize,
    intermediateSize,
    numHiddenLayers,
    numAttentionHeads,
    numKeyValueHeads,
    headDim,
    rmsNormEps,
    ropeTheta,
    ropeScaling,
    vocabSize,
    tieWordEmbeddings,
    attentionBias,
    mlpBias,
    torchDtype,
    maxPositionEmbeddings,
    bosTokenId,
    eosTokenId,
  };
}

/** Reads and parses `config.json` from a model folder (or the path of a config file itself). */
export async function loadModelConfig(folder: string): Promise<ModelConfig> {
  const filePath = folder.endsWith('.json') ? folder : path.join(folder, 'config.json');

  let text: string;
  try {
    text = await fs.readFile(filePath, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new FileFormatError(
      code === 'ENOENT' ? 'MODEL_CONFIG_NOT_FOUND' : 'MODEL_CONFIG_READ_FAILED',
      code === 'ENOENT'
        ? `Model config not found: ${filePath}. Pass the folder of a Hugging Face model, which contains config.json.`
        : `Failed to read model config ${filePath}: ${(error as Error).message}.`,
      { cause: error, details: { path: filePath, errno: code } },
    );
  }

  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new FileFormatError('MODEL_CONFIG_INVALID_JSON', `Invalid JSON in model config ${filePath}: ${(error as Error).message}.`, {
      cause: error,
      details: { path: filePath },
    });
  }
  return parseModelConfig(json, { source: filePath });
}

function resolveModelType(raw: Record<string, unknown>, source: string): ModelConfig['modelType'] {
  const supported = Object.entries(SUPPORTED_ARCHITECTURES)
    .map(([type, names]) => `${type} (${names.join(', ')})`)
    .join(', ');
  const architectures = Array.isArray(raw.architectures) ? raw.architectures.filter((name) => typeof name === 'string') : [];
  const declared = raw.model_type;

  let modelType: ModelConfig['modelType'] | undefined;
  if (declared === 'llama' || declared === 'qwen2') {
    modelType = declared;
  } else if (declared === undefined) {
    modelType = (Object.keys(SUPPORTED_ARCHITECTURES) as Array<ModelConfig['modelType']>).find((type) =>
      architectures.some((name) => SUPPORTED_ARCHITECTURES[type].includes(name)),
    );
  }

  // A known model_type with a head other than causal LM (for example Qwen2ForSequenceClassification)
  // stores different weights, so the architecture must match too when the file lists one.
  const architectureMatches =
    modelType !== undefined && (architectures.length === 0 || architectures.some((name) => SUPPORTED_ARCHITECTURES[modelType].includes(name)));

  if (modelType === undefined || !architectureMatches) {
    throw new ConfigError(
      'MODEL_TYPE_UNSUPPORTED',
      `Unsupported model in ${source}: model_type ${JSON.stringify(declared) ?? 'undefined'}, architectures ` +
        `${JSON.stringify(architectures)}. Supported: ${supported}. Qwen2.5 checkpoints use qwen2.`,
      { details: { source, modelType: declared, architectures } },
    );
  }
  return modelType;
}

function readHeadDim(fields: FieldReader, hiddenSize: number, numAttentionHeads: number): number {
  const declared = fields.raw.head_dim;
  let headDim: number;
  if (declared === undefined || declared === null) {
    if (numAttentionHeads > 0 && hiddenSize % numAttentionHeads !== 0) {
      fields.problems.push(
        `hidden_size (${hiddenSize}) is not a multiple of num_attention_heads (${numAttentionHeads}), so head_dim must be given`,
      );
      return 0;
    }
    headDim = numAttentionHeads > 0 ? hiddenSize / numAttentionHeads : 0;
  } else {
    headDim = fields.positiveInteger('head_dim');
  }
  if (headDim > 0 && headDim % 2 !== 0) {
    fields.problems.push(`head_dim (${headDim}) must be even for rotary embeddings`);
  }
  return headDim;
}

function readRope(fields: FieldReader): { ropeTheta: number; ropeScaling: Record<string, unknown> | null } {
  const parameters = fields.raw.rope_parameters;
  if (parameters !== undefined && parameters !== null) {
    if (typeof parameters !== 'object' || Array.isArray(parameters)) {
      fields.problems.push(`rope_parameters must be an object, got ${JSON.stringify(parameters)}`);
      return { ropeTheta: DEFAULT_ROPE_THETA, ropeScaling: null };
    }
    const rope = parameters as Record<string, unknown>;
    const theta = rope.rope_theta ?? fields.raw.rope_theta ?? DEFAULT_ROPE_THETA;
    if (typeof theta !== 'number' || !(theta > 0)) {
      fields.problems.push(`rope_parameters.rope_theta must be a positive number, got ${JSON.stringify(theta)}`);
    }
    const type = rope.rope_type ?? rope.type ?? 'default';
    return { ropeTheta: theta as number, ropeScaling: type === 'default' ? null : { ...rope } };
  }

  const ropeTheta = fields.positiveNumber('rope_theta', DEFAULT_ROPE_THETA);
  const scaling = fields.raw.rope_scaling;
  if (scaling === undefined || scaling === null) {
    return { ropeTheta, ropeScaling: null };
  }
  if (typeof scaling !== 'object' || Array.isArray(scaling)) {
    fields.problems.push(`rope_scaling must be an object or null, got ${JSON.stringify(scaling)}`);
    return { ropeTheta, ropeScaling: null };
  }
  return { ropeTheta, ropeScaling: { ...(scaling as Record<string, unknown>) } };
}

/** Reads typed fields and collects a description of each invalid one, so all are reported together. */
class FieldReader {
  readonly problems: string[] = [];

  constructor(readonly raw: Record<string, unknown>) {}

  positiveInteger(key: string, fallback?: number): number {
    const value = this.raw[key] ?? fallback;
    if (value === undefined) {
      this.problems.push(`${key} is missing`);
      return 0;
    }
    if (typeof value !== 'number' || !Number.isSafeInteger(value) || value <= 0) {
      this.problems.push(`${key} must be a positive integer, got ${JSON.stringify(value)}`);
      return 0;
    }
    return value;
  }

  optionalPositiveInteger(key: string): number | undefined {
    if (this.raw[key] === undefined || this.raw[key] === null) return undefined;
    return this.positiveInteger(key);
  }

  positiveNumber(key: string, fallback: number): number {
    const value = this.raw[key] ?? fallback;
    if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
      this.problems.push(`${key} must be a positive number, got ${JSON.stringify(value)}`);
      return fallback;
    }
    return value;
  }

  boolean(key: string, fallback: boolean): boolean {
    const value = this.raw[key] ?? fallback;
    if (typeof value !== 'boolean') {
      this.problems.push(`${key} must be true or false, got ${JSON.stringify(value)}`);
      return fallback;
    }
    return value;
  }

  optionalString(key: string): string | undefined {
    const value = this.raw[key];
    if (value === undefined || value === null) return undefined;
    if (typeof value !== 'string') {
      this.problems.push(`${key} must be a string, got ${JSON.stringify(value)}`);
      return undefined;
    }
    return value;
  }

  optionalTokenId(key: string): number | undefined {
    const value = this.raw[key];
    if (value === undefined || value === null) return undefined;
    if (!isTokenId(value)) {
      this.problems.push(`${key} must be a non-negative integer, got ${JSON.stringify(value)}`);
      return undefined;
    }
    return value;
  }

  optionalTokenIds(key: string): number | number[] | undefined {
    const value = this.raw[key];
    if (Array.isArray(value)) {
      if (!value.every(isTokenId)) {
        this.problems.push(`${key} must be a non-negative integer or a list of them, got ${JSON.stringify(value)}`);
        return undefined;
      }
      return [...value];
    }
    return this.optionalTokenId(key);
  }
}

function isTokenId(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}
