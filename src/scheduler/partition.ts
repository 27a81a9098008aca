/**
 * Splitting an ordered list into contiguous runs of nearly equal weight.
 */
import { ArgumentError } from '../errors.js';

/**
 * Splits items, in their order, into `parts` contiguous non-empty runs whose weights are as equal
 * as possible, and returns the run index of each item.
 *
 * "As equal as possible" minimises the sum over runs of `(parts * runWeight - totalWeight)^2`,
 * which is `parts^2` times the squared distance of each run from an equal share. The sums are
 * computed exactly with BigInt, so ties are real ties: among equally good splits, the first run
 * is the shortest, then the second, and so on. With fewer items than parts, item i gets run i and
 * the last runs stay empty.
 *
 * Weights must be non-negative safe integers (element counts). Runs in O(parts * n^2) time.
 */
export function partitionContiguous(weights: readonly number[], parts: number): number[] {
  if (!Number.isSafeInteger(parts) || parts < 1) {
    throw new ArgumentError('SCHEDULER_INVALID_OPTION', `parts is ${String(parts)}; it must be an integer of at least 1.`, {
      details: { field: 'parts', value: parts },
    });
  }
  const invalid = weights.findIndex((weight) => !Number.isSafeInteger(weight) || weight < 0);
  if (invalid !== -1) {
    throw new ArgumentError(
      'SCHEDULER_INVALID_OPTION',
      `weights[${invalid}] is ${String(weights[invalid])}; every weight must be a non-negative integer (an element count).`,
      { details: { field: 'weights', index: invalid, value: weights[invalid] } },
    );
  }
  const count = weights.length;
  if (count <= parts) {
    return weights.map((_, index) => index);
  }

  const prefix: bigint[] = [0n];
  for (const weight of weights) {
    prefix.push((prefix[prefix.length - 1] as bigint) + BigInt(weight));
  }
  const total = prefix[count] as bigint;
  const scale = BigInt(parts);
  const runCost = (start: number, end: number): bigint => {
    const deviation = scale * ((prefix[end] as bigint) - (prefix[start] as bigint)) - total;
    return deviation * deviation;
  };

  // best[k][i]: lowest cost of splitting items i..count-1 into k runs; next[k][i]: end of the first run.
  const best: bigint[][] = [];
  const next: number[][] = [];
  best[1] = [];
  next[1] = [];
  for (let start = 0; start < count; start += 1) {
    (best[1] as bigint[])[start] = runCost(start, count);
    (next[1] as number[])[start] = count;
  }

  for (let runs = 2; runs <= parts; runs += 1) {
    const previous = best[runs - 1] as bigint[];
    const costs: bigint[] = [];
    const ends: number[] = [];
    // The remaining runs - 1 runs need at least one item each.
    for (let start = 0; start <= count - runs; start += 1) {
      let lowest: bigint | undefined;
      let lowestEnd = start + 1;
      for (let end = start + 1; end <= count - runs + 1; end += 1) {
        const cost = runCost(start, end) + (previous[end] as bigint);
        // Strictly lower only, so the shortest first run wins a tie.
        if (lowest === undefined || cost < lowest) {
          lowest = cost;
          lowestEnd = end;
        }
      }
      costs[start] = lowest as bigint;
      ends[start] = lowestEnd;
    }
    best[runs] = costs;
    next[runs] = ends;
  }

  const runOf: number[] = new Array<number>(count);
  let start = 0;
  for (let run = 0; run < parts; run += 1) {
    const end = (next[parts - run] as number[])[start] as number;
    for (let index = start; index < end; index += 1) {
      runOf[index] = run;
    }
    start = end;
  }
  return runOf;
}
