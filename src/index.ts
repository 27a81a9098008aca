/**
 * nested-learning: continual LoRA fine-tuning of causal language models with Nested Learning's
 * multi-frequency parameter tiers, on TensorFlow.js.
 *
 * @module nested-learning
 */
export * from './errors.js';
export * from './logger.js';
export * from './backend/index.js';
export * from './io/index.js';
export * from './config/index.js';
export * from './scheduler/index.js';
export * from './optimizer/index.js';
export * from './model/index.js';
export * from './adapters/index.js';
export * from './data/index.js';
export * from './trainer/index.js';
export { LIBRARY_VERSION } from './trainer/version.js';
export { EMBEDDED_DEFAULT_STEPS, embeddedDefaultConfig, embeddedDefaultPaths } from './embedded-default.js';
export type { EmbeddedDefaultPaths } from './embedded-default.js';
