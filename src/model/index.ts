export * from './types.js';
export * from './hf-config.js';
export * from './checkpoint.js';
export { CausalLM } from './causal-lm.js';
export type {
  CausalLMOptions,
  ForwardOptions,
  LossAndGradients,
  LossAndGradientsOptions,
  LossResult,
  TrainingBatch,
} from './causal-lm.js';
export { KVCache } from './kv-cache.js';
export { loadCausalLM } from './load.js';
export type { LoadCausalLMOptions, LoraAdapterWeights } from './load.js';
export { LORA_MODULE_PATHS, LORA_TARGET_MODULES, loraModulePrefix, resolveLoraOptions } from './lora.js';
export type { LoraOptions, LoraTargetModule, ResolvedLoraOptions } from './lora.js';
export { maskedCrossEntropy } from './loss.js';
export type { MaskedCrossEntropy } from './loss.js';
export type { GenerateOptions } from './generate.js';
export { rotaryInverseFrequencies } from './rope.js';
export { decoderWeightShapes } from './weights.js';
