/**
 * The content of `GET /nested-learning/tier-info`: what tiers and update frequencies mean, built
 * from the library's own definitions (the configuration schema's descriptions and defaults, the
 * presets, the step clock), so the page never disagrees with the code.
 */
import {
  NestedLearningConfig,
  activeTiers,
  presetDescriptions,
  type ConfigFieldInfo,
  type PresetName,
} from '../index.js';

/** One named choice of an option, such as a strategy. */
export interface OptionChoice {
  name: string;
}

/** One preset, with the tier schedule its frequencies give. */
export interface PresetInfo {
  name: PresetName;
  description: string;
  /** The options the preset sets. */
  options: Record<string, unknown>;
  /** Active tiers at steps 1 to {@link TierInfo.scheduleSteps}. */
  schedule: ScheduleRow[];
}

/** Tiers active at one optimizer step. */
export interface ScheduleRow {
  step: number;
  activeTiers: number[];
}

/** Everything the tier-info endpoint returns. */
export interface TierInfo {
  clock: {
    /** The rule of the step clock in one sentence. */
    rule: string;
    /** Active tiers of the default frequencies at steps 1 to `scheduleSteps`. */
    defaultFrequencies: number[];
    defaultSchedule: ScheduleRow[];
  };
  /** Number of steps each schedule covers. */
  scheduleSteps: number;
  /** The tier options of the configuration: name, snake_case name, type, default, description. */
  fields: ConfigFieldInfo[];
  strategies: { description: string; default: unknown; choices: OptionChoice[] };
  inactiveGradients: { description: string; default: unknown; choices: OptionChoice[] };
  presets: PresetInfo[];
  /** The rules across options that involve tiers. */
  rules: string[];
}

/** Steps shown in the schedules: two full cycles of the slowest default tier of every preset. */
const SCHEDULE_STEPS = 16;

/**
 * The rule that `activeTiers` and `isTierActive` implement, in words. The schedules next to it
 * are computed by `activeTiers`, so they show the code's behaviour rather than this sentence.
 */
const CLOCK_RULE =
  'Steps count optimizer steps from 1, not micro-batches. Tier k with update frequency f_k is active at step s when s % f_k == 0; ' +
  'active tiers take an AdamW step, and inactive tiers keep their weights and moments. Tier 0 is the fastest tier.';

/** Builds the tier information from the library's definitions. */
export function buildTierInfo(): TierInfo {
  const fields = NestedLearningConfig.fields();
  const tierFields = fields.filter((field) => field.section === 'Tiers');
  const strategyField = requireField(fields, 'tierAssignmentStrategy');
  const inactiveField = requireField(fields, 'inactiveGradients');
  const frequencyField = requireField(fields, 'tierUpdateFrequencies');
  const properties = (NestedLearningConfig.jsonSchema() as { properties: Record<string, { enum?: unknown[] }> }).properties;
  const defaultFrequencies = frequencyField.default as number[];

  const presets = (Object.keys(NestedLearningConfig.presets) as PresetName[]).map((name) => {
    const options = { ...NestedLearningConfig.presets[name] } as Record<string, unknown>;
    const frequencies = (options.tierUpdateFrequencies as number[] | undefined) ?? defaultFrequencies;
    return { name, description: presetDescriptions[name], options, schedule: schedule(frequencies) };
  });

  return {
    clock: { rule: CLOCK_RULE, defaultFrequencies, defaultSchedule: schedule(defaultFrequencies) },
    scheduleSteps: SCHEDULE_STEPS,
    fields: tierFields,
    strategies: {
      description: strategyField.description,
      default: strategyField.default,
      choices: choicesOf(properties.tierAssignmentStrategy?.enum),
    },
    inactiveGradients: {
      description: inactiveField.description,
      default: inactiveField.default,
      choices: choicesOf(properties.inactiveGradients?.enum),
    },
    presets,
    rules: NestedLearningConfig.rules.filter((rule) => /tier/i.test(rule)),
  };
}

function schedule(frequencies: readonly number[]): ScheduleRow[] {
  return Array.from({ length: SCHEDULE_STEPS }, (_, index) => ({
    step: index + 1,
    activeTiers: activeTiers(index + 1, frequencies),
  }));
}

function choicesOf(values: unknown[] | undefined): OptionChoice[] {
  return (values ?? []).map((value) => ({ name: String(value) }));
}

function requireField(fields: readonly ConfigFieldInfo[], name: string): ConfigFieldInfo {
  const field = fields.find((candidate) => candidate.name === name);
  if (field === undefined) {
    // Only reachable when the configuration schema loses one of these options.
    throw new Error(`The configuration schema has no option ${name}.`);
  }
  return field;
}
