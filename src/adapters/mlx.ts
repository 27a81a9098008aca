/**
 * mlx_lm LoRA adapters: `adapters.safetensors` and `adapter_config.json`.
 *
 * mlx_lm (`mlx_lm/tuner/lora.py`) stores `lora_a` as `[in, r]` and `lora_b` as `[r, out]` and
 * multiplies the adapter output by `scale` (default 20.0 in `LoRALinear`). `load_adapters`
 * (`mlx_lm/tuner/utils.py`) reads `fine_tune_type`, `num_layers` and `lora_parameters`
 * (`rank`, `scale`, `dropout`, `keys`) from the config, adds LoRA to the last `num_layers`
 * decoder layers (-1 for all) and then loads the weights non-strictly. Older releases wrote
 * `lora_layers` in place of `num_layers`.
 */
import * as tf from '@tensorflow/tfjs';
import * as path from 'node:path';

import { ArgumentError, FileFormatError } from '../errors.js';
import { writeJsonAtomic } from '../io/atomic.js';
import { readSafetensors, writeSafetensors, type FloatWriteDtype } from '../io/safetensors.js';
import { ADAPTER_CONFIG_FILE, checkAdapterFolder, checkFiniteWeights, createAdapterFolder, describeAdapterLayout, fileExists, numberField, readAdapterConfig } from './common.js';
import { parseLayerAdapterKey } from './keys.js';
import type { LoraAdapter } from './types.js';

/** File name of mlx_lm adapter weights. */
export const MLX_WEIGHTS_FILE = 'adapters.safetensors';

/** mlx_lm's `LoRALinear` scale when a config gives none. */
const MLX_DEFAULT_SCALE = 20;

/** Options of {@link writeMlxAdapter}. */
export interface WriteMlxAdapterOptions {
  /**
   * `num_layers`: how many of the last decoder layers mlx_lm adds LoRA to, or -1 for all. It must
   * cover every layer that has weights, because mlx_lm silently skips weights of other layers.
   * @default the adapter's own `num_layers` when it was read from mlx_lm; else the smallest count
   * that covers its layers when `numHiddenLayers` is given; else -1
   */
  numLayers?: number;
  /** Number of decoder layers of the base model, used to derive and check `numLayers`. */
  numHiddenLayers?: number;
  /**
   * Storage dtype of the weights.
   * @default 'F32'
   */
  dtype?: FloatWriteDtype;
}

/** Reads an mlx_lm LoRA adapter folder. */
export async function readMlxAdapter(folder: string): Promise<LoraAdapter> {
  await checkAdapterFolder(folder);
  const config = await readAdapterConfig(folder);
  const source = path.join(folder, ADAPTER_CONFIG_FILE);

  const fineTuneType = config.fine_tune_type ?? 'lora';
  if (fineTuneType !== 'lora' || config.use_dora === true) {
    throw new FileFormatError(
      'ADAPTER_UNSUPPORTED',
      `Unsupported adapter ${source}: fine_tune_type is ${JSON.stringify(config.use_dora === true ? 'dora' : fineTuneType)}, ` +
        'but only "lora" adapters are supported.',
      { details: { source, fineTuneType } },
    );
  }

  const parameters = (config.lora_parameters ?? {}) as Record<string, unknown>;
  if (typeof parameters !== 'object' || parameters === null || Array.isArray(parameters)) {
    throw new FileFormatError('ADAPTER_CONFIG_INVALID', `Invalid ${source}: "lora_parameters" must be an object.`, {
      details: { source },
    });
  }
  const scale = numberField(parameters, 'scale', MLX_DEFAULT_SCALE, source);
  const dropout = numberField(parameters, 'dropout', 0, source);
  const declaredRank = parameters.rank === undefined ? undefined : numberField(parameters, 'rank', undefined, source);

  const weightsPath = path.join(folder, MLX_WEIGHTS_FILE);
  if (!(await fileExists(weightsPath))) {
    throw new FileFormatError('ADAPTER_WEIGHTS_NOT_FOUND', `mlx_lm adapter weights not found: ${weightsPath}.`, {
      details: { path: weightsPath },
    });
  }

  const { tensors } = await readSafetensors(weightsPath);
  try {
    const layout = describeAdapterLayout(tensors, weightsPath);
    checkFiniteWeights(tensors, weightsPath);
    if (declaredRank !== undefined && declaredRank !== layout.rank) {
      throw new FileFormatError(
        'ADAPTER_RANK_MISMATCH',
        `Adapter ${source} declares rank ${declaredRank}, but its weights have rank ${layout.rank}.`,
        { details: { source, declared: declaredRank, actual: layout.rank } },
      );
    }
    return {
      format: 'mlx',
      rank: layout.rank,
      scale,
      dropout,
      targetModules: layout.targetModules,
      layers: layout.layers,
      weights: tensors,
      config,
    };
  } catch (error) {
    tf.dispose(Object.values(tensors));
    throw error;
  }
}

/**
 * Writes `adapters.safetensors` and `adapter_config.json` in mlx_lm's format into `folder`
 * (created if needed). Both files are written atomically. Fields of an adapter read from mlx_lm
 * (for example `model` and training settings) are kept; the LoRA fields are rewritten.
 */
export async function writeMlxAdapter(folder: string, adapter: LoraAdapter, options: WriteMlxAdapterOptions = {}): Promise<void> {
  for (const key of Object.keys(adapter.weights)) {
    if (parseLayerAdapterKey(key) === undefined) {
      throw new ArgumentError(
        'ADAPTER_KEY_INVALID',
        `Cannot write adapter weight "${key}" to mlx_lm: expected model.layers.{i}.<module path>.lora_a or .lora_b.`,
        { details: { key } },
      );
    }
  }
  const numLayers = resolveNumLayers(adapter, options);

  const inherited = adapter.format === 'mlx' ? { ...adapter.config } : peftInheritedFields(adapter);
  delete inherited.lora_layers;
  const inheritedParameters =
    adapter.format === 'mlx' && typeof adapter.config.lora_parameters === 'object' && adapter.config.lora_parameters !== null
      ? (adapter.config.lora_parameters as Record<string, unknown>)
      : {};

  const config = {
    ...inherited,
    fine_tune_type: 'lora',
    num_layers: numLayers,
    lora_parameters: {
      ...inheritedParameters,
      rank: adapter.rank,
      scale: adapter.scale,
      dropout: adapter.dropout,
      keys: [...adapter.targetModules],
    },
  };

  await createAdapterFolder(folder);
  await writeSafetensors(path.join(folder, MLX_WEIGHTS_FILE), adapter.weights, { metadata: { format: 'mlx' }, dtype: options.dtype });
  await writeJsonAtomic(path.join(folder, ADAPTER_CONFIG_FILE), config);
}

function resolveNumLayers(adapter: LoraAdapter, options: WriteMlxAdapterOptions): number {
  const { numHiddenLayers } = options;
  const lowestLayer = Math.min(...adapter.layers);
  const inherited = adapter.format === 'mlx' ? (adapter.config.num_layers ?? adapter.config.lora_layers) : undefined;

  let numLayers: number;
  if (options.numLayers !== undefined) numLayers = options.numLayers;
  else if (typeof inherited === 'number') numLayers = inherited;
  else if (numHiddenLayers !== undefined) numLayers = numHiddenLayers - lowestLayer;
  else numLayers = -1;

  if (!Number.isInteger(numLayers) || (numLayers < 1 && numLayers !== -1)) {
    throw new ArgumentError('ADAPTER_NUM_LAYERS_INVALID', `numLayers must be a positive integer or -1 (all layers), got ${numLayers}.`, {
      details: { numLayers },
    });
  }
  if (numLayers !== -1 && numHiddenLayers !== undefined && numHiddenLayers - numLayers > lowestLayer) {
    throw new ArgumentError(
      'ADAPTER_NUM_LAYERS_INVALID',
      `num_layers ${numLayers} of a ${numHiddenLayers}-layer model covers layers ${numHiddenLayers - numLayers} to ` +
        `${numHiddenLayers - 1}, but the adapter has weights for layer ${lowestLayer}, which mlx_lm would skip ` +
        `without an error. Use numLayers ${numHiddenLayers - lowestLayer} or -1.`,
      { details: { numLayers, numHiddenLayers, lowestLayer } },
    );
  }
  return numLayers;
}

/** Fields of a PEFT config worth keeping for mlx_lm: the base model, under mlx_lm's `model` key. */
function peftInheritedFields(adapter: LoraAdapter): Record<string, unknown> {
  const base = adapter.config.base_model_name_or_path;
  return typeof base === 'string' ? { model: base } : {};
}
