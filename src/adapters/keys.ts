/**
 * Adapter weight names in the PEFT and mlx_lm conventions.
 *
 * PEFT saves `base_model.model.<module path>.lora_A.weight` / `.lora_B.weight`, where the module
 * path is the Hugging Face one (`model.layers.0.self_attn.q_proj`). mlx_lm saves
 * `<module path>.lora_a` / `.lora_b` with the same module path. Conversion rewrites only that
 * prefix and that final suffix, so a module whose own name contains `weight` or `lora` keeps it.
 */
import { ArgumentError } from '../errors.js';

/** Prefix PEFT puts before the module path of the wrapped model. */
export const PEFT_KEY_PREFIX = 'base_model.model.';

const PEFT_SUFFIX_A = '.lora_A.weight';
const PEFT_SUFFIX_B = '.lora_B.weight';
const MLX_SUFFIX_A = '.lora_a';
const MLX_SUFFIX_B = '.lora_b';

/** Converts a PEFT key (`base_model.model.X.lora_A.weight`) to the mlx_lm key (`X.lora_a`). */
export function peftKeyToMlx(key: string): string {
  if (key.startsWith(PEFT_KEY_PREFIX)) {
    const body = key.slice(PEFT_KEY_PREFIX.length);
    if (body.endsWith(PEFT_SUFFIX_A)) return body.slice(0, -PEFT_SUFFIX_A.length) + MLX_SUFFIX_A;
    if (body.endsWith(PEFT_SUFFIX_B)) return body.slice(0, -PEFT_SUFFIX_B.length) + MLX_SUFFIX_B;
  }
  throw new ArgumentError(
    'ADAPTER_KEY_INVALID',
    `"${key}" is not a PEFT LoRA key: expected "${PEFT_KEY_PREFIX}<module path>.lora_A.weight" or "...lora_B.weight".`,
    { details: { key } },
  );
}

/** Converts an mlx_lm key (`X.lora_a`) to the PEFT key (`base_model.model.X.lora_A.weight`). */
export function mlxKeyToPeft(key: string): string {
  if (key.endsWith(MLX_SUFFIX_A)) return PEFT_KEY_PREFIX + key.slice(0, -MLX_SUFFIX_A.length) + PEFT_SUFFIX_A;
  if (key.endsWith(MLX_SUFFIX_B)) return PEFT_KEY_PREFIX + key.slice(0, -MLX_SUFFIX_B.length) + PEFT_SUFFIX_B;
  throw new ArgumentError(
    'ADAPTER_KEY_INVALID',
    `"${key}" is not an mlx_lm LoRA key: expected "<module path>.lora_a" or "<module path>.lora_b".`,
    { details: { key } },
  );
}

/** The parts of a decoder-layer adapter key in the mlx_lm layout. */
export interface LayerAdapterKey {
  layer: number;
  /** Module path inside the layer, for example `self_attn.q_proj`. */
  modulePath: string;
  matrix: 'lora_a' | 'lora_b';
}

const LAYER_KEY = /^model\.layers\.(0|[1-9]\d*)\.(.+)\.(lora_a|lora_b)$/;

/** Splits `model.layers.{i}.{module path}.lora_a|lora_b`, or returns undefined for any other key. */
export function parseLayerAdapterKey(key: string): LayerAdapterKey | undefined {
  const match = LAYER_KEY.exec(key);
  if (match === null) return undefined;
  return { layer: Number(match[1]), modulePath: match[2] as string, matrix: match[3] as 'lora_a' | 'lora_b' };
}

/** Builds the mlx_lm key of one matrix of a decoder-layer projection. */
export function layerAdapterKey(layer: number, modulePath: string, matrix: 'lora_a' | 'lora_b'): string {
  return `model.layers.${layer}.${modulePath}.${matrix}`;
}
