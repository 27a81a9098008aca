/**
 * Options of {@link NestedAdam} and their validation.
 *
 * Defaults follow `torch.optim.AdamW` (PyTorch 1.13): learning rate 1e-3, betas (0.9, 0.999),
 * epsilon 1e-8 and weight decay 1e-2. Every option is checked when the optimizer is built, and an
 * invalid one raises an {@link ArgumentError} with code `OPTIMIZER_INVALID_OPTION` that names the
 * field, shows the value and states the allowed range.
 */
import { ArgumentError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { TierMap, TierMapLike } from '../scheduler/types.js';

/** A learning rate: a constant, or a function of the optimizer step (counted from 1). */
export type LearningRate = number | ((step: number) => number);

/**
 * The handling of the gradients that an inactive tier receives.
 *
 * - `accumulate`: sum them until the tier's next update and apply the sum plus that step's gradient.
 * - `mean`: the same sum divided by the window length (the tier's frequency).
 * - `drop`: discard them; the tier's update uses only the gradient of its own step.
 */
export type InactiveGradients = 'accumulate' | 'mean' | 'drop';

/** The allowed values of {@link InactiveGradients}. */
export const INACTIVE_GRADIENTS_VALUES: readonly InactiveGradients[] = ['accumulate', 'mean', 'drop'];

/** One tier of parameters and how it trains. */
export interface TierOptions {
  /** Update frequency: the tier takes an AdamW step at optimizer steps that are multiples of it. */
  frequency: number;
  /**
   * Multiplier of the learning rate for this tier.
   * @default 1
   */
  learningRateScale?: number;
  /**
   * Decoupled weight decay of this tier.
   * @default the optimizer's `weightDecay`
   */
  weightDecay?: number;
}

/** Options of {@link NestedAdam}. */
export interface NestedAdamOptions {
  /**
   * Learning rate, or a function that returns it for an optimizer step (counted from 1).
   * The function is called once per step, at the step being taken.
   * @default 1e-3
   */
  learningRate?: LearningRate;
  /**
   * Decay rate of the first-moment estimate, in [0, 1).
   * @default 0.9
   */
  beta1?: number;
  /**
   * Decay rate of the second-moment estimate, in [0, 1).
   * @default 0.999
   */
  beta2?: number;
  /**
   * Term added to the denominator for numerical stability; must be positive.
   * @default 1e-8
   */
  epsilon?: number;
  /**
   * Decoupled weight decay (AdamW): each update first multiplies a weight by
   * `1 - learningRate * weightDecay`, as `torch.optim.AdamW` does. Tiers may override it.
   * @default 1e-2
   */
  weightDecay?: number;
  /**
   * Update frequency of each tier, indexed by tier (tier 0 is the fastest). Give this or `tiers`,
   * not both. Without either, a full {@link TierMap} supplies its own frequencies.
   * @default [1, 2, 4]
   */
  tierUpdateFrequencies?: readonly number[];
  /** The tiers with per-tier learning-rate scale and weight decay. Give this or `tierUpdateFrequencies`. */
  tiers?: readonly TierOptions[];
  /**
   * Variable name to tier index, as a {@link TierMap}, a `Map` or a plain object. Variables not
   * in the map train in `unmappedTier`; each such name is reported once through `logger.warn` and
   * listed by `NestedAdam.unmappedParameterNames`.
   * @default every variable trains in `unmappedTier`, without a report
   */
  tierMap?: TierMapLike;
  /**
   * Handling of the gradients of inactive tiers: `accumulate`, `mean` or `drop`.
   * @default 'accumulate'
   */
  inactiveGradients?: InactiveGradients;
  /**
   * Tier of the variables that are not in `tierMap`.
   * @default 0
   */
  unmappedTier?: number;
  /** Receives the one-time report of unmapped variables. @default silentLogger */
  logger?: Logger;
}

/** A tier after defaults are filled in. */
export interface ResolvedTier {
  frequency: number;
  learningRateScale: number;
  weightDecay: number;
}

/** {@link NestedAdamOptions} after validation, with every default filled in. */
export interface ResolvedNestedAdamOptions {
  learningRate: LearningRate;
  beta1: number;
  beta2: number;
  epsilon: number;
  weightDecay: number;
  tiers: ResolvedTier[];
  /** `null` when no tier map was given. */
  tierMap: Map<string, number> | null;
  inactiveGradients: InactiveGradients;
  unmappedTier: number;
  logger: Logger | undefined;
}

/** The defaults of {@link NestedAdamOptions}. */
export const NESTED_ADAM_DEFAULTS = {
  learningRate: 1e-3,
  beta1: 0.9,
  beta2: 0.999,
  epsilon: 1e-8,
  weightDecay: 1e-2,
  tierUpdateFrequencies: [1, 2, 4],
  inactiveGradients: 'accumulate',
  unmappedTier: 0,
} as const;

const KNOWN_OPTIONS = new Set<string>([
  'learningRate',
  'beta1',
  'beta2',
  'epsilon',
  'weightDecay',
  'tierUpdateFrequencies',
  'tiers',
  'tierMap',
  'inactiveGradients',
  'unmappedTier',
  'logger',
]);

/** Validates `options` and fills in the defaults. */
export function resolveNestedAdamOptions(options: NestedAdamOptions = {}): ResolvedNestedAdamOptions {
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw invalidOption('options', options, 'an options object');
  }
  for (const key of Object.keys(options)) {
    if (!KNOWN_OPTIONS.has(key)) {
      throw new ArgumentError(
        'OPTIMIZER_INVALID_OPTION',
        `Unknown NestedAdam option "${key}". Known options: ${[...KNOWN_OPTIONS].join(', ')}.`,
        { details: { field: key } },
      );
    }
  }

  const learningRate = options.learningRate ?? NESTED_ADAM_DEFAULTS.learningRate;
  validateLearningRate(learningRate);

  const beta1 = checkNumber('beta1', options.beta1 ?? NESTED_ADAM_DEFAULTS.beta1, { min: 0, maxExclusive: 1 });
  const beta2 = checkNumber('beta2', options.beta2 ?? NESTED_ADAM_DEFAULTS.beta2, { min: 0, maxExclusive: 1 });
  const epsilon = checkNumber('epsilon', options.epsilon ?? NESTED_ADAM_DEFAULTS.epsilon, { minExclusive: 0 });
  const weightDecay = checkNumber('weightDecay', options.weightDecay ?? NESTED_ADAM_DEFAULTS.weightDecay, {
    min: 0,
  });

  const fullTierMap = options.tierMap !== undefined && isFullTierMap(options.tierMap) ? options.tierMap : null;
  const tiers = resolveTiers(options, weightDecay, fullTierMap);
  const tierMap = options.tierMap === undefined ? null : resolveTierMap(options.tierMap, tiers.length);

  const inactiveGradients = options.inactiveGradients ?? NESTED_ADAM_DEFAULTS.inactiveGradients;
  if (!INACTIVE_GRADIENTS_VALUES.includes(inactiveGradients)) {
    throw invalidOption('inactiveGradients', inactiveGradients, `one of ${INACTIVE_GRADIENTS_VALUES.join(', ')}`);
  }

  const unmappedTier = options.unmappedTier ?? NESTED_ADAM_DEFAULTS.unmappedTier;
  checkTierIndex('unmappedTier', unmappedTier, tiers.length);

  const logger = options.logger;
  if (logger !== undefined && (typeof logger !== 'object' || logger === null || typeof logger.warn !== 'function')) {
    throw invalidOption('logger', logger, 'an object with debug, info, warn and error methods');
  }

  return { learningRate, beta1, beta2, epsilon, weightDecay, tiers, tierMap, inactiveGradients, unmappedTier, logger };
}

/**
 * Checks a learning rate given as an option or set later: a finite number >= 0, or a function.
 * A function's results are checked at each step by {@link checkLearningRateValue}.
 */
export function validateLearningRate(learningRate: unknown): asserts learningRate is LearningRate {
  if (typeof learningRate === 'function') {
    return;
  }
  checkNumber('learningRate', learningRate, { min: 0 });
}

/** Checks the value a learning-rate function returned for `step`. */
export function checkLearningRateValue(value: unknown, step: number): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) {
    throw new ArgumentError(
      'OPTIMIZER_INVALID_OPTION',
      `Invalid NestedAdam option learningRate: the function returned ${describe(value)} for step ${step}, ` +
        'but a learning rate must be a finite number >= 0. Fix the function so that it returns one for every step.',
      { details: { field: 'learningRate', value, step } },
    );
  }
  return value;
}

/** Tells whether `tierMap` is a full {@link TierMap} (with frequencies), not a name-to-tier mapping. */
export function isFullTierMap(tierMap: TierMapLike): tierMap is TierMap {
  if (tierMap instanceof Map) {
    return false;
  }
  const candidate = tierMap as Partial<TierMap>;
  return typeof candidate.assignments === 'object' && candidate.assignments !== null && Array.isArray(candidate.frequencies);
}

function resolveTiers(options: NestedAdamOptions, weightDecay: number, fullTierMap: TierMap | null): ResolvedTier[] {
  if (options.tierUpdateFrequencies !== undefined && options.tiers !== undefined) {
    throw new ArgumentError(
      'OPTIMIZER_INVALID_OPTION',
      'Invalid NestedAdam options: both tierUpdateFrequencies and tiers are set. Give only one of them.',
      { details: { field: 'tiers' } },
    );
  }

  let tiers: ResolvedTier[];
  if (options.tiers !== undefined) {
    if (!Array.isArray(options.tiers) || options.tiers.length === 0) {
      throw invalidOption('tiers', options.tiers, 'a non-empty array of {frequency, learningRateScale?, weightDecay?}');
    }
    tiers = options.tiers.map((tier: TierOptions, index) => {
      if (typeof tier !== 'object' || tier === null) {
        throw invalidOption(`tiers[${index}]`, tier, 'an object {frequency, learningRateScale?, weightDecay?}');
      }
      return {
        frequency: checkFrequency(`tiers[${index}].frequency`, tier.frequency),
        learningRateScale: checkNumber(`tiers[${index}].learningRateScale`, tier.learningRateScale ?? 1, { min: 0 }),
        weightDecay: checkNumber(`tiers[${index}].weightDecay`, tier.weightDecay ?? weightDecay, { min: 0 }),
      };
    });
  } else {
    const frequencies =
      options.tierUpdateFrequencies ?? fullTierMap?.frequencies ?? NESTED_ADAM_DEFAULTS.tierUpdateFrequencies;
    const field = options.tierUpdateFrequencies !== undefined || fullTierMap === null ? 'tierUpdateFrequencies' : 'tierMap.frequencies';
    if (!Array.isArray(frequencies) || frequencies.length === 0) {
      throw invalidOption(field, frequencies, 'a non-empty array of positive integers');
    }
    tiers = frequencies.map((frequency: number, index) => ({
      frequency: checkFrequency(`${field}[${index}]`, frequency),
      learningRateScale: 1,
      weightDecay,
    }));
  }

  if (fullTierMap !== null) {
    const frequencies = tiers.map((tier) => tier.frequency);
    if (!sameNumbers(frequencies, fullTierMap.frequencies)) {
      throw new ArgumentError(
        'OPTIMIZER_INVALID_OPTION',
        `Invalid NestedAdam option tierMap: its frequencies [${fullTierMap.frequencies.join(', ')}] differ from ` +
          `the optimizer's tier frequencies [${frequencies.join(', ')}]. Build the tier map with the same frequencies, ` +
          'or leave tierUpdateFrequencies and tiers unset so that the tier map supplies them.',
        { details: { field: 'tierMap', tierMapFrequencies: fullTierMap.frequencies, frequencies } },
      );
    }
  }
  return tiers;
}

function resolveTierMap(tierMap: TierMapLike, numTiers: number): Map<string, number> {
  let entries: Iterable<[string, number]>;
  if (tierMap instanceof Map) {
    entries = tierMap.entries();
  } else if (isFullTierMap(tierMap)) {
    entries = Object.entries(tierMap.assignments);
  } else if (typeof tierMap === 'object' && tierMap !== null && !Array.isArray(tierMap)) {
    entries = Object.entries(tierMap);
  } else {
    throw invalidOption('tierMap', tierMap, 'a TierMap, a Map or a plain object of variable name to tier index');
  }

  const resolved = new Map<string, number>();
  for (const [name, tier] of entries) {
    checkTierIndex(`tierMap["${name}"]`, tier, numTiers);
    resolved.set(name, tier);
  }
  return resolved;
}

function checkTierIndex(field: string, value: unknown, numTiers: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value >= numTiers) {
    throw invalidOption(field, value, `an integer tier index from 0 to ${numTiers - 1}`);
  }
  return value;
}

function checkFrequency(field: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1) {
    throw invalidOption(field, value, 'an integer >= 1');
  }
  return value;
}

interface NumberRange {
  min?: number;
  minExclusive?: number;
  maxExclusive?: number;
}

function checkNumber(field: string, value: unknown, range: NumberRange): number {
  const inRange =
    typeof value === 'number' &&
    Number.isFinite(value) &&
    (range.min === undefined || value >= range.min) &&
    (range.minExclusive === undefined || value > range.minExclusive) &&
    (range.maxExclusive === undefined || value < range.maxExclusive);
  if (!inRange) {
    throw invalidOption(field, value, describeRange(range));
  }
  return value;
}

function describeRange(range: NumberRange): string {
  let lower = '(-Infinity';
  if (range.min !== undefined) {
    lower = `[${range.min}`;
  } else if (range.minExclusive !== undefined) {
    lower = `(${range.minExclusive}`;
  }
  const upper = range.maxExclusive !== undefined ? `${range.maxExclusive})` : 'Infinity)';
  return `a finite number in ${lower}, ${upper}`;
}

function invalidOption(field: string, value: unknown, allowed: string): ArgumentError {
  return new ArgumentError(
    'OPTIMIZER_INVALID_OPTION',
    `Invalid NestedAdam option ${field}: ${describe(value)}. Expected ${allowed}.`,
    { details: { field, value } },
  );
}

function describe(value: unknown): string {
  if (typeof value === 'string') {
    return JSON.stringify(value);
  }
  if (typeof value === 'function') {
    return 'a function';
  }
  if (Array.isArray(value)) {
    return `[${value.map(describe).join(', ')}]`;
  }
  if (typeof value === 'object' && value !== null) {
    return 'an object';
  }
  return String(value);
}

function sameNumbers(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((value, index) => value === b[index]);
}
