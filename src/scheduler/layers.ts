/**
 * Layer numbers and LoRA module names in parameter names.
 */

/**
 * A layer container followed by the layer index: `layers.3` (Llama, Qwen, mlx_lm, PEFT),
 * `layer.3` (BERT), `h.3` (GPT-2) or `blocks.3`, separated by `.` or `/` and ending at a
 * separator or at the end of the name.
 */
const LAYER_INDEX = /(?:^|[./])(?:layers|layer|h|blocks|block)[./](\d+)(?=[./]|$)/;

/** The end of a LoRA matrix name: `.lora_a` (mlx_lm) or `.lora_A.weight` / `.lora_A.default.weight` (PEFT). */
const LORA_MATRIX_SUFFIX = /\.lora_[abAB](?:\.[^.]+)*$/;

/**
 * Returns the decoder layer number in a parameter name, or `undefined` when the name has none.
 *
 * The first layer container in the name decides, so later numbers (`experts.0`) are ignored:
 * `model.layers.1.mlp.experts.0.up_proj` is layer 1, and
 * `base_model.model.model.layers.3.mlp.down_proj.lora_A.weight` is layer 3.
 */
export function parseLayerNumber(name: string): number | undefined {
  const match = LAYER_INDEX.exec(name);
  return match === null ? undefined : Number(match[1]);
}

/**
 * Returns the name of the module a LoRA matrix belongs to, so the `lora_a`/`lora_b` pair of one
 * module shares a key: `model.layers.0.self_attn.q_proj` for both `...q_proj.lora_a` and
 * `...q_proj.lora_b`, and for PEFT's `...q_proj.lora_A.weight` and `...q_proj.lora_B.weight`.
 * Other names are returned unchanged.
 */
export function loraModuleName(name: string): string {
  return name.replace(LORA_MATRIX_SUFFIX, '');
}
