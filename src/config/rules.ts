/**
 * Rules that involve more than one option, or more than one entry of a list. Each rule lists the
 * options it reads and runs only when all of them passed their own field checks, so one mistake
 * is reported once. The summaries are printed in the configuration docs.
 */
import type { ConfigFieldName, NestedLearningConfigOutput } from './schema.js';
import { formatValue } from './values.js';

/** A problem found by a rule, located by its path inside the configuration. */
export interface RuleIssue {
  path: (string | number)[];
  /** Description of the problem, as a sentence fragment that follows the path (for example `has ...`). */
  message: string;
}

/** Returns the name under which the caller spelled an option (camelCase or snake_case). */
export type FieldNamer = (field: ConfigFieldName) => string;

/** One rule across options. */
export interface ConfigRule {
  /** The rule in one sentence, for the docs. */
  summary: string;
  /** Options the rule reads; it is skipped when one of them failed its own check. */
  fields: readonly ConfigFieldName[];
  /** Returns the problems found, or an empty list. */
  check(config: NestedLearningConfigOutput, name: FieldNamer): RuleIssue[];
}

/** A `/pattern/flags` string in a tierMap key. */
export const REGEX_LITERAL = /^\/(.+)\/([a-z]*)$/s;

export const configRules: readonly ConfigRule[] = [
  {
    summary: 'tierUpdateFrequencies has exactly numTiers entries.',
    fields: ['numTiers', 'tierUpdateFrequencies'],
    check(config, name) {
      const frequencies = config.tierUpdateFrequencies;
      if (frequencies.length === config.numTiers) {
        return [];
      }
      return [
        {
          path: ['tierUpdateFrequencies'],
          message:
            `has ${frequencies.length} entries (${formatValue(frequencies)}) but ${name('numTiers')} is ${config.numTiers}. ` +
            'Give one update frequency per tier',
        },
      ];
    },
  },
  {
    summary: 'tierUpdateFrequencies does not decrease from one tier to the next, because tier 0 is the fastest tier.',
    fields: ['tierUpdateFrequencies'],
    check(config) {
      const frequencies = config.tierUpdateFrequencies;
      const issues: RuleIssue[] = [];
      for (let tier = 1; tier < frequencies.length; tier += 1) {
        const previous = frequencies[tier - 1] as number;
        const current = frequencies[tier] as number;
        if (current < previous) {
          issues.push({
            path: ['tierUpdateFrequencies', tier],
            message: `is ${current}, less than the ${previous} of tier ${tier - 1}. Frequencies must not decrease, because tier 0 is the fastest tier`,
          });
        }
      }
      return issues;
    },
  },
  {
    summary: 'The manual strategy needs a tierMap with at least one rule.',
    fields: ['tierAssignmentStrategy', 'tierMap'],
    check(config, name) {
      if (config.tierAssignmentStrategy !== 'manual') {
        return [];
      }
      if (config.tierMap !== undefined && Object.keys(config.tierMap).length > 0) {
        return [];
      }
      const problem = config.tierMap === undefined ? 'is missing' : 'has no rules';
      return [
        {
          path: ['tierMap'],
          message: `${problem}, but ${name('tierAssignmentStrategy')} is "manual". Map parameter names, globs or /regular expressions/ to tiers`,
        },
      ];
    },
  },
  {
    summary: 'tierMap is only given with the manual strategy, because the other strategies ignore it.',
    fields: ['tierAssignmentStrategy', 'tierMap'],
    check(config, name) {
      if (config.tierMap === undefined || config.tierAssignmentStrategy === 'manual') {
        return [];
      }
      return [
        {
          path: ['tierMap'],
          message:
            `is set but ${name('tierAssignmentStrategy')} is "${config.tierAssignmentStrategy}", which ignores it. ` +
            `Set ${name('tierAssignmentStrategy')} to "manual" or remove ${name('tierMap')}`,
        },
      ];
    },
  },
  {
    summary: 'Every tier in tierMap is below numTiers.',
    fields: ['tierMap', 'numTiers'],
    check(config, name) {
      return Object.entries(config.tierMap ?? {})
        .filter(([, tier]) => tier >= config.numTiers)
        .map(([pattern, tier]) => ({
          path: ['tierMap', pattern],
          message: `is tier ${tier}, but ${name('numTiers')} is ${config.numTiers}, so tiers run from 0 to ${config.numTiers - 1}`,
        }));
    },
  },
  {
    summary: 'Every /regular expression/flags key of tierMap compiles as a JavaScript regular expression.',
    fields: ['tierMap'],
    check(config) {
      const issues: RuleIssue[] = [];
      for (const pattern of Object.keys(config.tierMap ?? {})) {
        const literal = REGEX_LITERAL.exec(pattern);
        if (literal === null) {
          continue;
        }
        try {
          new RegExp(literal[1] as string, literal[2]);
        } catch (error) {
          issues.push({
            path: ['tierMap', pattern],
            message: `is not a valid regular expression (${(error as Error).message}). Fix the pattern, or drop the slashes to match the name exactly`,
          });
        }
      }
      return issues;
    },
  },
  {
    summary: 'tierLearningRateScales and tierWeightDecays, when given, have exactly numTiers entries.',
    fields: ['numTiers', 'tierLearningRateScales', 'tierWeightDecays'],
    check(config, name) {
      const issues: RuleIssue[] = [];
      for (const field of ['tierLearningRateScales', 'tierWeightDecays'] as const) {
        const values = config[field];
        if (values !== undefined && values.length !== config.numTiers) {
          issues.push({
            path: [field],
            message: `has ${values.length} entries (${formatValue(values)}) but ${name('numTiers')} is ${config.numTiers}. Give one value per tier`,
          });
        }
      }
      return issues;
    },
  },
  {
    summary: 'defaultTier, when given, is below numTiers.',
    fields: ['defaultTier', 'numTiers'],
    check(config, name) {
      if (config.defaultTier === undefined || config.defaultTier < config.numTiers) {
        return [];
      }
      return [
        {
          path: ['defaultTier'],
          message: `is ${config.defaultTier}, but ${name('numTiers')} is ${config.numTiers}, so tiers run from 0 to ${config.numTiers - 1}`,
        },
      ];
    },
  },
  {
    summary: 'warmupSteps is at most numSteps.',
    fields: ['warmupSteps', 'numSteps'],
    check(config, name) {
      if (config.warmupSteps <= config.numSteps) {
        return [];
      }
      return [
        {
          path: ['warmupSteps'],
          message: `is ${config.warmupSteps}, more than ${name('numSteps')} (${config.numSteps}). Warmup must end within the run`,
        },
      ];
    },
  },
  {
    summary: 'minLearningRate is at most learningRate.',
    fields: ['minLearningRate', 'learningRate'],
    check(config, name) {
      if (config.minLearningRate <= config.learningRate) {
        return [];
      }
      return [
        {
          path: ['minLearningRate'],
          message: `is ${config.minLearningRate}, more than ${name('learningRate')} (${config.learningRate}). The decay floor must not exceed the peak rate`,
        },
      ];
    },
  },
  {
    summary: 'earlyStop and saveBestOnly need valDataPath and an evalEvery above 0, because both compare validation losses.',
    fields: ['earlyStop', 'saveBestOnly', 'valDataPath', 'evalEvery'],
    check(config, name) {
      const issues: RuleIssue[] = [];
      for (const field of ['earlyStop', 'saveBestOnly'] as const) {
        if (!config[field]) {
          continue;
        }
        if (config.valDataPath === undefined) {
          issues.push({
            path: [field],
            message: `is true but ${name('valDataPath')} is missing, and ${name(field)} compares validation losses. Set ${name('valDataPath')} or set ${name(field)} to false`,
          });
        } else if (config.evalEvery === 0) {
          issues.push({
            path: [field],
            message: `is true but ${name('evalEvery')} is 0, so no validation loss is measured during training. Set ${name('evalEvery')} above 0 or set ${name(field)} to false`,
          });
        }
      }
      return issues;
    },
  },
  {
    summary: 'resume and overwrite are not both true.',
    fields: ['resume', 'overwrite'],
    check(config, name) {
      if (!(config.resume && config.overwrite)) {
        return [];
      }
      return [
        {
          path: ['overwrite'],
          message: `is true together with ${name('resume')}, but resuming keeps the earlier run and overwriting deletes it. Set one of them to false`,
        },
      ];
    },
  },
];
