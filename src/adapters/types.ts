import type * as tf from '@tensorflow/tfjs';

/** An on-disk LoRA adapter format: Hugging Face PEFT or mlx_lm. */
export type AdapterFormat = 'peft' | 'mlx';

/**
 * A LoRA adapter in the library's canonical form, which is the mlx_lm layout.
 *
 * For each adapted projection `model.layers.{i}.{module path}` (for example
 * `model.layers.3.self_attn.q_proj`), `weights` contains `<prefix>.lora_a` of shape `[in, rank]` and
 * `<prefix>.lora_b` of shape `[rank, out]`. The projection's output becomes
 * `W x + scale * (x lora_a) lora_b`. PEFT's `lora_A.weight` `[rank, in]` and `lora_B.weight`
 * `[out, rank]` are the transposes, and its scaling `lora_alpha / r` (or `lora_alpha / sqrt(r)`
 * with rsLoRA) is `scale`.
 */
export interface LoraAdapter {
  /** Format the adapter was read from. An adapter built in memory uses `mlx`, the layout of its weights. */
  format: AdapterFormat;
  rank: number;
  /** Multiplier of the adapter output (mlx_lm `scale`). */
  scale: number;
  /** Dropout probability on the adapter input during training. */
  dropout: number;
  /** Adapted module paths inside a decoder layer, sorted, for example `self_attn.q_proj`. */
  targetModules: string[];
  /** Decoder layers (from 0) that have adapter weights, ascending. */
  layers: number[];
  /** Adapter weights in the mlx_lm layout, keyed as described above. */
  weights: Record<string, tf.Tensor>;
  /** `adapter_config.json` as read, or `{}` for an adapter built in memory. */
  config: Record<string, unknown>;
}
