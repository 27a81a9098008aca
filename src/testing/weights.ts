/**
 * Snapshots of variable values and the changes between two snapshots, for tests that check which
 * parameters an optimizer step moved and by how much.
 */
import * as tf from '@tensorflow/tfjs';

import { ArgumentError } from '../errors.js';

/**
 * Tensors to snapshot: a list of variables (keyed by `variable.name`), or a record of tensors keyed
 * by the names to report.
 */
export type WeightSource = readonly tf.Variable[] | Readonly<Record<string, tf.Tensor>>;

/** Copied values of named tensors at one moment, keyed by name. */
export type WeightSnapshot = ReadonlyMap<string, { shape: number[]; values: Float32Array }>;

/** The change of one tensor between two snapshots. */
export interface WeightChange {
  name: string;
  /** Largest `|after - before|` over the elements. */
  maxAbsoluteChange: number;
  /** Mean of `|after - before|` over the elements. */
  meanAbsoluteChange: number;
  /** True when any element differs. Bit-identical values count as unchanged. */
  changed: boolean;
}

/**
 * Copies the current values of `source` into a snapshot. Later updates of the variables do not
 * change it, and it contains no tensors.
 *
 * @example
 * ```ts
 * const before = captureWeights([weight, bias]);
 * optimizer.applyGradients(gradients);
 * const moved = weightChanges(before, captureWeights([weight, bias])).filter((change) => change.changed);
 * ```
 */
export function captureWeights(source: WeightSource): WeightSnapshot {
  const snapshot = new Map<string, { shape: number[]; values: Float32Array }>();
  const entries: Array<[string, tf.Tensor]> = Array.isArray(source)
    ? (source as readonly tf.Variable[]).map((variable) => [variable.name, variable])
    : Object.entries(source as Readonly<Record<string, tf.Tensor>>);

  for (const [name, tensor] of entries) {
    if (snapshot.has(name)) {
      throw new ArgumentError('TESTING_DUPLICATE_NAME', `Two tensors are named "${name}"; give each tensor to snapshot a distinct name.`, {
        details: { name },
      });
    }
    snapshot.set(name, { shape: [...tensor.shape], values: Float32Array.from(tensor.dataSync() as ArrayLike<number>) });
  }
  return snapshot;
}

/**
 * Compares two snapshots of the same names and returns one {@link WeightChange} per name, in the
 * order of `before`. A name missing from `after`, or a changed shape, is an `ArgumentError`.
 */
export function weightChanges(before: WeightSnapshot, after: WeightSnapshot): WeightChange[] {
  const changes: WeightChange[] = [];
  for (const [name, previous] of before) {
    const current = after.get(name);
    if (current === undefined) {
      throw new ArgumentError('TESTING_SNAPSHOT_MISMATCH', `"${name}" is in the first snapshot but not in the second. Capture the same tensors twice.`, {
        details: { name },
      });
    }
    if (current.values.length !== previous.values.length || current.shape.join(',') !== previous.shape.join(',')) {
      throw new ArgumentError(
        'TESTING_SNAPSHOT_MISMATCH',
        `"${name}" changed shape from [${previous.shape.join(', ')}] to [${current.shape.join(', ')}] between the snapshots.`,
        { details: { name, before: previous.shape, after: current.shape } },
      );
    }

    let maxAbsoluteChange = 0;
    let sumAbsoluteChange = 0;
    let changed = false;
    for (let index = 0; index < previous.values.length; index += 1) {
      const a = previous.values[index] as number;
      const b = current.values[index] as number;
      // Object.is treats NaN as equal to NaN, so a NaN that stays NaN is unchanged.
      if (!Object.is(a, b)) {
        changed = true;
      }
      const difference = Math.abs(b - a);
      if (!Number.isNaN(difference)) {
        maxAbsoluteChange = Math.max(maxAbsoluteChange, difference);
        sumAbsoluteChange += difference;
      }
    }
    const meanAbsoluteChange = previous.values.length === 0 ? 0 : sumAbsoluteChange / previous.values.length;
    changes.push({ name, maxAbsoluteChange, meanAbsoluteChange, changed });
  }
  return changes;
}
