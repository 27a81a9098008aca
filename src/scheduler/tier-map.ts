/**
 * Building and checking {@link TierMap}s: from a scheduler's assignment, from a plain name-to-tier
 * record, or from any {@link TierMapLike}.
 */
import { ArgumentError } from '../errors.js';
import { parseLayerNumber } from './layers.js';
import type { ImportanceStatistic } from './importance.js';
import type { TierMap, TierMapLike, TierSummary } from './types.js';

/** A parameter to assign: its name, its shape and, for parameter_importance, its gradient statistics. */
export interface ParameterInfo {
  name: string;
  shape: readonly number[];
  importance?: ImportanceStatistic;
}

/** Parameters as a list, or shapes by name in a Map or a plain object. */
export type ParameterList =
  | readonly ParameterInfo[]
  | ReadonlyMap<string, readonly number[]>
  | Readonly<Record<string, readonly number[]>>;

/** A parameter after its shape was checked. */
export interface CheckedParameter extends ParameterInfo {
  elementCount: number;
}

/** Options of {@link buildTierMap}. */
export interface BuildTierMapOptions {
  /** Names to report in {@link TierMap.unassigned}. @default [] */
  unassigned?: readonly string[];
}

/** Options of {@link normalizeTierMap}. */
export interface NormalizeTierMapOptions {
  /** Shapes of all parameters; every one needs a tier. */
  parameters: ParameterList;
  /** Update frequency of each tier. Defaults to the frequencies of a full TierMap, and is required otherwise. */
  frequencies?: readonly number[];
}

/**
 * Returns a TierMap for a plain assignment of names to tiers, with per-tier counts computed from
 * the shapes. Every parameter must have a tier and every assigned name must be a parameter.
 * Throws an ArgumentError with code `SCHEDULER_INVALID_TIER_MAP` otherwise.
 */
export function buildTierMap(
  assignments: Readonly<Record<string, number>> | ReadonlyMap<string, number>,
  parameters: ParameterList,
  frequencies: readonly number[],
  options: BuildTierMapOptions = {},
): TierMap {
  checkFrequencies(frequencies, 'SCHEDULER_INVALID_TIER_MAP');
  const checked = checkParameters(parameters);
  const tierOf = assignments instanceof Map ? new Map(assignments) : new Map(Object.entries(assignments));

  const known = new Set(checked.map((parameter) => parameter.name));
  const missing = checked.filter((parameter) => !tierOf.has(parameter.name)).map((parameter) => parameter.name);
  const extra = [...tierOf.keys()].filter((name) => !known.has(name));
  const badTiers = [...tierOf].filter(([, tier]) => !Number.isInteger(tier) || tier < 0 || tier >= frequencies.length);

  const problems: string[] = [];
  if (missing.length > 0) {
    problems.push(`${missing.length} parameter(s) have no tier: ${listNames(missing)}`);
  }
  if (extra.length > 0) {
    problems.push(`${extra.length} assigned name(s) are not parameters: ${listNames(extra)}`);
  }
  if (badTiers.length > 0) {
    const examples = badTiers.slice(0, 5).map(([name, tier]) => `${name} -> ${String(tier)}`);
    problems.push(`${badTiers.length} tier(s) are not integers from 0 to ${frequencies.length - 1}: ${examples.join(', ')}`);
  }
  if (problems.length > 0) {
    throw new ArgumentError(
      'SCHEDULER_INVALID_TIER_MAP',
      `Invalid tier map:\n${problems.map((problem) => `- ${problem}`).join('\n')}\nGive every parameter exactly one tier.`,
      { details: { missing, extra, badTiers: badTiers.map(([name, tier]) => ({ name, tier })) } },
    );
  }

  return makeTierMap(
    checked.map((parameter) => ({ parameter, tier: tierOf.get(parameter.name) as number })),
    frequencies,
    options.unassigned ?? [],
  );
}

/**
 * Returns a full TierMap for any {@link TierMapLike}, with the counts recomputed from the
 * parameters' shapes. A full TierMap keeps its `unassigned` list (names that are still
 * parameters) and its frequencies unless others are given.
 */
export function normalizeTierMap(tierMap: TierMapLike, options: NormalizeTierMapOptions): TierMap {
  const full = isTierMap(tierMap) ? tierMap : undefined;
  const frequencies = options.frequencies ?? full?.frequencies;
  if (frequencies === undefined) {
    throw new ArgumentError(
      'SCHEDULER_INVALID_TIER_MAP',
      'normalizeTierMap needs frequencies when the tier map is a Map or a plain object. Pass options.frequencies.',
    );
  }
  const assignments = full === undefined ? (tierMap as ReadonlyMap<string, number> | Readonly<Record<string, number>>) : full.assignments;
  const names = new Set(toTierAssignments(assignments).keys());
  const unassigned = (full?.unassigned ?? []).filter((name) => names.has(name));
  return buildTierMap(assignments, options.parameters, frequencies, { unassigned });
}

/** Returns the name-to-tier assignment of any {@link TierMapLike} as a Map. */
export function toTierAssignments(tierMap: TierMapLike): Map<string, number> {
  if (isTierMap(tierMap)) {
    return new Map(Object.entries(tierMap.assignments));
  }
  if (tierMap instanceof Map) {
    return new Map(tierMap);
  }
  return new Map(Object.entries(tierMap as Readonly<Record<string, number>>));
}

/** Tells whether a value is a full {@link TierMap} rather than a plain name-to-tier record or Map. */
export function isTierMap(value: unknown): value is TierMap {
  if (typeof value !== 'object' || value === null || value instanceof Map) {
    return false;
  }
  const candidate = value as Partial<TierMap>;
  return (
    typeof candidate.assignments === 'object' &&
    candidate.assignments !== null &&
    Array.isArray(candidate.tiers) &&
    Array.isArray(candidate.frequencies)
  );
}

/** Builds the TierMap of parameters whose tiers are already known and valid. */
export function makeTierMap(
  placed: readonly { parameter: CheckedParameter; tier: number }[],
  frequencies: readonly number[],
  unassigned: readonly string[],
): TierMap {
  const tiers: TierSummary[] = frequencies.map((frequency, tier) => ({
    tier,
    frequency,
    parameterNames: [],
    parameterCount: 0,
    elementCount: 0,
    layers: [],
  }));
  const assignments: Record<string, number> = {};

  for (const { parameter, tier } of placed) {
    const summary = tiers[tier] as TierSummary;
    assignments[parameter.name] = tier;
    summary.parameterNames.push(parameter.name);
    summary.parameterCount += 1;
    summary.elementCount += parameter.elementCount;
    const layer = parseLayerNumber(parameter.name);
    if (layer !== undefined && !summary.layers.includes(layer)) {
      summary.layers.push(layer);
    }
  }
  for (const summary of tiers) {
    summary.layers.sort((left, right) => left - right);
  }

  return { numTiers: frequencies.length, frequencies: [...frequencies], assignments, tiers, unassigned: [...unassigned] };
}

/**
 * Checks the parameter list and returns it with element counts, in the given order. Throws an
 * ArgumentError with code `SCHEDULER_INVALID_PARAMETER` for a duplicate name or a shape that is
 * not a list of non-negative integers.
 */
export function checkParameters(parameters: ParameterList): CheckedParameter[] {
  if (typeof parameters !== 'object' || parameters === null) {
    throw new ArgumentError(
      'SCHEDULER_INVALID_PARAMETER',
      `Parameters must be a list of { name, shape }, a Map or an object from name to shape, got ${String(parameters)}.`,
      { details: { parameters } },
    );
  }
  const list: ParameterInfo[] = Array.isArray(parameters)
    ? [...(parameters as readonly ParameterInfo[])]
    : parameters instanceof Map
      ? [...(parameters as ReadonlyMap<string, readonly number[]>)].map(([name, shape]) => ({ name, shape }))
      : Object.entries(parameters as Readonly<Record<string, readonly number[]>>).map(([name, shape]) => ({ name, shape }));

  const seen = new Set<string>();
  return list.map((parameter) => {
    const { name, shape } = parameter;
    if (typeof name !== 'string' || name === '') {
      throw new ArgumentError('SCHEDULER_INVALID_PARAMETER', `Parameter name ${String(name)} is invalid: it must be a non-empty string.`, {
        details: { name },
      });
    }
    if (seen.has(name)) {
      throw new ArgumentError('SCHEDULER_INVALID_PARAMETER', `Parameter ${name} is listed twice. List each parameter once.`, {
        details: { name },
      });
    }
    seen.add(name);
    if (!Array.isArray(shape) || !shape.every((size) => Number.isSafeInteger(size) && size >= 0)) {
      throw new ArgumentError(
        'SCHEDULER_INVALID_PARAMETER',
        `Shape of parameter ${name} is ${JSON.stringify(shape)}; it must be a list of non-negative integers, such as [896, 8].`,
        { details: { name, shape } },
      );
    }
    const elementCount = shape.reduce((product, size) => product * size, 1);
    return { ...parameter, elementCount };
  });
}

/**
 * Checks tier update frequencies: a non-empty list of positive integers that does not decrease,
 * because tier 0 is the fastest tier.
 */
export function checkFrequencies(frequencies: readonly number[], code: string): void {
  const valid =
    Array.isArray(frequencies) &&
    frequencies.length > 0 &&
    frequencies.every((frequency, tier) => Number.isSafeInteger(frequency) && frequency >= 1 && (tier === 0 || frequency >= (frequencies[tier - 1] as number)));
  if (!valid) {
    throw new ArgumentError(
      code,
      `tierUpdateFrequencies ${JSON.stringify(frequencies)} is invalid: it must be a non-empty list of integers of at least 1 that does not decrease, such as [1, 2, 4].`,
      { details: { field: 'tierUpdateFrequencies', frequencies } },
    );
  }
}

/** Lists up to 10 names, then how many more. */
export function listNames(names: readonly string[]): string {
  const shown = names.slice(0, 10).join(', ');
  return names.length > 10 ? `${shown} and ${names.length - 10} more` : shown;
}
