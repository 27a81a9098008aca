/**
 * Loading a {@link CausalLM} from a Hugging Face model folder, optionally with a LoRA adapter.
 */
import * as tf from '@tensorflow/tfjs';

import { ArgumentError } from '../errors.js';
import { CausalLM } from './causal-lm.js';
import { loadCheckpointWeights } from './checkpoint.js';
import { loadModelConfig } from './hf-config.js';
import type { LoraOptions } from './lora.js';

/**
 * LoRA weights to load into the model, in the mlx_lm layout: the shape of the `LoraAdapter` that
 * `readAdapter` returns.
 */
export interface LoraAdapterWeights {
  rank: number;
  /** Multiplier of the adapter output (mlx_lm `scale`, PEFT `lora_alpha / r`). */
  scale: number;
  dropout?: number;
  /** Adapted projections, by name (`q_proj`) or path (`self_attn.q_proj`). */
  targetModules: readonly string[];
  /** Adapted layers, counted from 0. */
  layers: readonly number[];
  /** `model.layers.{i}.{module path}.lora_a` `[in, rank]` and `.lora_b` `[rank, out]`. */
  weights: Record<string, tf.Tensor>;
}

/** Options of {@link loadCausalLM}. */
export interface LoadCausalLMOptions {
  /**
   * Fresh LoRA adapters to add. With `adapter`, only `dropout` and `seed` may be set here: rank, scale,
   * target modules and layers come from the adapter.
   */
  lora?: LoraOptions | Pick<LoraOptions, 'dropout' | 'seed'>;
  /** An existing adapter whose weights and scale the model starts from. The caller keeps ownership of its tensors. */
  adapter?: LoraAdapterWeights;
}

/**
 * Loads `config.json` and the safetensors weights of a Hugging Face Llama or Qwen2 folder and builds
 * a {@link CausalLM}, with fresh LoRA adapters (`lora`) or an existing adapter (`adapter`).
 */
export async function loadCausalLM(folder: string, options: LoadCausalLMOptions = {}): Promise<CausalLM> {
  const config = await loadModelConfig(folder);
  const lora = loraOptionsFor(options);
  const weights = await loadCheckpointWeights(folder, config);

  let model: CausalLM;
  try {
    model = CausalLM.fromWeights({ config, weights, lora });
  } catch (error) {
    tf.dispose(Object.values(weights));
    throw error;
  }

  if (options.adapter !== undefined) {
    try {
      model.setLoraWeights(options.adapter.weights, options.adapter.scale);
    } catch (error) {
      model.dispose();
      throw error;
    }
  }
  return model;
}

function loraOptionsFor(options: LoadCausalLMOptions): LoraOptions | undefined {
  const { adapter, lora } = options;
  if (adapter === undefined) {
    if (lora !== undefined && !('rank' in lora && 'scale' in lora)) {
      throw new ArgumentError('LORA_INVALID_OPTION', 'LoRA options without an adapter need rank and scale.', {
        details: { lora },
      });
    }
    return lora as LoraOptions | undefined;
  }

  const conflicting = ['rank', 'scale', 'targetModules', 'layers'].filter((field) => lora !== undefined && field in lora);
  if (conflicting.length > 0) {
    throw new ArgumentError(
      'LORA_INVALID_OPTION',
      `LoRA option(s) ${conflicting.join(', ')} conflict with the adapter, which sets them. Pass only dropout and seed with an adapter.`,
      { details: { conflicting } },
    );
  }
  return {
    rank: adapter.rank,
    scale: adapter.scale,
    dropout: lora?.dropout ?? adapter.dropout ?? 0,
    targetModules: adapter.targetModules,
    layers: adapter.layers,
    seed: lora?.seed,
  };
}
