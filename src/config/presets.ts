/**
 * Named starting points for the tier settings. A preset holds only the options it sets; every
 * other option keeps its default or the value the caller passes with it.
 */
import type { NestedLearningConfigInput } from './schema.js';

/** Name of a preset. */
export type PresetName = 'conservative' | 'balanced' | 'aggressive';

/** The options a preset sets. */
export type ConfigPreset = Readonly<Partial<NestedLearningConfigInput>>;

/** The presets, by name. */
export const configPresets: Readonly<Record<PresetName, ConfigPreset>> = deepFreeze({
  conservative: {
    numTiers: 3,
    tierUpdateFrequencies: [1, 4, 8],
    tierAssignmentStrategy: 'layer_depth',
  },
  balanced: {
    numTiers: 3,
    tierUpdateFrequencies: [1, 2, 4],
    tierAssignmentStrategy: 'layer_depth',
  },
  aggressive: {
    numTiers: 3,
    tierUpdateFrequencies: [1, 2, 3],
    tierAssignmentStrategy: 'parameter_importance',
  },
});

/** One sentence per preset, for the docs. */
export const presetDescriptions: Readonly<Record<PresetName, string>> = {
  conservative:
    'Tiers assigned by layer depth update at every step, every 4th and every 8th step, so the slow tiers change least often.',
  balanced: 'The default: tiers assigned by layer depth update at every step, every 2nd and every 4th step.',
  aggressive:
    'Tiers assigned by gradient importance update at every step, every 2nd and every 3rd step, so the slow tiers change most often.',
};

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null) {
    for (const entry of Object.values(value)) {
      deepFreeze(entry);
    }
    Object.freeze(value);
  }
  return value;
}
