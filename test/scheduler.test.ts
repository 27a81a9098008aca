import { describe, expect, it } from 'vitest';

import { ArgumentError, NestedLearningError } from '../src/errors.js';
import { NestedLearningConfig } from '../src/config/index.js';
import {
  ImportanceAccumulator,
  ParameterTierScheduler,
  activeTiers,
  buildTierMap,
  isTierMap,
  loraModuleName,
  normalizeTierMap,
  parseLayerNumber,
  partitionContiguous,
  toTierAssignments,
  type ParameterInfo,
  type TierMap,
} from '../src/scheduler/index.js';

/** Returns the error thrown by `run`, failing the test when nothing is thrown. */
function thrown(run: () => unknown): NestedLearningError {
  try {
    run();
  } catch (error) {
    expect(NestedLearningError.isInstance(error)).toBe(true);
    return error as NestedLearningError;
  }
  throw new Error('expected an error');
}

/** mlx_lm-style LoRA pair of one module: lora_a [inputs, rank], lora_b [rank, outputs]. */
function loraPair(module: string, inputs: number, rank: number, outputs: number): ParameterInfo[] {
  return [
    { name: `${module}.lora_a`, shape: [inputs, rank] },
    { name: `${module}.lora_b`, shape: [rank, outputs] },
  ];
}

/** Tier of each parameter, by name. */
function tiersByName(tierMap: TierMap): Record<string, number> {
  return tierMap.assignments;
}

describe('parseLayerNumber', () => {
  const cases: [string, number | undefined][] = [
    ['model.layers.0.self_attn.q_proj.lora_a', 0],
    ['layers.5.mlp.lora_b', 5],
    ['base_model.model.model.layers.3.mlp.down_proj.lora_A.weight', 3],
    ['base_model.model.model.layers.3.mlp.down_proj.lora_B.default.weight', 3],
    ['model.layers.1.mlp.experts.0.up_proj', 1],
    ['model.layers.1.mlp.experts.7.up_proj.lora_a', 1],
    ['model.layers.12.self_attn.o_proj.lora_b', 12],
    ['model.layers.127.mlp.gate_proj.lora_a', 127],
    ['model.layers.07.mlp.up_proj.lora_a', 7],
    ['transformer.h.3.attn.c_attn.lora_a', 3],
    ['h.3.mlp.c_fc', 3],
    ['blocks.3.ffn.lora_b', 3],
    ['vision.blocks.11.attn', 11],
    ['bert.encoder.layer.7.attention.self.query', 7],
    ['model.layers.3', 3],
    ['model/layers/4/mlp/kernel', 4],
    ['model.embed_tokens.weight', undefined],
    ['lm_head.lora_a', undefined],
    ['model.norm.weight', undefined],
    ['dense_Dense1/kernel', undefined],
    ['model.layers.x.mlp', undefined],
    ['model.mylayers.3.mlp', undefined],
    ['model.layers.3x.mlp', undefined],
    ['model.layers_3.mlp', undefined],
  ];

  for (const [name, expected] of cases) {
    it(`parses ${name}`, () => {
      expect(parseLayerNumber(name)).toBe(expected);
    });
  }
});

describe('loraModuleName', () => {
  it('pairs mlx_lm matrices', () => {
    expect(loraModuleName('model.layers.0.self_attn.q_proj.lora_a')).toBe('model.layers.0.self_attn.q_proj');
    expect(loraModuleName('model.layers.0.self_attn.q_proj.lora_b')).toBe('model.layers.0.self_attn.q_proj');
  });

  it('pairs PEFT matrices', () => {
    const module = 'base_model.model.model.layers.3.mlp.down_proj';
    expect(loraModuleName(`${module}.lora_A.weight`)).toBe(module);
    expect(loraModuleName(`${module}.lora_B.weight`)).toBe(module);
    expect(loraModuleName(`${module}.lora_A.default.weight`)).toBe(module);
  });

  it('keeps other names', () => {
    expect(loraModuleName('model.embed_tokens.weight')).toBe('model.embed_tokens.weight');
    expect(loraModuleName('model.layers.0.lora_adapter.scale')).toBe('model.layers.0.lora_adapter.scale');
  });
});

describe('partitionContiguous', () => {
  it('balances uneven weights', () => {
    // Total 32, 3 runs; cost = sum of (3 * run - 32)^2.
    // [4,4,4][4,8][8]: 12, 12, 8 -> 16 + 16 + 64 = 96, the lowest.
    // [4,4][4,4][8,8]: 8, 8, 16 -> 64 + 64 + 256 = 384 (equal layer counts, unequal weight).
    expect(partitionContiguous([4, 4, 4, 4, 8, 8], 3)).toEqual([0, 0, 0, 1, 1, 2]);
  });

  it('breaks ties with the shortest first run', () => {
    // Four equal weights in three runs: (1,1,2), (1,2,1) and (2,1,1) all cost 1 + 1 + 4 = 6.
    expect(partitionContiguous([5, 5, 5, 5], 3)).toEqual([0, 1, 2, 2]);
  });

  it('fills every run when items suffice', () => {
    // A heavy first item must not swallow the first two runs.
    expect(partitionContiguous([100, 1, 1], 3)).toEqual([0, 1, 2]);
  });

  it('splits 28 equal layers 9, 9, 10', () => {
    const runs = partitionContiguous(new Array<number>(28).fill(1000), 3);
    expect([0, 1, 2].map((run) => runs.filter((value) => value === run).length)).toEqual([9, 9, 10]);
  });

  it('leaves the last runs empty with few items', () => {
    expect(partitionContiguous([7, 7], 3)).toEqual([0, 1]);
    expect(partitionContiguous([], 3)).toEqual([]);
  });

  it('handles all-zero weights', () => {
    expect(partitionContiguous([0, 0, 0, 0], 2)).toEqual([0, 1, 1, 1]);
  });

  it('stays exact for large element counts', () => {
    // Total T = 500000005. Split (1,1,2) has deviations 3*run - T of -499999999, 399999995, 100000004;
    // split (2,1,1) has 400000001, 99999995, -499999996. The squared sums differ by
    // 3*999999995 - 6*799999996 + 9*199999999 = 0, an exact tie, so the shortest first run wins.
    // The squares are near 2.5e17, where float64 rounding picks (2,1,1) instead.
    expect(partitionContiguous([2, 300000000, 200000000, 3], 3)).toEqual([0, 1, 2, 2]);
  });
});

describe('ParameterTierScheduler step clock', () => {
  it('activates [1, 2, 4] tiers over 8 steps', () => {
    const scheduler = new ParameterTierScheduler({ numTiers: 3, tierUpdateFrequencies: [1, 2, 4] });
    const expected: Record<number, number[]> = {
      1: [0],
      2: [0, 1],
      3: [0],
      4: [0, 1, 2],
      5: [0],
      6: [0, 1],
      7: [0],
      8: [0, 1, 2],
    };

    for (let step = 1; step <= 8; step += 1) {
      expect(scheduler.activeTiers(step)).toEqual(expected[step]);
      expect(activeTiers(step, [1, 2, 4])).toEqual(expected[step]);
    }
  });

  it('tells whether one tier is active', () => {
    const scheduler = new ParameterTierScheduler({ tierUpdateFrequencies: [1, 3] });

    expect([1, 2, 3, 4, 5, 6].map((step) => scheduler.isTierActive(1, step))).toEqual([false, false, true, false, false, true]);
    expect(thrown(() => scheduler.isTierActive(2, 1)).code).toBe('SCHEDULER_INVALID_OPTION');
  });

  it('rejects steps below 1', () => {
    const scheduler = new ParameterTierScheduler();

    expect(thrown(() => scheduler.activeTiers(0)).message).toBe(
      'step is 0; it must be an integer of at least 1 (steps count optimizer steps from 1).',
    );
    expect(thrown(() => scheduler.activeTiers(1.5)).code).toBe('SCHEDULER_INVALID_OPTION');
  });

  it('returns a copy of the frequencies', () => {
    const scheduler = new ParameterTierScheduler({ tierUpdateFrequencies: [1, 2, 4] });
    scheduler.frequencies.push(99);

    expect(scheduler.frequencies).toEqual([1, 2, 4]);
    expect(scheduler.numTiers).toBe(3);
  });
});

describe('ParameterTierScheduler options', () => {
  it('defaults to [1, 2, 4] and layer_depth', () => {
    const scheduler = new ParameterTierScheduler();

    expect(scheduler.frequencies).toEqual([1, 2, 4]);
    expect(scheduler.strategy).toBe('layer_depth');
    expect(scheduler.fastEnd).toBe('low');
  });

  it('derives powers of two from numTiers', () => {
    expect(new ParameterTierScheduler({ numTiers: 4 }).frequencies).toEqual([1, 2, 4, 8]);
  });

  it('rejects invalid options', () => {
    const cases: [ConstructorParameters<typeof ParameterTierScheduler>[0], string][] = [
      [
        { tierUpdateFrequencies: [1, 4, 2] },
        'tierUpdateFrequencies [1,4,2] is invalid: it must be a non-empty list of integers of at least 1 that does not decrease, such as [1, 2, 4].',
      ],
      [{ tierUpdateFrequencies: [] }, 'tierUpdateFrequencies [] is invalid'],
      [{ tierUpdateFrequencies: [0, 1] }, 'tierUpdateFrequencies [0,1] is invalid'],
      [
        { numTiers: 2, tierUpdateFrequencies: [1, 2, 4] },
        'tierUpdateFrequencies has 3 entries ([1,2,4]) but numTiers is 2. Give one frequency per tier.',
      ],
      [{ numTiers: 0 }, 'numTiers is 0; it must be an integer of at least 1.'],
      [{ strategy: 'random' as 'manual' }, 'strategy is "random"; it must be one of layer_depth, parameter_importance, manual.'],
      [{ fastEnd: 'top' as 'low' }, 'fastEnd is "top"; it must be low or high.'],
      [{ defaultTier: 3 }, 'defaultTier is 3; it must be an integer from 0 to 2.'],
      [{ strategy: 'manual' }, 'tierMap is missing; it must be rules (names, globs or regular expressions to tiers) for the manual strategy.'],
      [{ tierMap: { '**': 0 } }, 'tierMap is given but strategy is layer_depth, which ignores it.'],
      [{ strategy: 'manual', tierMap: { '**': 3 } }, 'tierMap rule ** maps to tier 3, but tiers are integers from 0 to 2.'],
      [{ strategy: 'manual', tierMap: { '/(/': 0 } }, 'tierMap pattern /(/ is not a valid regular expression'],
    ];

    for (const [options, message] of cases) {
      const error = thrown(() => new ParameterTierScheduler(options));
      expect(error).toBeInstanceOf(ArgumentError);
      expect(error.code).toBe('SCHEDULER_INVALID_OPTION');
      expect(error.message).toContain(message);
    }
  });

  it('builds from a configuration', () => {
    const config = NestedLearningConfig.parse({
      baseModelPath: './m',
      trainDataPath: './t.jsonl',
      tierUpdateFrequencies: [1, 4, 8],
      tierAssignmentStrategy: 'manual',
      tierMap: { '**': 1 },
      defaultTier: 2,
      layerDepthFastEnd: 'high',
    });
    const scheduler = ParameterTierScheduler.fromConfig(config);

    expect(scheduler.frequencies).toEqual([1, 4, 8]);
    expect(scheduler.strategy).toBe('manual');
    expect(scheduler.defaultTier).toBe(2);
    expect(scheduler.fastEnd).toBe('high');
    expect(scheduler.assign([{ name: 'model.layers.0.mlp.lora_a', shape: [2, 2] }]).assignments).toEqual({
      'model.layers.0.mlp.lora_a': 1,
    });
  });
});

describe('ParameterTierScheduler layer_depth', () => {
  /** Six layers with q_proj (896 -> 896) and v_proj (896 -> 128) adapters of rank 8. */
  const sixLayers = (): ParameterInfo[] =>
    [0, 1, 2, 3, 4, 5].flatMap((layer) => [
      ...loraPair(`model.layers.${layer}.self_attn.q_proj`, 896, 8, 896),
      ...loraPair(`model.layers.${layer}.self_attn.v_proj`, 896, 8, 128),
    ]);

  it('splits equal layers into equal ranges', () => {
    const tierMap = new ParameterTierScheduler().assign(sixLayers());

    // Per layer: q 896*8 + 8*896 = 14336, v 896*8 + 8*128 = 8192, so 22528; two layers per tier.
    expect(tierMap.tiers.map((tier) => tier.layers)).toEqual([
      [0, 1],
      [2, 3],
      [4, 5],
    ]);
    expect(tierMap.tiers.map((tier) => tier.elementCount)).toEqual([45056, 45056, 45056]);
    expect(tierMap.tiers.map((tier) => tier.parameterCount)).toEqual([8, 8, 8]);
    expect(tierMap.tiers.map((tier) => tier.frequency)).toEqual([1, 2, 4]);
    expect(tierMap.numTiers).toBe(3);
    expect(tierMap.frequencies).toEqual([1, 2, 4]);
    expect(tierMap.unassigned).toEqual([]);
    expect(tierMap.tiers[0]?.parameterNames).toEqual(sixLayers().slice(0, 8).map((parameter) => parameter.name));
  });

  it('balances layers by element count', () => {
    // Layer weights 4, 4, 4, 4, 8, 8: the best split is layers 0-2, 3-4 and 5 (see partitionContiguous).
    const parameters = [2, 2, 2, 2, 4, 4].map((columns, layer) => ({
      name: `model.layers.${layer}.mlp.down_proj.lora_a`,
      shape: [2, columns],
    }));

    const tierMap = new ParameterTierScheduler().assign(parameters);

    expect(tierMap.tiers.map((tier) => tier.layers)).toEqual([[0, 1, 2], [3, 4], [5]]);
    expect(tierMap.tiers.map((tier) => tier.elementCount)).toEqual([12, 12, 8]);
  });

  it('puts the last layers first with fastEnd high', () => {
    // From the top, weights 8, 8, 4, 4, 4, 4: [8][8,4][4,4,4] costs 64 + 16 + 16 = 96, the lowest.
    const parameters = [2, 2, 2, 2, 4, 4].map((columns, layer) => ({
      name: `model.layers.${layer}.mlp.down_proj.lora_a`,
      shape: [2, columns],
    }));

    const tierMap = new ParameterTierScheduler({ fastEnd: 'high' }).assign(parameters);

    expect(tierMap.tiers.map((tier) => tier.layers)).toEqual([[5], [3, 4], [0, 1, 2]]);
    expect(tierMap.tiers.map((tier) => tier.elementCount)).toEqual([8, 12, 12]);
  });

  it('never splits a layer or a pair', () => {
    // Layer 1 has most of the elements, and its four matrices must share one tier.
    const parameters = [
      ...loraPair('model.layers.0.self_attn.q_proj', 64, 4, 64),
      ...loraPair('model.layers.1.mlp.up_proj', 64, 4, 4096),
      ...loraPair('model.layers.1.mlp.down_proj', 4096, 4, 64),
      ...loraPair('model.layers.2.self_attn.q_proj', 64, 4, 64),
      ...loraPair('model.layers.3.self_attn.q_proj', 64, 4, 64),
    ];

    const tierMap = new ParameterTierScheduler().assign(parameters);
    const tiers = tiersByName(tierMap);

    const layerOne = parameters.filter((parameter) => parameter.name.includes('layers.1.')).map((parameter) => tiers[parameter.name]);
    expect(new Set(layerOne).size).toBe(1);
    for (const [name, tier] of Object.entries(tiers)) {
      expect(tiers[name.replace(/lora_[ab]$/, 'lora_a')]).toBe(tier);
    }
    // Weights 512, 33280, 512, 512: [512][33280][512, 512] has the lowest cost of the three splits.
    expect(tierMap.tiers.map((tier) => tier.layers)).toEqual([[0], [1], [2, 3]]);
  });

  it('breaks ties towards slower tiers', () => {
    const parameters = [0, 1, 2, 3].map((layer) => ({ name: `layers.${layer}.mlp.lora_a`, shape: [4, 4] }));

    const tierMap = new ParameterTierScheduler().assign(parameters);

    expect(tierMap.tiers.map((tier) => tier.layers)).toEqual([[0], [1], [2, 3]]);
  });

  it('places names without a layer in the slowest tier', () => {
    const parameters = [...loraPair('model.layers.0.mlp.up_proj', 8, 2, 8), ...loraPair('lm_head', 8, 2, 100)];

    const tierMap = new ParameterTierScheduler().assign(parameters);

    expect(tierMap.unassigned).toEqual(['lm_head.lora_a', 'lm_head.lora_b']);
    expect(tierMap.assignments['lm_head.lora_a']).toBe(2);
    expect(tierMap.assignments['lm_head.lora_b']).toBe(2);
    expect(tierMap.assignments['model.layers.0.mlp.up_proj.lora_a']).toBe(0);
    // One layer for three tiers: tier 1 stays empty.
    expect(tierMap.tiers[1]?.parameterCount).toBe(0);
    expect(tierMap.tiers[2]?.elementCount).toBe(8 * 2 + 2 * 100);
  });

  it('places names without a layer in defaultTier', () => {
    const tierMap = new ParameterTierScheduler({ defaultTier: 0 }).assign([{ name: 'lm_head.lora_a', shape: [8, 2] }]);

    expect(tierMap.assignments).toEqual({ 'lm_head.lora_a': 0 });
    expect(tierMap.unassigned).toEqual(['lm_head.lora_a']);
  });

  it('reads PEFT names', () => {
    const parameters = [0, 1, 2].flatMap((layer) => [
      { name: `base_model.model.model.layers.${layer}.self_attn.q_proj.lora_A.weight`, shape: [8, 64] },
      { name: `base_model.model.model.layers.${layer}.self_attn.q_proj.lora_B.weight`, shape: [64, 8] },
    ]);

    const tierMap = new ParameterTierScheduler().assign(parameters);

    expect(tierMap.tiers.map((tier) => tier.layers)).toEqual([[0], [1], [2]]);
  });

  it('accepts a Map and a record of shapes', () => {
    const shapes = new Map([
      ['layers.0.mlp.lora_a', [4, 2]],
      ['layers.1.mlp.lora_a', [4, 2]],
      ['layers.2.mlp.lora_a', [4, 2]],
    ]);
    const scheduler = new ParameterTierScheduler();

    expect(scheduler.assign(shapes).assignments).toEqual({ 'layers.0.mlp.lora_a': 0, 'layers.1.mlp.lora_a': 1, 'layers.2.mlp.lora_a': 2 });
    expect(scheduler.assign(Object.fromEntries(shapes))).toEqual(scheduler.assign(shapes));
  });

  it('rejects malformed parameters', () => {
    const scheduler = new ParameterTierScheduler();

    expect(thrown(() => scheduler.assign([{ name: 'a', shape: [2] }, { name: 'a', shape: [2] }])).message).toBe(
      'Parameter a is listed twice. List each parameter once.',
    );
    expect(thrown(() => scheduler.assign([{ name: 'a', shape: [2, -1] }])).message).toBe(
      'Shape of parameter a is [2,-1]; it must be a list of non-negative integers, such as [896, 8].',
    );
    expect(thrown(() => scheduler.assign([{ name: '', shape: [2] }])).code).toBe('SCHEDULER_INVALID_PARAMETER');
  });

  it('returns empty tiers for no parameters', () => {
    const tierMap = new ParameterTierScheduler().assign([]);

    expect(tierMap.assignments).toEqual({});
    expect(tierMap.tiers.map((tier) => tier.parameterCount)).toEqual([0, 0, 0]);
  });
});

describe('ParameterTierScheduler parameter_importance', () => {
  /**
   * Four modules and their mean squared gradient per element:
   * M0 q_proj layer 0: (32/2 + 16/2) / 16 elements = 1.5
   * M1 v_proj layer 0: (8/1 + 0/1) / 16 = 0.5
   * M2 q_proj layer 1: (40/4 + 30/4) / 16 = 1.09375
   * M3 down_proj layer 1: (64 + 0) / 64 = 1.0, the largest raw sum but not the largest per element.
   * Ranked: M0, M2, M3, M1 with 16, 16, 64, 16 elements. Three runs, cost sum (3 * run - 112)^2:
   * (2,1,1): 32, 64, 16 -> 256 + 6400 + 4096 = 10752; (1,1,2) and (1,2,1) both cost 24576.
   */
  const modules = {
    m0: 'model.layers.0.self_attn.q_proj',
    m1: 'model.layers.0.self_attn.v_proj',
    m2: 'model.layers.1.self_attn.q_proj',
    m3: 'model.layers.1.mlp.down_proj',
  };
  const parameters = (): ParameterInfo[] => [
    ...loraPair(modules.m0, 4, 2, 4),
    ...loraPair(modules.m1, 4, 2, 4),
    ...loraPair(modules.m2, 4, 2, 4),
    ...loraPair(modules.m3, 16, 2, 16),
  ];
  const statistics = {
    [`${modules.m0}.lora_a`]: { gradSquaredSum: 32, count: 2 },
    [`${modules.m0}.lora_b`]: { gradSquaredSum: 16, count: 2 },
    [`${modules.m1}.lora_a`]: 8,
    [`${modules.m1}.lora_b`]: 0,
    [`${modules.m2}.lora_a`]: { gradSquaredSum: 40, count: 4 },
    [`${modules.m2}.lora_b`]: { gradSquaredSum: 30, count: 4 },
    [`${modules.m3}.lora_a`]: { gradSquaredSum: 64, count: 1 },
    [`${modules.m3}.lora_b`]: 0,
  };
  const scheduler = new ParameterTierScheduler({ strategy: 'parameter_importance' });

  it('ranks modules by importance per element', () => {
    const tierMap = scheduler.assign(parameters(), { importance: statistics });

    expect(tierMap.assignments).toEqual({
      [`${modules.m0}.lora_a`]: 0,
      [`${modules.m0}.lora_b`]: 0,
      [`${modules.m1}.lora_a`]: 2,
      [`${modules.m1}.lora_b`]: 2,
      [`${modules.m2}.lora_a`]: 0,
      [`${modules.m2}.lora_b`]: 0,
      [`${modules.m3}.lora_a`]: 1,
      [`${modules.m3}.lora_b`]: 1,
    });
    expect(tierMap.tiers.map((tier) => tier.elementCount)).toEqual([32, 64, 16]);
    expect(tierMap.tiers.map((tier) => tier.layers)).toEqual([[0, 1], [1], [0]]);
    expect(tierMap.unassigned).toEqual([]);
  });

  it('reads statistics from the parameters', () => {
    const withStatistics = parameters().map((parameter) => ({ ...parameter, importance: statistics[parameter.name] }));

    expect(scheduler.assign(withStatistics)).toEqual(scheduler.assign(parameters(), { importance: statistics }));
  });

  it('prefers statistics from the options', () => {
    // M1 gets a huge score from the options, overriding its field, and moves to the fast tier.
    const withStatistics = parameters().map((parameter) => ({ ...parameter, importance: statistics[parameter.name] }));
    const importance = new Map([[`${modules.m1}.lora_a`, 1e6]]);

    const tierMap = scheduler.assign(withStatistics, { importance });

    expect(tierMap.assignments[`${modules.m1}.lora_a`]).toBe(0);
    expect(tierMap.assignments[`${modules.m1}.lora_b`]).toBe(0);
  });

  it('matches the accumulator statistics', () => {
    const accumulator = new ImportanceAccumulator();
    // M0 gets two batches, M2 four, M1 and M3 one each. The sums equal the statistics above.
    accumulator.addAll({ [`${modules.m0}.lora_a`]: 12, [`${modules.m0}.lora_b`]: 6 });
    accumulator.addAll(new Map([[`${modules.m0}.lora_a`, 20], [`${modules.m0}.lora_b`, 10]]));
    accumulator.add(`${modules.m1}.lora_a`, 8);
    accumulator.add(`${modules.m1}.lora_b`, 0);
    for (const value of [10, 10, 10, 10]) {
      accumulator.add(`${modules.m2}.lora_a`, value);
    }
    for (const value of [5, 5, 10, 10]) {
      accumulator.add(`${modules.m2}.lora_b`, value);
    }
    accumulator.add(`${modules.m3}.lora_a`, 64);
    accumulator.add(`${modules.m3}.lora_b`, 0);

    expect(accumulator.statistics()[`${modules.m0}.lora_a`]).toEqual({ gradSquaredSum: 32, count: 2 });
    expect(scheduler.assign(parameters(), { importance: accumulator.statistics() })).toEqual(
      scheduler.assign(parameters(), { importance: statistics }),
    );
  });

  it('rejects missing statistics', () => {
    const partial = { ...statistics };
    delete partial[`${modules.m3}.lora_b`];

    const error = thrown(() => scheduler.assign(parameters(), { importance: partial }));

    expect(error.code).toBe('SCHEDULER_MISSING_IMPORTANCE');
    // The whole pair is reported, because a pair shares one tier.
    expect(error.message).toBe(
      `2 parameter(s) have no gradient statistics for parameter_importance: ${modules.m3}.lora_a, ${modules.m3}.lora_b. ` +
        'Pass statistics for every parameter (both matrices of a LoRA pair), or set defaultTier.',
    );
  });

  it('places unscored pairs in defaultTier', () => {
    const partial = { ...statistics };
    delete partial[`${modules.m3}.lora_b`];

    const tierMap = new ParameterTierScheduler({ strategy: 'parameter_importance', defaultTier: 2 }).assign(parameters(), {
      importance: partial,
    });

    expect(tierMap.unassigned).toEqual([`${modules.m3}.lora_a`, `${modules.m3}.lora_b`]);
    expect(tierMap.assignments[`${modules.m3}.lora_a`]).toBe(2);
    // M0, M2, M1 (scores 1.5, 1.09375, 0.5) with 16 elements each: one module per tier.
    expect(tierMap.assignments[`${modules.m0}.lora_a`]).toBe(0);
    expect(tierMap.assignments[`${modules.m2}.lora_a`]).toBe(1);
    expect(tierMap.assignments[`${modules.m1}.lora_a`]).toBe(2);
  });

  it('rejects malformed statistics', () => {
    const cases = [{ gradSquaredSum: 1, count: 0 }, { gradSquaredSum: -1, count: 1 }, NaN, { gradSquaredSum: 1, count: 1.5 }];
    for (const bad of cases) {
      const error = thrown(() => scheduler.assign(parameters(), { importance: { ...statistics, [`${modules.m0}.lora_a`]: bad } }));
      expect(error.code).toBe('SCHEDULER_INVALID_IMPORTANCE');
      expect(error.message).toContain(`Importance of ${modules.m0}.lora_a is invalid`);
    }
    expect(thrown(() => new ImportanceAccumulator().add('x', Infinity)).code).toBe('SCHEDULER_INVALID_IMPORTANCE');
  });
});

describe('ParameterTierScheduler manual', () => {
  const names = [
    'model.layers.0.self_attn.q_proj.lora_a',
    'model.layers.0.self_attn.q_proj.lora_b',
    'model.layers.1.mlp.down_proj.lora_a',
    'model.layers.12.mlp.down_proj.lora_a',
    'lm_head.lora_a',
  ];
  const parameters = names.map((name) => ({ name, shape: [2, 3] }));

  it('applies the first matching rule', () => {
    const scheduler = new ParameterTierScheduler({
      strategy: 'manual',
      tierMap: {
        'model.layers.0.self_attn.q_proj.lora_a': 2,
        'model.layers.?.**': 1,
        '/layers\\.1[0-9]\\./': 2,
        '**': 0,
      },
    });

    expect(scheduler.assign(parameters).assignments).toEqual({
      'model.layers.0.self_attn.q_proj.lora_a': 2,
      'model.layers.0.self_attn.q_proj.lora_b': 1,
      'model.layers.1.mlp.down_proj.lora_a': 1,
      'model.layers.12.mlp.down_proj.lora_a': 2,
      'lm_head.lora_a': 0,
    });
  });

  it('keeps single stars within one name segment', () => {
    // `model.layers.*.mlp.*` would need the name to end after one more segment, so it matches nothing.
    const tooShort = new ParameterTierScheduler({
      strategy: 'manual',
      tierMap: { 'model.layers.*.mlp.*': 0, 'model.layers.*.mlp.*.*': 1 },
      defaultTier: 2,
    });
    expect(() => tooShort.assign(parameters)).toThrow(/1 tierMap rule\(s\) match no parameter: model\.layers\.\*\.mlp\.\*\./);

    const scheduler = new ParameterTierScheduler({
      strategy: 'manual',
      tierMap: { 'model.layers.*.mlp.*.*': 1 },
      defaultTier: 2,
    });

    expect(scheduler.assign(parameters).assignments).toEqual({
      'model.layers.0.self_attn.q_proj.lora_a': 2,
      'model.layers.0.self_attn.q_proj.lora_b': 2,
      'model.layers.1.mlp.down_proj.lora_a': 1,
      'model.layers.12.mlp.down_proj.lora_a': 1,
      'lm_head.lora_a': 2,
    });
  });

  it('rejects a rule that matches no parameter', () => {
    // A glob with a character class such as [01] is taken literally. Ignoring such a rule silently
    // left its tier with no parameters, because a later catch-all rule took them.
    const scheduler = new ParameterTierScheduler({
      strategy: 'manual',
      tierMap: { 'model.layers.[01].mlp.**': 1, '**': 2 },
    });

    const error = (() => {
      try {
        scheduler.assign(parameters);
      } catch (caught) {
        return caught as ArgumentError;
      }
      return undefined;
    })();
    expect(error?.code).toBe('SCHEDULER_RULE_MATCHES_NOTHING');
    expect(error?.message).toContain('model.layers.[01].mlp.**');
    expect(error?.message).toContain('/regular expression/');
    expect(error?.details.rules).toEqual(['model.layers.[01].mlp.**']);
  });

  it('accepts RegExp rules in a list', () => {
    const scheduler = new ParameterTierScheduler({
      strategy: 'manual',
      tierMap: [
        { pattern: /Q_PROJ/gi, tier: 0 },
        { pattern: /^lm_head\./, tier: 2 },
        { pattern: '/mlp/', tier: 1 },
      ],
    });

    // The g flag is dropped, so both q_proj names match despite RegExp.test keeping lastIndex.
    expect(scheduler.assign(parameters).assignments).toEqual({
      'model.layers.0.self_attn.q_proj.lora_a': 0,
      'model.layers.0.self_attn.q_proj.lora_b': 0,
      'model.layers.1.mlp.down_proj.lora_a': 1,
      'model.layers.12.mlp.down_proj.lora_a': 1,
      'lm_head.lora_a': 2,
    });
  });

  it('accepts rules in a Map', () => {
    const scheduler = new ParameterTierScheduler({
      strategy: 'manual',
      tierMap: new Map<string | RegExp, number>([
        [/layers\.0\./, 0],
        ['**', 1],
      ]),
    });

    expect(Object.values(scheduler.assign(parameters).assignments)).toEqual([0, 0, 1, 1, 1]);
  });

  it('treats regex characters in globs literally', () => {
    const scheduler = new ParameterTierScheduler({ strategy: 'manual', tierMap: { 'a+b.*': 0 }, defaultTier: 1 });

    expect(scheduler.assign([{ name: 'a+b.x', shape: [1] }, { name: 'aab.x', shape: [1] }]).assignments).toEqual({
      'a+b.x': 0,
      'aab.x': 1,
    });
  });

  it('rejects unmatched parameters', () => {
    const scheduler = new ParameterTierScheduler({ strategy: 'manual', tierMap: { 'model.layers.**': 0 } });

    const error = thrown(() => scheduler.assign(parameters));

    expect(error.code).toBe('SCHEDULER_UNMATCHED_PARAMETERS');
    expect(error.message).toBe(
      '1 parameter(s) match no tierMap rule: lm_head.lora_a. Add rules for them (a glob such as "**" matches every name), or set defaultTier.',
    );
    expect(error.details.unmatched).toEqual(['lm_head.lora_a']);
  });

  it('places unmatched parameters in defaultTier', () => {
    const scheduler = new ParameterTierScheduler({ strategy: 'manual', tierMap: { 'model.layers.**': 0 }, defaultTier: 1 });

    const tierMap = scheduler.assign(parameters);

    expect(tierMap.assignments['lm_head.lora_a']).toBe(1);
    expect(tierMap.unassigned).toEqual(['lm_head.lora_a']);
    expect(tierMap.tiers.map((tier) => tier.parameterCount)).toEqual([4, 1, 0]);
    expect(tierMap.tiers.map((tier) => tier.elementCount)).toEqual([24, 6, 0]);
  });
});

describe('buildTierMap', () => {
  const shapes = new Map([
    ['model.layers.0.mlp.lora_a', [8, 2]],
    ['model.layers.0.mlp.lora_b', [2, 8]],
    ['model.layers.3.mlp.lora_a', [8, 2]],
    ['lm_head.lora_a', [8, 4]],
  ]);

  it('counts parameters and elements per tier', () => {
    const tierMap = buildTierMap(
      { 'model.layers.0.mlp.lora_a': 0, 'model.layers.0.mlp.lora_b': 0, 'model.layers.3.mlp.lora_a': 1, 'lm_head.lora_a': 1 },
      shapes,
      [1, 2],
    );

    expect(tierMap.numTiers).toBe(2);
    expect(tierMap.tiers).toEqual([
      {
        tier: 0,
        frequency: 1,
        parameterNames: ['model.layers.0.mlp.lora_a', 'model.layers.0.mlp.lora_b'],
        parameterCount: 2,
        elementCount: 32,
        layers: [0],
      },
      {
        tier: 1,
        frequency: 2,
        parameterNames: ['model.layers.3.mlp.lora_a', 'lm_head.lora_a'],
        parameterCount: 2,
        elementCount: 48,
        layers: [3],
      },
    ]);
    expect(tierMap.unassigned).toEqual([]);
  });

  it('lists every mismatch', () => {
    const error = thrown(() =>
      buildTierMap({ 'model.layers.0.mlp.lora_a': 0, 'model.layers.0.mlp.lora_b': 2, 'model.layers.9.typo': 0, 'lm_head.lora_a': 0.5 }, shapes, [1, 2]),
    );

    expect(error.code).toBe('SCHEDULER_INVALID_TIER_MAP');
    expect(error.message).toBe(
      [
        'Invalid tier map:',
        '- 1 parameter(s) have no tier: model.layers.3.mlp.lora_a',
        '- 1 assigned name(s) are not parameters: model.layers.9.typo',
        '- 2 tier(s) are not integers from 0 to 1: model.layers.0.mlp.lora_b -> 2, lm_head.lora_a -> 0.5',
        'Give every parameter exactly one tier.',
      ].join('\n'),
    );
  });

  it('rejects invalid frequencies', () => {
    expect(thrown(() => buildTierMap({}, [], [2, 1])).code).toBe('SCHEDULER_INVALID_TIER_MAP');
  });
});

describe('normalizeTierMap', () => {
  const parameters = [
    { name: 'layers.0.mlp.lora_a', shape: [4, 2] },
    { name: 'layers.1.mlp.lora_a', shape: [4, 2] },
    { name: 'head.lora_a', shape: [4, 1] },
  ];

  it('expands a record and a Map', () => {
    const record = { 'layers.0.mlp.lora_a': 0, 'layers.1.mlp.lora_a': 1, 'head.lora_a': 1 };
    const fromRecord = normalizeTierMap(record, { parameters, frequencies: [1, 4] });
    const fromMap = normalizeTierMap(new Map(Object.entries(record)), { parameters, frequencies: [1, 4] });

    expect(fromRecord).toEqual(fromMap);
    expect(fromRecord.tiers.map((tier) => tier.elementCount)).toEqual([8, 12]);
    expect(fromRecord.frequencies).toEqual([1, 4]);
  });

  it('recomputes a full TierMap', () => {
    const assigned = new ParameterTierScheduler({ tierUpdateFrequencies: [1, 2] }).assign(parameters);
    const stale: TierMap = { ...assigned, tiers: assigned.tiers.map((tier) => ({ ...tier, elementCount: -1 })) };

    const normalized = normalizeTierMap(stale, { parameters });

    expect(normalized).toEqual(assigned);
    expect(normalized.unassigned).toEqual(['head.lora_a']);
  });

  it('needs frequencies for a plain record', () => {
    expect(thrown(() => normalizeTierMap({ 'head.lora_a': 0 }, { parameters })).code).toBe('SCHEDULER_INVALID_TIER_MAP');
  });

  it('converts any form to assignments', () => {
    const assigned = new ParameterTierScheduler({ tierUpdateFrequencies: [1, 2] }).assign(parameters);

    expect(toTierAssignments(assigned)).toEqual(new Map(Object.entries(assigned.assignments)));
    expect(toTierAssignments({ a: 1 })).toEqual(new Map([['a', 1]]));
    expect(toTierAssignments(new Map([['a', 1]]))).toEqual(new Map([['a', 1]]));
    expect(isTierMap(assigned)).toBe(true);
    expect(isTierMap({ assignments: 1 })).toBe(false);
    expect(isTierMap(new Map())).toBe(false);
  });
});
