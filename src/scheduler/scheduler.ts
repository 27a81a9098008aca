/**
 * `ParameterTierScheduler`: assigns parameters to tiers and reports which tiers are active at a step.
 */
import type { NestedLearningConfig } from '../config/index.js';
import { ArgumentError } from '../errors.js';
import { activeTiers, isTierActive } from './clock.js';
import { squaredGradientPerBatch, type ImportanceStatistic, type ImportanceStatistics } from './importance.js';
import { loraModuleName, parseLayerNumber } from './layers.js';
import { partitionContiguous } from './partition.js';
import { compileTierRules, type CompiledTierRule, type ManualTierRules } from './patterns.js';
import {
  checkFrequencies,
  checkParameters,
  listNames,
  makeTierMap,
  type CheckedParameter,
  type ParameterList,
} from './tier-map.js';
import type { TierMap } from './types.js';

/** Name of a tier assignment strategy. */
export type TierStrategy = 'layer_depth' | 'parameter_importance' | 'manual';

/** End of the layer stack that goes to tier 0 under `layer_depth`. */
export type FastEnd = 'low' | 'high';

/** Options of {@link ParameterTierScheduler}. */
export interface ParameterTierSchedulerOptions {
  /**
   * Update frequency of each tier: tier k is active at the steps that are multiples of it. The list
   * must not decrease, because tier 0 is the fastest tier.
   * @default [1, 2, 4], or the powers of two 1, 2, 4, ... when only numTiers is given
   */
  tierUpdateFrequencies?: readonly number[];
  /** Number of tiers; must equal the length of tierUpdateFrequencies. @default tierUpdateFrequencies.length */
  numTiers?: number;
  /** @default 'layer_depth' */
  strategy?: TierStrategy;
  /** Rules of the `manual` strategy; required by it and rejected by the others. */
  tierMap?: ManualTierRules;
  /**
   * Tier of the parameters the strategy cannot place: names without a layer number
   * (`layer_depth`), parameters without statistics (`parameter_importance`) and names no rule
   * matches (`manual`). They are listed in `TierMap.unassigned`.
   * @default the slowest tier for `layer_depth`; for the other strategies such parameters are an error
   */
  defaultTier?: number;
  /** `low` puts the first layers in tier 0, `high` the last layers. @default 'low' */
  fastEnd?: FastEnd;
}

/** Options of {@link ParameterTierScheduler.assign}. */
export interface AssignOptions {
  /**
   * Gradient statistics by parameter name for `parameter_importance`; they take precedence over
   * the `importance` field of a parameter.
   */
  importance?: ImportanceStatistics;
}

const STRATEGIES: readonly TierStrategy[] = ['layer_depth', 'parameter_importance', 'manual'];

/**
 * Assigns LoRA parameters to tiers of different update frequencies, and runs the step clock.
 *
 * Strategies:
 * - `layer_depth`: each tier gets a contiguous range of layers, with element counts as equal as
 *   possible. A layer is never split, so the `lora_a`/`lora_b` pair of a module stays together.
 *   Tier 0 gets the lowest layers unless `fastEnd` is `high`.
 * - `parameter_importance`: modules are ranked by mean squared gradient per element from a
 *   calibration pass, and split into tiers of nearly equal element count. The most important
 *   modules go to tier 0, the fastest, as in the Python original. A module's `lora_a` and
 *   `lora_b` share one score and one tier.
 * - `manual`: the first rule of `tierMap` that matches a name decides its tier.
 *
 * @example
 * ```ts
 * const scheduler = new ParameterTierScheduler({
 *   strategy: 'manual',
 *   tierUpdateFrequencies: [1, 2, 4],
 *   tierMap: { '/^model\\.layers\\.[01]\\./': 0, 'model.layers.*.mlp.**': 2, '**': 1 },
 * });
 * const tierMap = scheduler.assign([{ name: 'model.layers.0.self_attn.q_proj.lora_a', shape: [896, 8] }]);
 * scheduler.activeTiers(4); // [0, 1, 2]
 * ```
 */
export class ParameterTierScheduler {
  /** Number of tiers. */
  readonly numTiers: number;
  /** Assignment strategy used by {@link assign}. */
  readonly strategy: TierStrategy;
  /** End of the layer stack that `layer_depth` puts in tier 0. */
  readonly fastEnd: FastEnd;
  /** Tier of the parameters the strategy cannot place, when set. */
  readonly defaultTier: number | undefined;
  private readonly tierUpdateFrequencies: readonly number[];
  private readonly rules: readonly CompiledTierRule[];

  constructor(options: ParameterTierSchedulerOptions = {}) {
    const frequencies = resolveFrequencies(options);
    checkFrequencies(frequencies, 'SCHEDULER_INVALID_OPTION');
    this.tierUpdateFrequencies = Object.freeze([...frequencies]);
    this.numTiers = frequencies.length;

    this.strategy = options.strategy ?? 'layer_depth';
    if (!STRATEGIES.includes(this.strategy)) {
      throw invalidOption('strategy', this.strategy, `one of ${STRATEGIES.join(', ')}`);
    }
    this.fastEnd = options.fastEnd ?? 'low';
    if (this.fastEnd !== 'low' && this.fastEnd !== 'high') {
      throw invalidOption('fastEnd', this.fastEnd, 'low or high');
    }

    this.defaultTier = options.defaultTier;
    if (this.defaultTier !== undefined && !(Number.isInteger(this.defaultTier) && this.defaultTier >= 0 && this.defaultTier < this.numTiers)) {
      throw invalidOption('defaultTier', this.defaultTier, `an integer from 0 to ${this.numTiers - 1}`);
    }

    if (this.strategy === 'manual' && options.tierMap === undefined) {
      throw invalidOption('tierMap', undefined, 'rules (names, globs or regular expressions to tiers) for the manual strategy');
    }
    if (this.strategy !== 'manual' && options.tierMap !== undefined) {
      throw new ArgumentError(
        'SCHEDULER_INVALID_OPTION',
        `tierMap is given but strategy is ${this.strategy}, which ignores it. Set strategy to manual or leave tierMap out.`,
        { details: { field: 'tierMap', strategy: this.strategy } },
      );
    }
    this.rules = options.tierMap === undefined ? [] : compileTierRules(options.tierMap, this.numTiers);
  }

  /** Creates the scheduler that a configuration describes. */
  static fromConfig(config: NestedLearningConfig): ParameterTierScheduler {
    return new ParameterTierScheduler({
      numTiers: config.numTiers,
      tierUpdateFrequencies: config.tierUpdateFrequencies,
      strategy: config.tierAssignmentStrategy,
      ...(config.tierMap === undefined ? {} : { tierMap: config.tierMap }),
      ...(config.defaultTier === undefined ? {} : { defaultTier: config.defaultTier }),
      fastEnd: config.layerDepthFastEnd,
    });
  }

  /** Update frequency of each tier (a copy). */
  get frequencies(): number[] {
    return [...this.tierUpdateFrequencies];
  }

  /** Returns the tiers active at optimizer step `step` (from 1), ascending. */
  activeTiers(step: number): number[] {
    checkStep(step);
    return activeTiers(step, this.tierUpdateFrequencies);
  }

  /** Tells whether tier `tier` is active at optimizer step `step` (from 1). */
  isTierActive(tier: number, step: number): boolean {
    checkStep(step);
    const frequency = this.tierUpdateFrequencies[tier];
    if (frequency === undefined || !Number.isInteger(tier)) {
      throw invalidOption('tier', tier, `an integer from 0 to ${this.numTiers - 1}`);
    }
    return isTierActive(step, frequency);
  }

  /**
   * Assigns every parameter to a tier with the configured strategy and returns the map with
   * per-tier parameter and element counts. Parameters keep their given order in the map.
   *
   * Throws an ArgumentError with code `SCHEDULER_INVALID_PARAMETER` for a malformed list,
   * `SCHEDULER_MISSING_IMPORTANCE` or `SCHEDULER_UNMATCHED_PARAMETERS` when parameters cannot be
   * placed and no defaultTier is set, and `SCHEDULER_INVALID_IMPORTANCE` for malformed statistics.
   */
  assign(parameters: ParameterList, options: AssignOptions = {}): TierMap {
    const checked = checkParameters(parameters);
    switch (this.strategy) {
      case 'layer_depth':
        return this.assignByLayerDepth(checked);
      case 'parameter_importance':
        return this.assignByImportance(checked, options.importance);
      case 'manual':
        return this.assignByRules(checked);
    }
  }

  private assignByLayerDepth(parameters: CheckedParameter[]): TierMap {
    const fallbackTier = this.defaultTier ?? this.numTiers - 1;

    // Element count of each layer, in the order from the fast end to the slow end.
    const layerElements = new Map<number, number>();
    for (const parameter of parameters) {
      const layer = parseLayerNumber(parameter.name);
      if (layer !== undefined) {
        layerElements.set(layer, (layerElements.get(layer) ?? 0) + parameter.elementCount);
      }
    }
    const layers = [...layerElements.keys()].sort((left, right) => (this.fastEnd === 'low' ? left - right : right - left));

    const tiers = partitionContiguous(
      layers.map((layer) => layerElements.get(layer) as number),
      this.numTiers,
    );
    const tierOfLayer = new Map(layers.map((layer, index) => [layer, tiers[index] as number]));

    const unassigned: string[] = [];
    const placed = parameters.map((parameter) => {
      const layer = parseLayerNumber(parameter.name);
      if (layer === undefined) {
        unassigned.push(parameter.name);
        return { parameter, tier: fallbackTier };
      }
      return { parameter, tier: tierOfLayer.get(layer) as number };
    });
    return makeTierMap(placed, this.tierUpdateFrequencies, unassigned);
  }

  private assignByImportance(parameters: CheckedParameter[], importance: ImportanceStatistics | undefined): TierMap {
    const statisticsByName: ReadonlyMap<string, ImportanceStatistic> =
      importance instanceof Map
        ? importance
        : new Map(Object.entries((importance ?? {}) as Readonly<Record<string, ImportanceStatistic>>));
    const statisticOf = (parameter: CheckedParameter): ImportanceStatistic | undefined =>
      statisticsByName.get(parameter.name) ?? parameter.importance;

    // 1) Group the lora_a/lora_b pair of each module, in order of first appearance.
    const groups = new Map<string, CheckedParameter[]>();
    for (const parameter of parameters) {
      const key = loraModuleName(parameter.name);
      groups.set(key, [...(groups.get(key) ?? []), parameter]);
    }

    // 2) Score each group: squared gradient per batch, summed over its members, per element.
    const scored: { members: CheckedParameter[]; elements: number; score: number }[] = [];
    const missing: CheckedParameter[][] = [];
    for (const members of groups.values()) {
      if (members.some((member) => statisticOf(member) === undefined)) {
        missing.push(members);
        continue;
      }
      const perBatch = members.reduce(
        (sum, member) => sum + squaredGradientPerBatch(member.name, statisticOf(member) as ImportanceStatistic),
        0,
      );
      const elements = members.reduce((sum, member) => sum + member.elementCount, 0);
      scored.push({ members, elements, score: elements === 0 ? 0 : perBatch / elements });
    }

    const missingNames = missing.flat().map((parameter) => parameter.name);
    if (missingNames.length > 0 && this.defaultTier === undefined) {
      throw new ArgumentError(
        'SCHEDULER_MISSING_IMPORTANCE',
        `${missingNames.length} parameter(s) have no gradient statistics for parameter_importance: ${listNames(missingNames)}. ` +
          'Pass statistics for every parameter (both matrices of a LoRA pair), or set defaultTier.',
        { details: { missing: missingNames } },
      );
    }

    // 3) Most important first (a stable sort keeps the given order on ties), then split by elements.
    scored.sort((left, right) => right.score - left.score);
    const tiers = partitionContiguous(
      scored.map((group) => group.elements),
      this.numTiers,
    );
    const tierOf = new Map<string, number>();
    scored.forEach((group, index) => {
      for (const member of group.members) {
        tierOf.set(member.name, tiers[index] as number);
      }
    });

    const placed = parameters.map((parameter) => ({
      parameter,
      tier: tierOf.get(parameter.name) ?? (this.defaultTier as number),
    }));
    return makeTierMap(placed, this.tierUpdateFrequencies, missingNames);
  }

  private assignByRules(parameters: CheckedParameter[]): TierMap {
    const unmatched: string[] = [];
    const placed = parameters.map((parameter) => {
      const rule = this.rules.find((candidate) => candidate.matches(parameter.name));
      if (rule === undefined) {
        unmatched.push(parameter.name);
        return { parameter, tier: this.defaultTier ?? -1 };
      }
      return { parameter, tier: rule.tier };
    });

    // A rule that matches no name at all is almost always a typo or an unsupported glob form, and
    // silently ignoring it can leave a tier empty.
    const unusedRules = this.rules.filter((rule) => !parameters.some((parameter) => rule.matches(parameter.name)));
    if (unusedRules.length > 0) {
      throw new ArgumentError(
        'SCHEDULER_RULE_MATCHES_NOTHING',
        `${unusedRules.length} tierMap rule(s) match no parameter: ${listNames(unusedRules.map((rule) => rule.pattern))}. ` +
          'In a glob, * stays within one dot-separated part, ** crosses parts and ? is one character; ' +
          'write character classes such as [01] as a /regular expression/. ' +
          `Parameter names look like ${listNames(parameters.slice(0, 2).map((parameter) => parameter.name))}.`,
        { details: { rules: unusedRules.map((rule) => rule.pattern) } },
      );
    }

    if (unmatched.length > 0 && this.defaultTier === undefined) {
      throw new ArgumentError(
        'SCHEDULER_UNMATCHED_PARAMETERS',
        `${unmatched.length} parameter(s) match no tierMap rule: ${listNames(unmatched)}. ` +
          'Add rules for them (a glob such as "**" matches every name), or set defaultTier.',
        { details: { unmatched } },
      );
    }
    return makeTierMap(placed, this.tierUpdateFrequencies, unmatched);
  }
}

function resolveFrequencies(options: ParameterTierSchedulerOptions): readonly number[] {
  const { numTiers, tierUpdateFrequencies } = options;
  if (numTiers !== undefined && !(Number.isSafeInteger(numTiers) && numTiers >= 1)) {
    throw invalidOption('numTiers', numTiers, 'an integer of at least 1');
  }
  if (tierUpdateFrequencies === undefined) {
    if (numTiers === undefined) {
      return [1, 2, 4];
    }
    if (numTiers > 53) {
      throw invalidOption('numTiers', numTiers, 'at most 53 when tierUpdateFrequencies is left out, so the powers of two stay exact');
    }
    return Array.from({ length: numTiers }, (_, tier) => 2 ** tier);
  }
  if (numTiers !== undefined && Array.isArray(tierUpdateFrequencies) && tierUpdateFrequencies.length !== numTiers) {
    throw new ArgumentError(
      'SCHEDULER_INVALID_OPTION',
      `tierUpdateFrequencies has ${tierUpdateFrequencies.length} entries (${JSON.stringify(tierUpdateFrequencies)}) but numTiers is ${numTiers}. Give one frequency per tier.`,
      { details: { field: 'tierUpdateFrequencies', numTiers, tierUpdateFrequencies } },
    );
  }
  return tierUpdateFrequencies;
}

function checkStep(step: number): void {
  if (!Number.isSafeInteger(step) || step < 1) {
    throw invalidOption('step', step, 'an integer of at least 1 (steps count optimizer steps from 1)');
  }
}

function invalidOption(field: string, value: unknown, expected: string): ArgumentError {
  return new ArgumentError(
    'SCHEDULER_INVALID_OPTION',
    `${field} is ${describeValue(value)}; it must be ${expected}.`,
    { details: { field, value } },
  );
}

/** Shows a value as JSON, except that NaN and the infinities, which JSON writes as null, keep their names. */
function describeValue(value: unknown): string {
  if (value === undefined) return 'missing';
  if (typeof value === 'number' && !Number.isFinite(value)) return String(value);
  return JSON.stringify(value);
}
