/** Types shared by the tier scheduler, the optimizer and the trainer. */

/** One tier of a {@link TierMap}. */
export interface TierSummary {
  /** Tier index; tier 0 is the fastest. */
  tier: number;
  /** Update frequency: the tier is active at optimizer steps that are multiples of it. */
  frequency: number;
  /** Names of the parameters in this tier, in the order of the parameter list. */
  parameterNames: string[];
  /** Number of parameters (tensors) in this tier. */
  parameterCount: number;
  /** Number of scalar elements over all parameters of this tier. */
  elementCount: number;
  /** Layer numbers that have at least one parameter in this tier, ascending. */
  layers: number[];
}

/** The result of assigning parameters to tiers. */
export interface TierMap {
  /** Number of tiers. */
  numTiers: number;
  /** Update frequency of each tier, indexed by tier. */
  frequencies: number[];
  /** Parameter name to tier index. */
  assignments: Record<string, number>;
  /** Per-tier summary, indexed by tier. */
  tiers: TierSummary[];
  /**
   * Parameters the strategy could not place, which went to the default tier: names without a
   * layer number (`layer_depth`), parameters without gradient statistics (`parameter_importance`)
   * and names no rule matches (`manual`).
   */
  unassigned: string[];
}

/** Any of the forms a tier map may be given in: a full {@link TierMap}, a `Map` or a plain object. */
export type TierMapLike = TierMap | ReadonlyMap<string, number> | Readonly<Record<string, number>>;
