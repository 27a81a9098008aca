import { describe, expect, it } from 'vitest';

import { ConfigError, NestedLearningError } from '../src/errors.js';
import { NestedLearningConfig, type ConfigIssue } from '../src/config/index.js';

const REQUIRED = { baseModelPath: './models/tiny', trainDataPath: './data/train.jsonl' };

/** Parses `input` expecting failure and returns the error. */
function failure(input: unknown): ConfigError {
  const result = NestedLearningConfig.safeParse(input);
  if (result.success) {
    throw new Error(`expected the configuration to be invalid: ${JSON.stringify(input)}`);
  }
  return result.error;
}

function issuesOf(input: unknown): ConfigIssue[] {
  return failure(input).details.issues as ConfigIssue[];
}

/** Returns the lines of the error message that list the problems. */
function problemLines(input: unknown): string[] {
  return failure(input).message.split('\n').slice(1);
}

describe('NestedLearningConfig defaults', () => {
  it('fills every default', () => {
    const config = NestedLearningConfig.parse(REQUIRED);

    expect(config.outputDir).toBe('./nested_learning/checkpoints');
    expect(config.experimentName).toBe('nested_learning_experiment');
    expect(config.numTiers).toBe(3);
    expect(config.tierUpdateFrequencies).toEqual([1, 2, 4]);
    expect(config.tierAssignmentStrategy).toBe('layer_depth');
    expect(config.layerDepthFastEnd).toBe('low');
    expect(config.inactiveGradients).toBe('accumulate');
    expect(config.loraRank).toBe(8);
    expect(config.loraAlpha).toBe(16);
    expect(config.loraDropout).toBe(0);
    expect(config.loraTargetModules).toEqual(['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj']);
    expect(config.loraLayers).toBe('all');
    expect(config.useRslora).toBe(false);
    expect(config.learningRate).toBe(1e-5);
    expect(config.lrSchedule).toBe('constant');
    expect(config.warmupSteps).toBe(0);
    expect(config.batchSize).toBe(4);
    expect(config.gradientAccumulationSteps).toBe(1);
    expect(config.numSteps).toBe(1000);
    expect(config.maxSeqLength).toBe(2048);
    expect(config.maxGradNorm).toBe(1);
    expect(config.beta1).toBe(0.9);
    expect(config.beta2).toBe(0.999);
    expect(config.epsilon).toBe(1e-8);
    expect(config.weightDecay).toBe(0);
    expect(config.seed).toBe(0);
    expect(config.maskPrompt).toBe(false);
    expect(config.maxConsecutiveNonFiniteSteps).toBe(5);
    expect(config.sortByLength).toBe(false);
    expect(config.dropLastBatch).toBe(false);
    expect(config.promptField).toBe('prompt');
    expect(config.completionField).toBe('completion');
    expect(config.evalEvery).toBe(100);
    expect(config.evalBatches).toBe(25);
    expect(config.checkpointEvery).toBe(100);
    expect(config.resume).toBe(false);
    expect(config.overwrite).toBe(false);
    expect(config.backend).toBe('auto');
  });

  it('leaves optional options out', () => {
    const config = NestedLearningConfig.parse(REQUIRED);

    expect('adapterPath' in config).toBe(false);
    expect('valDataPath' in config).toBe(false);
    expect('tierMap' in config).toBe(false);
    expect('defaultTier' in config).toBe(false);
    expect('tierLearningRateScales' in config).toBe(false);
  });

  it('derives frequencies from numTiers alone', () => {
    const config = NestedLearningConfig.parse({ ...REQUIRED, numTiers: 5 });

    expect(config.tierUpdateFrequencies).toEqual([1, 2, 4, 8, 16]);
  });

  it('derives numTiers from frequencies alone', () => {
    const config = NestedLearningConfig.parse({ ...REQUIRED, tierUpdateFrequencies: [1, 3] });

    expect(config.numTiers).toBe(2);
  });

  it('matches the zod schema on valid input', () => {
    const input = { ...REQUIRED, loraRank: 16, tierMap: { '**': 0 }, tierAssignmentStrategy: 'manual' as const };

    expect(NestedLearningConfig.parse(input)).toEqual(NestedLearningConfig.schema.parse(input));
  });
});

describe('NestedLearningConfig snake_case keys', () => {
  it('maps snake_case keys to camelCase', () => {
    const config = NestedLearningConfig.parse({
      base_model_path: './m',
      train_data_path: './t.jsonl',
      tier_update_frequencies: [1, 4, 8],
      num_tiers: 3,
      lora_rank: 4,
      max_consecutive_non_finite_steps: 2,
      keep_last_n_checkpoints: -1,
    });

    expect(config.baseModelPath).toBe('./m');
    expect(config.trainDataPath).toBe('./t.jsonl');
    expect(config.tierUpdateFrequencies).toEqual([1, 4, 8]);
    expect(config.loraRank).toBe(4);
    expect(config.maxConsecutiveNonFiniteSteps).toBe(2);
    expect(config.keepLastNCheckpoints).toBe(-1);
  });

  it('accepts a key given both ways with one value', () => {
    const config = NestedLearningConfig.parse({ ...REQUIRED, loraRank: 4, lora_rank: 4 });

    expect(config.loraRank).toBe(4);
  });

  it('rejects a key given both ways with two values', () => {
    expect(problemLines({ ...REQUIRED, loraRank: 4, lora_rank: 16 })).toEqual([
      '- lora_rank: sets the same option as loraRank but to a different value. Keep only one of loraRank and lora_rank.',
    ]);
  });

  it('maps the alias output_path', () => {
    expect(NestedLearningConfig.parse({ ...REQUIRED, output_path: './runs' }).outputDir).toBe('./runs');
  });

  it('ignores mixed_precision', () => {
    const config = NestedLearningConfig.parse({ ...REQUIRED, mixed_precision: true });

    expect('mixed_precision' in config).toBe(false);
    expect('mixedPrecision' in config).toBe(false);
  });

  it('round-trips through toSnakeCase', () => {
    const config = NestedLearningConfig.parse({
      ...REQUIRED,
      valDataPath: './v.jsonl',
      tierAssignmentStrategy: 'manual',
      tierMap: { 'model.layers.*.mlp.**': 1, '**': 0 },
      tierWeightDecays: [0, 0.01, 0.1],
    });
    const snake = NestedLearningConfig.toSnakeCase(config);

    expect(snake.base_model_path).toBe('./models/tiny');
    expect(snake.tier_weight_decays).toEqual([0, 0.01, 0.1]);
    expect(snake.tier_map).toEqual({ 'model.layers.*.mlp.**': 1, '**': 0 });
    expect(Object.keys(snake).every((key) => key === key.toLowerCase())).toBe(true);
    expect('adapter_path' in snake).toBe(false);
    expect(NestedLearningConfig.parse(snake)).toEqual(config);
  });
});

describe('NestedLearningConfig unknown keys', () => {
  it('suggests the nearest camelCase option', () => {
    expect(problemLines({ ...REQUIRED, loraRnak: 4 })).toEqual(['- loraRnak: is not a known option. Did you mean loraRank?']);
  });

  it('suggests the nearest snake_case option', () => {
    expect(problemLines({ ...REQUIRED, learning_rte: 0.1 })).toEqual([
      '- learning_rte: is not a known option. Did you mean learning_rate?',
    ]);
  });

  it('names a key without a near option', () => {
    expect(problemLines({ ...REQUIRED, colour: 'blue' })).toEqual(['- colour: is not a known option.']);
  });
});

describe('NestedLearningConfig field checks', () => {
  it('reports every problem at once', () => {
    const error = failure({
      baseModelPath: '',
      learningRate: -1,
      loraDropout: 1,
      lrSchedule: 'cos',
      tierUpdateFrequencies: [1, 2.5, 4],
    });

    expect(error).toBeInstanceOf(ConfigError);
    expect(NestedLearningError.isInstance(error)).toBe(true);
    expect(error.code).toBe('CONFIG_INVALID');
    expect(error.message).toBe(
      [
        'Invalid configuration (6 problems):',
        '- baseModelPath: must be a non-empty string, got "" (an empty string).',
        '- trainDataPath: is required but missing. Set it to a non-empty string.',
        '- tierUpdateFrequencies[1]: must be an integer of at least 1, got 2.5.',
        '- loraDropout: must be a number of at least 0 and less than 1, got 1.',
        '- learningRate: must be a number greater than 0, got -1.',
        '- lrSchedule: must be "constant", "cosine" or "linear", got "cos".',
      ].join('\n'),
    );
  });

  it('lists issues with path, message and value', () => {
    expect(issuesOf({ ...REQUIRED, batchSize: 0 })).toEqual([
      { path: 'batchSize', message: 'must be an integer of at least 1, got 0.', value: 0, field: 'batchSize' },
    ]);
  });

  it('rejects an empty string for a number', () => {
    expect(problemLines({ ...REQUIRED, learningRate: '' })).toEqual([
      '- learningRate: must be a number greater than 0, got "" (an empty string).',
    ]);
  });

  it('rejects NaN and Infinity', () => {
    expect(problemLines({ ...REQUIRED, beta1: NaN, weightDecay: Infinity })).toEqual([
      '- beta1: must be a number of at least 0 and less than 1, got NaN.',
      '- weightDecay: must be a number of at least 0, got Infinity.',
    ]);
  });

  it('accepts decimal number strings', () => {
    const config = NestedLearningConfig.parse({ ...REQUIRED, learningRate: '1e-5', loraRank: '16', tierUpdateFrequencies: ['1', '2', '4'] });

    expect(config.learningRate).toBe(1e-5);
    expect(config.loraRank).toBe(16);
    expect(config.tierUpdateFrequencies).toEqual([1, 2, 4]);
  });

  it('rejects number strings that are not decimal literals', () => {
    for (const text of [' 8', '0x10', '1_000', 'NaN', 'Infinity', '8px']) {
      expect(problemLines({ ...REQUIRED, loraRank: text })).toEqual([
        `- loraRank: must be an integer of at least 1, got ${JSON.stringify(text)}.`,
      ]);
    }
  });

  it('rejects non-integer integers', () => {
    expect(problemLines({ ...REQUIRED, numSteps: 10.5 })).toEqual(['- numSteps: must be an integer of at least 1, got 10.5.']);
  });

  it('rejects null for an option with a default', () => {
    expect(problemLines({ ...REQUIRED, seed: null })).toEqual([
      '- seed: must be an integer from 0 to 4294967295, got null. Remove the key to use the default, 0.',
    ]);
  });

  it('treats null as absent for optional options', () => {
    const config = NestedLearningConfig.parse({ ...REQUIRED, valDataPath: null, defaultTier: null });

    expect(config.valDataPath).toBeUndefined();
    expect(config.defaultTier).toBeUndefined();
  });

  it('treats an empty adapter path as absent', () => {
    expect(NestedLearningConfig.parse({ ...REQUIRED, adapter_path: '' }).adapterPath).toBeUndefined();
  });

  it('rejects an empty required path', () => {
    expect(problemLines({ ...REQUIRED, trainDataPath: '' })).toEqual([
      '- trainDataPath: must be a non-empty string, got "" (an empty string).',
    ]);
  });

  it('rejects experiment names that are not one folder', () => {
    for (const name of ['..', '.', 'a/b', 'a\\b', '']) {
      expect(problemLines({ ...REQUIRED, experimentName: name })).toHaveLength(1);
    }
    expect(problemLines({ ...REQUIRED, experimentName: '..' })).toEqual([
      '- experimentName: must be one folder name: not empty, not "." or "..", and without "/" or "\\", got "..".',
    ]);
  });

  it('rejects a repeated target module', () => {
    expect(problemLines({ ...REQUIRED, loraTargetModules: ['q_proj', 'q_proj'] })).toEqual([
      '- loraTargetModules: must not list a module twice, got ["q_proj", "q_proj"].',
    ]);
  });

  it('rejects an empty target module list', () => {
    expect(problemLines({ ...REQUIRED, loraTargetModules: [] })).toEqual([
      '- loraTargetModules: must be a non-empty list of non-empty strings, got [].',
    ]);
  });

  it('checks the union options', () => {
    expect(problemLines({ ...REQUIRED, loraLayers: 0, evalBatches: 0, keepLastNCheckpoints: -2 })).toEqual([
      '- loraLayers: must be "all" or an integer of at least 1, got 0.',
      '- evalBatches: must be -1 or an integer of at least 1, got 0.',
      '- keepLastNCheckpoints: must be -1 or an integer of at least 1, got -2.',
    ]);
    const config = NestedLearningConfig.parse({ ...REQUIRED, loraLayers: 16, evalBatches: -1 });
    expect(config.loraLayers).toBe(16);
    expect(config.evalBatches).toBe(-1);
  });

  it('rejects a seed above 32 bits', () => {
    expect(problemLines({ ...REQUIRED, seed: 2 ** 32 })).toEqual([
      '- seed: must be an integer from 0 to 4294967295, got 4294967296.',
    ]);
  });

  it('rejects a wrong type', () => {
    expect(problemLines({ ...REQUIRED, maskPrompt: 'yes', tierUpdateFrequencies: '1,2,4' })).toEqual([
      '- tierUpdateFrequencies: must be a non-empty list of integers of at least 1, got "1,2,4".',
      '- maskPrompt: must be true or false, got "yes".',
    ]);
  });

  it('rejects input that is not an object', () => {
    for (const input of [null, [1], 'config.yaml', 3]) {
      expect(failure(input).code).toBe('CONFIG_INVALID');
    }
    expect(problemLines([1])).toEqual(['- (root): must be an object that maps option names to values, got [1].']);
  });

  it('names missing options in the caller style', () => {
    expect(problemLines({ base_model_path: './m' })).toEqual([
      '- train_data_path: is required but missing. Set it to a non-empty string.',
    ]);
  });

  it('uses the caller spelling in paths', () => {
    expect(problemLines({ ...REQUIRED, tier_update_frequencies: [1, 0] })).toEqual([
      '- tier_update_frequencies[1]: must be an integer of at least 1, got 0.',
    ]);
  });
});

describe('NestedLearningConfig rules across options', () => {
  it('requires one frequency per tier', () => {
    expect(problemLines({ ...REQUIRED, numTiers: 2, tierUpdateFrequencies: [1, 2, 4] })).toEqual([
      '- tierUpdateFrequencies: has 3 entries ([1, 2, 4]) but numTiers is 2. Give one update frequency per tier.',
    ]);
  });

  it('names options in the caller spelling', () => {
    expect(problemLines({ ...REQUIRED, num_tiers: 4, tier_update_frequencies: [1, 2, 4] })).toEqual([
      '- tier_update_frequencies: has 3 entries ([1, 2, 4]) but num_tiers is 4. Give one update frequency per tier.',
    ]);
  });

  it('requires non-decreasing frequencies', () => {
    expect(problemLines({ ...REQUIRED, tierUpdateFrequencies: [1, 4, 2] })).toEqual([
      '- tierUpdateFrequencies[2]: is 2, less than the 4 of tier 1. Frequencies must not decrease, because tier 0 is the fastest tier.',
    ]);
  });

  it('accepts equal frequencies', () => {
    expect(NestedLearningConfig.parse({ ...REQUIRED, tierUpdateFrequencies: [1, 1, 4] }).tierUpdateFrequencies).toEqual([1, 1, 4]);
  });

  it('requires tierMap for manual', () => {
    expect(problemLines({ ...REQUIRED, tierAssignmentStrategy: 'manual' })).toEqual([
      '- tierMap: is missing, but tierAssignmentStrategy is "manual". Map parameter names, globs or /regular expressions/ to tiers.',
    ]);
    expect(problemLines({ ...REQUIRED, tierAssignmentStrategy: 'manual', tierMap: {} })).toEqual([
      '- tierMap: has no rules, but tierAssignmentStrategy is "manual". Map parameter names, globs or /regular expressions/ to tiers.',
    ]);
  });

  it('rejects tierMap with another strategy', () => {
    expect(problemLines({ ...REQUIRED, tierMap: { '**': 0 } })).toEqual([
      '- tierMap: is set but tierAssignmentStrategy is "layer_depth", which ignores it. Set tierAssignmentStrategy to "manual" or remove tierMap.',
    ]);
  });

  it('checks tierMap tiers and patterns', () => {
    expect(
      problemLines({
        ...REQUIRED,
        tierAssignmentStrategy: 'manual',
        tierMap: { 'model.layers.*': 3, '/layers\\.(/': 0, 'lm_head': -1 },
      }),
    ).toEqual([
      '- tierMap["lm_head"]: must be an integer of at least 0, got -1.',
    ]);
    const lines = problemLines({
      ...REQUIRED,
      tierAssignmentStrategy: 'manual',
      tierMap: { 'model.layers.*': 3, '/layers\\.(/': 0 },
    });
    expect(lines).toHaveLength(2);
    expect(lines[0]).toBe('- tierMap["model.layers.*"]: is tier 3, but numTiers is 3, so tiers run from 0 to 2.');
    // The middle of the second line is V8's own regular-expression error.
    expect(lines[1]).toMatch(/^- tierMap\["\/layers\\\\\.\(\/"\]: is not a valid regular expression \(.+\)\. /);
    expect(lines[1]).toMatch(/Fix the pattern, or drop the slashes to match the name exactly\.$/);
  });

  it('requires per-tier lists of numTiers entries', () => {
    expect(problemLines({ ...REQUIRED, tierLearningRateScales: [1, 0.5], tierWeightDecays: [0, 0, 0, 0] })).toEqual([
      '- tierLearningRateScales: has 2 entries ([1, 0.5]) but numTiers is 3. Give one value per tier.',
      '- tierWeightDecays: has 4 entries ([0, 0, 0, 0]) but numTiers is 3. Give one value per tier.',
    ]);
  });

  it('requires defaultTier below numTiers', () => {
    expect(problemLines({ ...REQUIRED, defaultTier: 3 })).toEqual([
      '- defaultTier: is 3, but numTiers is 3, so tiers run from 0 to 2.',
    ]);
  });

  it('requires warmup within the run', () => {
    expect(problemLines({ ...REQUIRED, warmupSteps: 11, numSteps: 10 })).toEqual([
      '- warmupSteps: is 11, more than numSteps (10). Warmup must end within the run.',
    ]);
    expect(NestedLearningConfig.parse({ ...REQUIRED, warmupSteps: 10, numSteps: 10 }).warmupSteps).toBe(10);
  });

  it('requires minLearningRate at most learningRate', () => {
    expect(problemLines({ ...REQUIRED, learningRate: 1e-4, minLearningRate: 1e-3 })).toEqual([
      '- minLearningRate: is 0.001, more than learningRate (0.0001). The decay floor must not exceed the peak rate.',
    ]);
  });

  it('requires validation data for early stopping', () => {
    expect(problemLines({ ...REQUIRED, earlyStop: true, saveBestOnly: true })).toEqual([
      '- earlyStop: is true but valDataPath is missing, and earlyStop compares validation losses. Set valDataPath or set earlyStop to false.',
      '- saveBestOnly: is true but valDataPath is missing, and saveBestOnly compares validation losses. Set valDataPath or set saveBestOnly to false.',
    ]);
    expect(problemLines({ ...REQUIRED, valDataPath: './v.jsonl', evalEvery: 0, earlyStop: true })).toEqual([
      '- earlyStop: is true but evalEvery is 0, so no validation loss is measured during training. Set evalEvery above 0 or set earlyStop to false.',
    ]);
  });

  it('rejects resume with overwrite', () => {
    expect(problemLines({ ...REQUIRED, resume: true, overwrite: true })).toEqual([
      '- overwrite: is true together with resume, but resuming keeps the earlier run and overwriting deletes it. Set one of them to false.',
    ]);
  });

  it('skips rules whose options are invalid', () => {
    // numTiers is invalid, so the count rule would only repeat the same mistake.
    expect(problemLines({ ...REQUIRED, numTiers: 0, tierUpdateFrequencies: [1, 2] })).toEqual([
      '- numTiers: must be an integer of at least 1, got 0.',
    ]);
  });

  it('applies the zod schema rules', () => {
    const result = NestedLearningConfig.schema.safeParse({ ...REQUIRED, numTiers: 2 });

    expect(result.success).toBe(false);
    expect(result.error?.issues[0]?.path).toEqual(['tierUpdateFrequencies']);
  });
});

describe('NestedLearningConfig presets', () => {
  it('defines the three presets', () => {
    expect(NestedLearningConfig.presets.conservative.tierUpdateFrequencies).toEqual([1, 4, 8]);
    expect(NestedLearningConfig.presets.balanced.tierUpdateFrequencies).toEqual([1, 2, 4]);
    expect(NestedLearningConfig.presets.aggressive.tierUpdateFrequencies).toEqual([1, 2, 3]);
    expect(NestedLearningConfig.presets.aggressive.tierAssignmentStrategy).toBe('parameter_importance');
    expect(NestedLearningConfig.presets.conservative.tierAssignmentStrategy).toBe('layer_depth');
  });

  it('parses each preset with overrides', () => {
    for (const name of ['conservative', 'balanced', 'aggressive'] as const) {
      const config = NestedLearningConfig.preset(name, REQUIRED);
      expect(config.tierUpdateFrequencies).toEqual(NestedLearningConfig.presets[name].tierUpdateFrequencies);
      expect(config.numTiers).toBe(3);
    }
  });

  it('lets overrides replace preset values', () => {
    const config = NestedLearningConfig.preset('aggressive', { ...REQUIRED, tier_assignment_strategy: 'layer_depth', loraRank: 4 });

    expect(config.tierAssignmentStrategy).toBe('layer_depth');
    expect(config.tierUpdateFrequencies).toEqual([1, 2, 3]);
    expect(config.loraRank).toBe(4);
  });

  it('requires the paths', () => {
    expect(() => NestedLearningConfig.preset('balanced')).toThrow('baseModelPath: is required but missing');
  });

  it('rejects an unknown preset', () => {
    expect(() => NestedLearningConfig.preset('fast' as 'balanced', REQUIRED)).toThrow(
      'Unknown preset "fast". Choose one of conservative, balanced, aggressive.',
    );
  });

  it('freezes the presets', () => {
    expect(Object.isFrozen(NestedLearningConfig.presets.balanced)).toBe(true);
    expect(Object.isFrozen(NestedLearningConfig.presets.balanced.tierUpdateFrequencies)).toBe(true);
  });
});

describe('NestedLearningConfig JSON Schema', () => {
  it('describes camelCase keys', () => {
    const schema = NestedLearningConfig.jsonSchema() as {
      properties: Record<string, { default?: unknown; description?: string; type?: string }>;
      required: string[];
      additionalProperties: boolean;
    };

    expect(schema.required).toEqual(['baseModelPath', 'trainDataPath']);
    expect(schema.additionalProperties).toBe(false);
    expect(schema.properties.tierUpdateFrequencies?.default).toEqual([1, 2, 4]);
    expect(schema.properties.loraRank?.type).toBe('integer');
    expect(Object.values(schema.properties).every((property) => (property.description ?? '').length > 0)).toBe(true);
    expect(Object.keys(schema.properties)).toHaveLength(NestedLearningConfig.fields().length);
  });

  it('describes snake_case keys', () => {
    const schema = NestedLearningConfig.jsonSchema({ keys: 'snake_case' }) as {
      properties: Record<string, unknown>;
      required: string[];
    };

    expect(schema.required).toEqual(['base_model_path', 'train_data_path']);
    expect('tier_update_frequencies' in schema.properties).toBe(true);
    expect('tierUpdateFrequencies' in schema.properties).toBe(false);
  });
});
