export { NestedAdam } from './nested-adam.js';
export type { TierStats } from './nested-adam.js';
export { NESTED_ADAM_DEFAULTS } from './options.js';
export type { InactiveGradients, LearningRate, NestedAdamOptions, ResolvedTier, TierOptions } from './options.js';
export { STATE_FORMAT_VERSION, STATE_METADATA_KEY, stateFromTensors, stateToTensors } from './state.js';
export type { NestedAdamHyperparameters, NestedAdamState } from './state.js';
export { adamwCoefficients, adamwStep } from './adamw.js';
export type { AdamWCoefficients, AdamWHyperparameters, AdamWStepResult } from './adamw.js';
