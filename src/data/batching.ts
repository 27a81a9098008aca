/**
 * Padded batches with shifted labels, a resumable seeded batch order, and fixed evaluation batches.
 *
 * Layout: every array of a {@link Batch} is row-major `[batchSize, seqLength]`. Samples are padded
 * on the right. Position t of a row contains `inputIds[t]` and predicts `labels[t] = inputIds[t + 1]`.
 * `lossMask[t]` is 1 exactly when token t + 1 exists and is a target, so the last real position of
 * each row and all padding have mask 0. Targets come from each sample's `targetMask`, never from
 * comparing ids with the padding id, so an EOS that equals the padding id still counts.
 */

import { ArgumentError } from '../errors.js';
import { epochSeed, mulberry32, shuffleInPlace } from './random.js';
import type { DatasetSample } from './samples.js';

/** A padded batch; arrays are flat `[batchSize, seqLength]`, row-major. */
export interface Batch {
  inputIds: Int32Array;
  /** Next-token labels; the padding id where there is no next token. */
  labels: Int32Array;
  /** 1 where the prediction at this position counts in the loss. */
  lossMask: Float32Array;
  /** 1 at real tokens, 0 at padding. */
  attentionMask: Int32Array;
  batchSize: number;
  seqLength: number;
  /** Number of positions with `lossMask` 1. */
  tokenCount: number;
  /** Unpadded length of each row. */
  lengths: number[];
}

/** The part of a sample that batching reads. */
export type BatchSample = Pick<DatasetSample, 'inputIds' | 'targetMask'>;

/** Options of {@link makeBatch}. */
export interface MakeBatchOptions {
  /** Id written at padding positions of `inputIds` and `labels`. */
  padTokenId: number;
  /**
   * Rounds `seqLength` up to a multiple of this. 8 helps GPU kernels; on the CPU and WASM
   * backends extra padding only adds work.
   * @default 1
   */
  padToMultipleOf?: number;
}

/** Samples plus the padding id to use when none is given; a {@link Dataset} fits. */
export interface BatchSource {
  samples: readonly BatchSample[];
  padTokenId?: number;
}

/** Position of a {@link BatchIterator}: enough to reproduce every later batch. */
export interface BatchIteratorState {
  /** Epoch of the next batch, from 0. */
  epoch: number;
  /** Batches of that epoch already returned. */
  index: number;
  /** Run seed that the batch order of each epoch derives from. */
  seed: number;
}

/** Options of {@link BatchIterator}. */
export interface BatchIteratorOptions {
  batchSize: number;
  /** Seed of the shuffle, an integer in [0, 2^32). @default 0 */
  seed?: number;
  /** Reorders samples each epoch. @default true */
  shuffle?: boolean;
  /**
   * Groups samples of similar token length into the same batch to reduce padding: samples are
   * shuffled, stably sorted by length (so equal lengths stay in shuffled order), cut into batches,
   * and the batch order is shuffled. Without `shuffle`, batches come shortest first.
   * @default false
   */
  sortByLength?: boolean;
  /**
   * Leaves out the last batch of an epoch when it has fewer than `batchSize` samples. With
   * `sortByLength` the partial batch is the one holding the longest samples.
   * @default false
   */
  dropLast?: boolean;
  /** Padding id; defaults to the source's `padTokenId`. */
  padTokenId?: number;
  /** @default 1 */
  padToMultipleOf?: number;
  /** Position to start from, as returned by {@link BatchIterator.state}. */
  state?: BatchIteratorState;
}

/** Options of {@link evalBatches}. */
export interface EvalBatchesOptions {
  batchSize: number;
  /** Uses only the first batches; all when undefined. */
  maxBatches?: number;
  /** Padding id; defaults to the source's `padTokenId`. */
  padTokenId?: number;
  /** @default 1 */
  padToMultipleOf?: number;
}

/**
 * Pads samples on the right into one batch and shifts the labels by one position.
 *
 * Throws `ArgumentError` (code `BATCH_INVALID`) for an empty sample list, an empty sample, a
 * `targetMask` whose length differs from `inputIds`, or an invalid padding option.
 */
export function makeBatch(samples: readonly BatchSample[], options: MakeBatchOptions): Batch {
  const padTokenId = options.padTokenId;
  const multiple = options.padToMultipleOf ?? 1;
  requireInteger('padTokenId', padTokenId, 0);
  requireInteger('padToMultipleOf', multiple, 1);
  if (samples.length === 0) throw new ArgumentError('BATCH_INVALID', 'Cannot make a batch of zero samples.');

  let longest = 0;
  samples.forEach((sample, row) => {
    if (sample.inputIds.length === 0 || sample.targetMask.length !== sample.inputIds.length) {
      throw new ArgumentError(
        'BATCH_INVALID',
        `Invalid sample ${row}: ${sample.inputIds.length} input ids and ${sample.targetMask.length} mask entries; ` +
          'expected a non-empty sample with one mask entry per id.',
        { details: { row, ids: sample.inputIds.length, mask: sample.targetMask.length } },
      );
    }
    longest = Math.max(longest, sample.inputIds.length);
  });

  const batchSize = samples.length;
  const seqLength = Math.ceil(longest / multiple) * multiple;
  const inputIds = new Int32Array(batchSize * seqLength).fill(padTokenId);
  const labels = new Int32Array(batchSize * seqLength).fill(padTokenId);
  const lossMask = new Float32Array(batchSize * seqLength);
  const attentionMask = new Int32Array(batchSize * seqLength);
  let tokenCount = 0;

  samples.forEach((sample, row) => {
    const offset = row * seqLength;
    const length = sample.inputIds.length;
    for (let t = 0; t < length; t += 1) {
      inputIds[offset + t] = sample.inputIds[t]!;
      attentionMask[offset + t] = 1;
      if (t + 1 < length) {
        labels[offset + t] = sample.inputIds[t + 1]!;
        const counts = sample.targetMask[t + 1] === 1 ? 1 : 0;
        lossMask[offset + t] = counts;
        tokenCount += counts;
      }
    }
  });

  return {
    inputIds,
    labels,
    lossMask,
    attentionMask,
    batchSize,
    seqLength,
    tokenCount,
    lengths: samples.map((sample) => sample.inputIds.length),
  };
}

/**
 * An endless sequence of training batches over a dataset, epoch after epoch, reshuffled each
 * epoch. The order of epoch e depends only on `(seed, e)`, so {@link BatchIterator.restore} with a
 * saved {@link BatchIterator.state} continues with exactly the batches an uninterrupted run would
 * have produced.
 */
export class BatchIterator implements Iterator<Batch>, Iterable<Batch> {
  /** Batches in one epoch. */
  readonly batchesPerEpoch: number;

  private readonly samples: readonly BatchSample[];
  private readonly batchSize: number;
  private readonly shuffle: boolean;
  private readonly sortByLength: boolean;
  private readonly dropLast: boolean;
  private readonly padTokenId: number;
  private readonly padToMultipleOf: number;
  private seed: number;
  private epoch = 0;
  private index = 0;
  /** Sample indices of each batch of `epoch`, computed when the epoch starts. */
  private order: number[][] = [];
  private orderEpoch = -1;

  constructor(source: BatchSource, options: BatchIteratorOptions) {
    this.samples = source.samples;
    this.batchSize = options.batchSize;
    this.shuffle = options.shuffle ?? true;
    this.sortByLength = options.sortByLength ?? false;
    this.dropLast = options.dropLast ?? false;
    this.padTokenId = resolvePadTokenId(options.padTokenId, source);
    this.padToMultipleOf = options.padToMultipleOf ?? 1;
    this.seed = options.seed ?? 0;

    requireInteger('batchSize', this.batchSize, 1);
    requireInteger('padToMultipleOf', this.padToMultipleOf, 1);
    requireSeed(this.seed);
    const count = this.samples.length;
    this.batchesPerEpoch = this.dropLast ? Math.floor(count / this.batchSize) : Math.ceil(count / this.batchSize);
    if (this.batchesPerEpoch === 0) {
      throw new ArgumentError(
        'BATCH_SIZE_TOO_LARGE',
        `The dataset has ${count} sample(s), too few for one batch of ${this.batchSize}` +
          `${this.dropLast ? ' with dropLast' : ''}; add samples, lower batchSize or turn dropLast off.`,
        { details: { samples: count, batchSize: this.batchSize } },
      );
    }
    if (options.state !== undefined) this.restore(options.state);
  }

  /** Position of the next batch. */
  state(): BatchIteratorState {
    return { epoch: this.epoch, index: this.index, seed: this.seed };
  }

  /** Moves to a saved position, seed included. */
  restore(state: BatchIteratorState): void {
    requireInteger('state.epoch', state.epoch, 0);
    requireInteger('state.index', state.index, 0);
    requireSeed(state.seed);
    if (state.index > this.batchesPerEpoch) {
      throw new ArgumentError(
        'BATCH_STATE_INVALID',
        `Invalid iterator state: index ${state.index} is past the ${this.batchesPerEpoch} batches of an epoch; ` +
          'the state belongs to a different dataset or batch size.',
        { details: { ...state, batchesPerEpoch: this.batchesPerEpoch } },
      );
    }
    this.seed = state.seed;
    this.epoch = state.epoch;
    this.index = state.index;
    this.orderEpoch = -1;
    this.normalisePosition();
  }

  /** Returns the next batch; the sequence never ends. */
  next(): IteratorResult<Batch> {
    return { done: false, value: this.nextBatch() };
  }

  /** Returns the next batch. */
  nextBatch(): Batch {
    const indices = this.batchIndices(this.epoch)[this.index]!;
    const batch = makeBatch(
      indices.map((index) => this.samples[index]!),
      { padTokenId: this.padTokenId, padToMultipleOf: this.padToMultipleOf },
    );
    this.index += 1;
    this.normalisePosition();
    return batch;
  }

  /** Sample indices of every batch of an epoch, in order. */
  batchIndices(epoch: number): number[][] {
    if (this.orderEpoch === epoch) return this.order;

    const random = mulberry32(epochSeed(this.seed, epoch));
    const indices = Array.from({ length: this.samples.length }, (_, index) => index);
    if (this.shuffle) shuffleInPlace(indices, random);
    if (this.sortByLength) {
      // Array.prototype.sort is stable, so equal lengths keep their shuffled order.
      indices.sort((a, b) => this.samples[a]!.inputIds.length - this.samples[b]!.inputIds.length);
    }

    const batches: number[][] = [];
    for (let start = 0; start < indices.length; start += this.batchSize) {
      batches.push(indices.slice(start, start + this.batchSize));
    }
    if (this.dropLast && batches.length > 0 && batches[batches.length - 1]!.length < this.batchSize) batches.pop();
    if (this.sortByLength && this.shuffle) shuffleInPlace(batches, random);

    this.order = batches;
    this.orderEpoch = epoch;
    return batches;
  }

  /** Returns the iterator itself, so a `for...of` loop continues from the current position. */
  [Symbol.iterator](): BatchIterator {
    return this;
  }

  private normalisePosition(): void {
    if (this.index >= this.batchesPerEpoch) {
      this.epoch += 1;
      this.index = 0;
    }
  }
}

/**
 * Returns evaluation batches in dataset order, the same batches on every call. The last batch
 * may be partial. With `maxBatches`, only the first samples of the dataset are used.
 */
export function evalBatches(source: BatchSource, options: EvalBatchesOptions): Batch[] {
  const padTokenId = resolvePadTokenId(options.padTokenId, source);
  requireInteger('batchSize', options.batchSize, 1);
  if (options.maxBatches !== undefined) requireInteger('maxBatches', options.maxBatches, 1);

  const total = Math.ceil(source.samples.length / options.batchSize);
  const count = Math.min(total, options.maxBatches ?? total);
  const batches: Batch[] = [];
  for (let index = 0; index < count; index += 1) {
    const start = index * options.batchSize;
    batches.push(
      makeBatch(source.samples.slice(start, start + options.batchSize), {
        padTokenId,
        padToMultipleOf: options.padToMultipleOf,
      }),
    );
  }
  return batches;
}

function resolvePadTokenId(explicit: number | undefined, source: BatchSource): number {
  const padTokenId = explicit ?? source.padTokenId;
  if (padTokenId === undefined) {
    throw new ArgumentError('BATCH_INVALID', 'No padding id: pass padTokenId, or a dataset from loadDataset, which carries one.');
  }
  requireInteger('padTokenId', padTokenId, 0);
  return padTokenId;
}

function requireInteger(name: string, value: number, minimum: number): void {
  if (!Number.isInteger(value) || value < minimum) {
    throw new ArgumentError('BATCH_INVALID', `Invalid ${name} ${String(value)}; expected an integer of at least ${minimum}.`, {
      details: { [name]: value },
    });
  }
}

function requireSeed(seed: number): void {
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) {
    throw new ArgumentError('BATCH_INVALID', `Invalid seed ${String(seed)}; expected an integer in [0, 2^32).`, {
      details: { seed },
    });
  }
}
