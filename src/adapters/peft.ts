/**
 * Hugging Face PEFT LoRA adapters: `adapter_model.safetensors` and `adapter_config.json`.
 *
 * PEFT (`peft/tuners/lora/layer.py`) builds `lora_A` as `nn.Linear(in, r)` and `lora_B` as
 * `nn.Linear(r, out)`, so the saved weights are `[r, in]` and `[out, r]`, the transposes of the
 * mlx_lm layout. Its scaling is `lora_alpha / r`, or `lora_alpha / sqrt(r)` when `use_rslora` is
 * set (`peft/tuners/lora/config.py`).
 */
import * as tf from '@tensorflow/tfjs';
import * as path from 'node:path';

import { ArgumentError, FileFormatError } from '../errors.js';
import { writeJsonAtomic } from '../io/atomic.js';
import { readSafetensors, writeSafetensors, type FloatWriteDtype } from '../io/safetensors.js';
import { ADAPTER_CONFIG_FILE, checkAdapterFolder, checkFiniteWeights, createAdapterFolder, describeAdapterLayout, fileExists, numberField, readAdapterConfig } from './common.js';
import { mlxKeyToPeft, parseLayerAdapterKey, peftKeyToMlx } from './keys.js';
import type { LoraAdapter } from './types.js';

/** File name of PEFT adapter weights. */
export const PEFT_WEIGHTS_FILE = 'adapter_model.safetensors';

/** Options of {@link writePeftAdapter}. */
export interface WritePeftAdapterOptions {
  /**
   * `base_model_name_or_path`: the Hugging Face name or folder of the base model.
   * @default the value in the adapter's own config (`base_model_name_or_path`, or mlx_lm `model`), else null
   */
  baseModelNameOrPath?: string | null;
  /**
   * Write `use_rslora: true`, so that PEFT computes the scaling as `lora_alpha / sqrt(r)`.
   * @default the adapter's own `use_rslora` when it was read from PEFT, else false
   */
  useRslora?: boolean;
  /**
   * `lora_alpha` to write. It must give the adapter's scale, to a relative 1e-6.
   * @default scale * r (scale * sqrt(r) with rsLoRA), rounded to an integer when within 1e-9 of one
   */
  alpha?: number;
  /**
   * Storage dtype of the weights.
   * @default 'F32'
   */
  dtype?: FloatWriteDtype;
}

/** Reads a PEFT LoRA adapter folder and converts it to the canonical (mlx_lm) layout. */
export async function readPeftAdapter(folder: string): Promise<LoraAdapter> {
  await checkAdapterFolder(folder);
  const config = await readAdapterConfig(folder);
  const source = path.join(folder, ADAPTER_CONFIG_FILE);
  const hyper = readPeftHyperparameters(config, source);

  const weightsPath = path.join(folder, PEFT_WEIGHTS_FILE);
  if (!(await fileExists(weightsPath))) {
    const hasBin = await fileExists(path.join(folder, 'adapter_model.bin'));
    throw new FileFormatError(
      'ADAPTER_WEIGHTS_NOT_FOUND',
      `PEFT adapter weights not found: ${weightsPath}.` +
        (hasBin ? ' The folder has adapter_model.bin, which is not read; save the adapter with safe_serialization=True.' : ''),
      { details: { path: weightsPath } },
    );
  }

  const { tensors } = await readSafetensors(weightsPath);
  const weights: Record<string, tf.Tensor> = {};
  const originalKeys = new Map<string, string>();
  try {
    for (const [key, tensor] of Object.entries(tensors)) {
      const mlxKey = toMlxKeyOrUndefined(key);
      if (mlxKey === undefined) {
        weights[key] = tensor;
        originalKeys.set(key, key);
        continue;
      }
      // PEFT stores [r, in] and [out, r]; the canonical layout is their transposes.
      weights[mlxKey] = tf.transpose(tensor);
      tensor.dispose();
      originalKeys.set(mlxKey, key);
    }

    // Messages name weights as the file does, including a missing partner that was never read.
    const layout = describeAdapterLayout(weights, weightsPath, (key) => originalKeys.get(key) ?? mlxKeyToPeft(key));
    checkPeftLayout(layout, hyper, source);
    checkFiniteWeights(weights, weightsPath, (key) => originalKeys.get(key) ?? key);

    return {
      format: 'peft',
      rank: layout.rank,
      scale: hyper.useRslora ? hyper.alpha / Math.sqrt(hyper.rank) : hyper.alpha / hyper.rank,
      dropout: hyper.dropout,
      targetModules: layout.targetModules,
      layers: layout.layers,
      weights,
      config,
    };
  } catch (error) {
    tf.dispose([...Object.values(weights), ...Object.values(tensors)]);
    throw error;
  }
}

/**
 * Writes `adapter_model.safetensors` and `adapter_config.json` in PEFT's format into `folder`
 * (created if needed). Both files are written atomically.
 *
 * PEFT stores `lora_alpha`, not the scale, so the scale is turned back into `lora_alpha = scale * r`
 * (`scale * sqrt(r)` with rsLoRA). Any alpha with that ratio gives the same adapter output.
 */
export async function writePeftAdapter(folder: string, adapter: LoraAdapter, options: WritePeftAdapterOptions = {}): Promise<void> {
  const useRslora = options.useRslora ?? (adapter.format === 'peft' && adapter.config.use_rslora === true);
  const alpha = resolveAlpha(adapter, useRslora, options.alpha);

  const config = {
    alpha_pattern: {},
    auto_mapping: null,
    base_model_name_or_path: options.baseModelNameOrPath ?? defaultBaseModel(adapter),
    bias: 'none',
    fan_in_fan_out: false,
    inference_mode: true,
    init_lora_weights: true,
    layers_pattern: null,
    layers_to_transform: [...adapter.layers],
    lora_alpha: alpha,
    lora_dropout: adapter.dropout,
    modules_to_save: null,
    peft_type: 'LORA',
    r: adapter.rank,
    rank_pattern: {},
    revision: null,
    target_modules: peftTargetModules(adapter.targetModules),
    task_type: 'CAUSAL_LM',
    use_dora: false,
    use_rslora: useRslora,
  };

  const tensors: Record<string, tf.Tensor> = {};
  try {
    for (const [key, tensor] of Object.entries(adapter.weights)) {
      if (parseLayerAdapterKey(key) === undefined) {
        throw new ArgumentError(
          'ADAPTER_KEY_INVALID',
          `Cannot write adapter weight "${key}" to PEFT: expected model.layers.{i}.<module path>.lora_a or .lora_b.`,
          { details: { key } },
        );
      }
      tensors[mlxKeyToPeft(key)] = tf.transpose(tensor);
    }
    await createAdapterFolder(folder);
    await writeSafetensors(path.join(folder, PEFT_WEIGHTS_FILE), tensors, { metadata: { format: 'pt' }, dtype: options.dtype });
    await writeJsonAtomic(path.join(folder, ADAPTER_CONFIG_FILE), config);
  } finally {
    tf.dispose(Object.values(tensors));
  }
}

interface PeftHyperparameters {
  rank: number;
  alpha: number;
  useRslora: boolean;
  dropout: number;
  layersToTransform: number[] | undefined;
}

function readPeftHyperparameters(config: Record<string, unknown>, source: string): PeftHyperparameters {
  if (config.peft_type !== 'LORA') {
    throw unsupported(source, `peft_type is ${JSON.stringify(config.peft_type)}, but only LORA adapters are supported`);
  }
  if (config.use_dora === true) {
    throw unsupported(source, 'use_dora is true, but DoRA adapters are not supported');
  }
  if (config.fan_in_fan_out === true) {
    throw unsupported(source, 'fan_in_fan_out is true (GPT-2 style Conv1D weights), which Llama and Qwen2 never use');
  }
  if (config.bias !== undefined && config.bias !== 'none') {
    throw unsupported(source, `bias is ${JSON.stringify(config.bias)}, but only "none" is supported`);
  }
  for (const key of ['rank_pattern', 'alpha_pattern']) {
    const pattern = config[key];
    if (pattern !== undefined && pattern !== null && Object.keys(pattern as object).length > 0) {
      throw unsupported(source, `${key} is set, but per-module ranks and alphas are not supported (one rank and scale per adapter)`);
    }
  }
  const modulesToSave = config.modules_to_save;
  if (Array.isArray(modulesToSave) && modulesToSave.length > 0) {
    throw unsupported(source, `modules_to_save lists ${JSON.stringify(modulesToSave)}, but only LoRA weights are supported`);
  }

  const rank = numberField(config, 'r', undefined, source);
  if (!Number.isInteger(rank) || rank < 1) {
    throw new FileFormatError('ADAPTER_CONFIG_INVALID', `Invalid ${source}: "r" must be a positive integer, got ${rank}.`, {
      details: { source, r: rank },
    });
  }
  // PEFT's LoraConfig defaults: lora_alpha 8, lora_dropout 0.0, use_rslora false.
  const alpha = numberField(config, 'lora_alpha', 8, source);
  const dropout = numberField(config, 'lora_dropout', 0, source);
  const useRslora = config.use_rslora === true;

  const declared = config.layers_to_transform;
  let layersToTransform: number[] | undefined;
  if (typeof declared === 'number') layersToTransform = [declared];
  else if (Array.isArray(declared)) layersToTransform = declared as number[];

  return { rank, alpha, useRslora, dropout, layersToTransform };
}

function checkPeftLayout(
  layout: { rank: number; layers: number[] },
  hyper: PeftHyperparameters,
  source: string,
): void {
  if (layout.rank !== hyper.rank) {
    throw new FileFormatError(
      'ADAPTER_RANK_MISMATCH',
      `Adapter ${source} declares r = ${hyper.rank}, but its weights have rank ${layout.rank}.`,
      { details: { source, declared: hyper.rank, actual: layout.rank } },
    );
  }
  if (hyper.layersToTransform !== undefined) {
    const allowed = new Set(hyper.layersToTransform);
    const outside = layout.layers.filter((layer) => !allowed.has(layer));
    if (outside.length > 0) {
      throw new FileFormatError(
        'ADAPTER_LAYERS_MISMATCH',
        `Adapter ${source} has weights for layers ${outside.join(', ')}, which layers_to_transform ` +
          `(${JSON.stringify(hyper.layersToTransform)}) excludes, so PEFT would not load them.`,
        { details: { source, outside, layersToTransform: hyper.layersToTransform } },
      );
    }
  }
}

function toMlxKeyOrUndefined(key: string): string | undefined {
  try {
    return peftKeyToMlx(key);
  } catch {
    return undefined;
  }
}

function resolveAlpha(adapter: LoraAdapter, useRslora: boolean, requested: number | undefined): number {
  const divisor = useRslora ? Math.sqrt(adapter.rank) : adapter.rank;
  if (requested !== undefined) {
    const scale = requested / divisor;
    if (!(Math.abs(scale - adapter.scale) <= 1e-6 * Math.abs(adapter.scale))) {
      throw new ArgumentError(
        'ADAPTER_ALPHA_MISMATCH',
        `lora_alpha ${requested} gives scale ${scale} with r = ${adapter.rank}${useRslora ? ' and rsLoRA' : ''}, ` +
          `but the adapter's scale is ${adapter.scale}. Omit alpha to derive it, or pass ${adapter.scale * divisor}.`,
        { details: { alpha: requested, rank: adapter.rank, useRslora, scale: adapter.scale } },
      );
    }
    return requested;
  }

  const alpha = adapter.scale * divisor;
  const nearest = Math.round(alpha);
  return Math.abs(alpha - nearest) <= 1e-9 * Math.max(1, Math.abs(alpha)) ? nearest : alpha;
}

/**
 * Lists `target_modules` as PEFT names them: the last component (`q_proj`), which PEFT matches
 * against the end of each module name, unless two paths share it, in which case the full paths
 * are written.
 */
function peftTargetModules(modulePaths: string[]): string[] {
  const lastNames = modulePaths.map((modulePath) => modulePath.slice(modulePath.lastIndexOf('.') + 1));
  return new Set(lastNames).size === lastNames.length ? [...lastNames].sort() : [...modulePaths].sort();
}

function defaultBaseModel(adapter: LoraAdapter): string | null {
  const declared = adapter.format === 'peft' ? adapter.config.base_model_name_or_path : adapter.config.model;
  return typeof declared === 'string' ? declared : null;
}

function unsupported(source: string, reason: string): FileFormatError {
  return new FileFormatError('ADAPTER_UNSUPPORTED', `Unsupported adapter ${source}: ${reason}.`, { details: { source } });
}
