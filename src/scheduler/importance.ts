/**
 * Gradient statistics for the parameter_importance strategy.
 *
 * A calibration pass runs some training batches without updating weights and records, for each
 * parameter, the sum of its squared gradient elements per batch. The importance of a parameter is
 * its mean squared gradient per element: `(gradSquaredSum / count) / elementCount`, so a large
 * tensor does not rank high merely because it has many elements.
 */
import { ArgumentError } from '../errors.js';

/**
 * Gradient statistics of one parameter: the sum over `count` batches of the sum of its squared
 * gradient elements. A plain number is the same as `{ gradSquaredSum: number, count: 1 }`.
 */
export type ImportanceStatistic = number | { gradSquaredSum: number; count: number };

/** Importance statistics by parameter name. */
export type ImportanceStatistics =
  | Readonly<Record<string, ImportanceStatistic>>
  | ReadonlyMap<string, ImportanceStatistic>;

/**
 * Collects squared-gradient sums over calibration batches. The library never reads tensors here:
 * the caller passes `sum(grad^2)` of each parameter as a number, for example from
 * `tf.sum(tf.square(grad)).dataSync()[0]`.
 */
export class ImportanceAccumulator {
  private readonly sums = new Map<string, { gradSquaredSum: number; count: number }>();

  /** Adds one batch's sum of squared gradient elements of a parameter. */
  add(name: string, gradSquaredSum: number): void {
    if (!Number.isFinite(gradSquaredSum) || gradSquaredSum < 0) {
      throw new ArgumentError(
        'SCHEDULER_INVALID_IMPORTANCE',
        `Squared-gradient sum of ${name} is ${gradSquaredSum}; it must be a finite number of at least 0. Skip batches with non-finite gradients.`,
        { details: { name, gradSquaredSum } },
      );
    }
    const entry = this.sums.get(name) ?? { gradSquaredSum: 0, count: 0 };
    entry.gradSquaredSum += gradSquaredSum;
    entry.count += 1;
    this.sums.set(name, entry);
  }

  /** Adds one batch's sums for several parameters. */
  addAll(sums: Readonly<Record<string, number>> | ReadonlyMap<string, number>): void {
    const entries = sums instanceof Map ? [...sums] : Object.entries(sums);
    for (const [name, gradSquaredSum] of entries) {
      this.add(name, gradSquaredSum);
    }
  }

  /** Returns a copy of the statistics, ready for `ParameterTierScheduler.assign`. */
  statistics(): Record<string, { gradSquaredSum: number; count: number }> {
    return Object.fromEntries([...this.sums].map(([name, entry]) => [name, { ...entry }]));
  }
}

/**
 * Returns the squared-gradient sum per batch of one parameter, after checking the statistic.
 * Throws an ArgumentError with code `SCHEDULER_INVALID_IMPORTANCE` when it is malformed.
 */
export function squaredGradientPerBatch(name: string, statistic: ImportanceStatistic): number {
  const { gradSquaredSum, count } =
    typeof statistic === 'number' ? { gradSquaredSum: statistic, count: 1 } : (statistic ?? { gradSquaredSum: NaN, count: NaN });

  if (!Number.isFinite(gradSquaredSum) || gradSquaredSum < 0 || !Number.isInteger(count) || count < 1) {
    throw new ArgumentError(
      'SCHEDULER_INVALID_IMPORTANCE',
      `Importance of ${name} is invalid (gradSquaredSum ${String(gradSquaredSum)}, count ${String(count)}): ` +
        'gradSquaredSum must be a finite number of at least 0 and count an integer of at least 1.',
      { details: { name, statistic } },
    );
  }
  return gradSquaredSum / count;
}
