/**
 * Token-weighted loss arithmetic shared by training and evaluation.
 */

import { ArgumentError } from '../errors.js';

/** Summed loss over the target tokens of one batch or micro-batch. */
export interface LossSum {
  /** Sum of the per-token losses over the target positions. */
  lossSum: number;
  /** Number of target positions that the sum covers. */
  tokenCount: number;
}

/**
 * Returns the mean loss per target token over several batches: the sum of all `lossSum` divided
 * by the sum of all `tokenCount`. One token at 2.0 and three tokens at 1.0 give
 * (2 + 3) / 4 = 1.25, where averaging the two batch means would give 1.5.
 *
 * Returns 0 when there are no target tokens, so an empty window never yields NaN. Throws
 * `ArgumentError` (code `LOSS_SUM_INVALID`) for a negative or non-finite count or a non-finite sum.
 */
export function combineLossSums(parts: readonly LossSum[]): number {
  let lossSum = 0;
  let tokenCount = 0;
  parts.forEach((part, index) => {
    if (!Number.isFinite(part.lossSum) || !Number.isInteger(part.tokenCount) || part.tokenCount < 0) {
      throw new ArgumentError(
        'LOSS_SUM_INVALID',
        `Invalid loss part ${index}: lossSum ${part.lossSum}, tokenCount ${part.tokenCount}; ` +
          'expected a finite sum and a non-negative integer count.',
        { details: { index, lossSum: part.lossSum, tokenCount: part.tokenCount } },
      );
    }
    lossSum += part.lossSum;
    tokenCount += part.tokenCount;
  });
  return tokenCount === 0 ? 0 : lossSum / tokenCount;
}
