export * from './config.js';
export * from './presets.js';
export * from './describe.js';
export { snakeCaseName, CONFIG_KEY_ALIASES, IGNORED_CONFIG_KEYS } from './keys.js';
export type { TierAssignmentStrategyName, InactiveGradientsMode, ConfigFieldName } from './schema.js';
export type { ConfigFileFailure } from './load.js';
