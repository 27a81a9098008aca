/**
 * The saved state of a {@link NestedAdam} and its conversion to safetensors-ready form.
 *
 * Tensors are keyed by variable name and slot: `{name}/m` (first moment), `{name}/v` (second
 * moment) and `{name}/accum` (gradients summed since the tier's last update, present only for
 * tiers that accumulate). Each has the shape of its variable, so the record maps straight onto the
 * tensors of a safetensors file. The counters and hyperparameters are plain JSON.
 */
import type * as tf from '@tensorflow/tfjs';

import { FileFormatError } from '../errors.js';
import type { InactiveGradients, ResolvedTier } from './options.js';

/** The hyperparameters recorded with a state. */
export interface NestedAdamHyperparameters {
  /** The learning rate of the last step taken (of step 1 before any step). */
  learningRate: number;
  beta1: number;
  beta2: number;
  epsilon: number;
  weightDecay: number;
  tiers: ResolvedTier[];
  inactiveGradients: InactiveGradients;
  unmappedTier: number;
}

/** Everything a {@link NestedAdam} needs to continue exactly where it stopped. */
export interface NestedAdamState {
  /** Optimizer steps taken so far; the next step is `step + 1`. */
  step: number;
  /** Updates taken by each tier, indexed by tier; tier k has taken `floor(step / frequency_k)`. */
  tierUpdateCounts: number[];
  hyperparameters: NestedAdamHyperparameters;
  /** Slot tensors keyed `{name}/m`, `{name}/v` and `{name}/accum`. */
  tensors: Record<string, tf.Tensor>;
}

/** The key under which {@link stateToTensors} stores the JSON metadata. */
export const STATE_METADATA_KEY = 'nested_adam_state';

/** The format version written by {@link stateToTensors}. */
export const STATE_FORMAT_VERSION = 1;

/**
 * Splits a state into the tensors and the string metadata of a safetensors file.
 *
 * The tensors are the state's own (not copies). The metadata has one key,
 * `nested_adam_state`, whose value is the JSON of `{format, step, tierUpdateCounts, hyperparameters}`.
 */
export function stateToTensors(state: NestedAdamState): {
  tensors: Record<string, tf.Tensor>;
  metadata: Record<string, string>;
} {
  const { tensors, step, tierUpdateCounts, hyperparameters } = state;
  const json = JSON.stringify({ format: STATE_FORMAT_VERSION, step, tierUpdateCounts, hyperparameters });
  return { tensors, metadata: { [STATE_METADATA_KEY]: json } };
}

/**
 * Rebuilds a state from the tensors and metadata written by {@link stateToTensors}.
 *
 * Raises a {@link FileFormatError} (`OPTIMIZER_STATE_INVALID`) when the metadata is missing,
 * is not valid JSON, or lacks a field. The tensors are checked later by `NestedAdam.setState`.
 */
export function stateFromTensors(
  tensors: Record<string, tf.Tensor>,
  metadata: Readonly<Record<string, string>>,
): NestedAdamState {
  const json = metadata[STATE_METADATA_KEY];
  if (json === undefined) {
    throw invalidState(`the metadata has no "${STATE_METADATA_KEY}" key`);
  }

  let parsed: unknown;
  try {
    parsed = JSON.parse(json);
  } catch (error) {
    throw invalidState(`the "${STATE_METADATA_KEY}" metadata is not valid JSON`, error);
  }

  const record = parsed as Partial<NestedAdamState> & { format?: unknown };
  if (typeof record !== 'object' || record === null) {
    throw invalidState(`the "${STATE_METADATA_KEY}" metadata is not a JSON object`);
  }
  if (record.format !== STATE_FORMAT_VERSION) {
    throw invalidState(`its format is ${JSON.stringify(record.format)}, but this version reads format ${STATE_FORMAT_VERSION}`);
  }
  if (typeof record.step !== 'number' || !Array.isArray(record.tierUpdateCounts) || typeof record.hyperparameters !== 'object') {
    throw invalidState('the metadata lacks step, tierUpdateCounts or hyperparameters');
  }

  return {
    step: record.step,
    tierUpdateCounts: record.tierUpdateCounts,
    hyperparameters: record.hyperparameters as NestedAdamHyperparameters,
    tensors,
  };
}

function invalidState(reason: string, cause?: unknown): FileFormatError {
  return new FileFormatError(
    'OPTIMIZER_STATE_INVALID',
    `Invalid NestedAdam state: ${reason}. Load optimizer state saved by stateToTensors.`,
    { cause, details: { metadataKey: STATE_METADATA_KEY } },
  );
}
