import { describe, expect, it } from 'vitest';

import {
  ArgumentError,
  type Batch,
  BatchIterator,
  type BatchSample,
  combineLossSums,
  evalBatches,
  makeBatch,
} from '../src/index.js';
import { epochSeed, mulberry32, shuffleInPlace } from '../src/data/random.js';

const PAD = 0;

/** Builds a sample whose ids all equal 100 + its index, so each batch row identifies its sample. */
function sampleOfLength(index: number, length: number): BatchSample {
  return { inputIds: Array.from({ length }, () => 100 + index), targetMask: Array.from({ length }, (_, t) => (t === 0 ? 0 : 1)) };
}

/** Samples 0..count-1 with lengths that differ from their order. */
function samples(count: number): BatchSample[] {
  return Array.from({ length: count }, (_, index) => sampleOfLength(index, 2 + ((index * 7) % 11)));
}

/** Index of the sample in each row of a batch, read from the first id. */
function rowSamples(batch: Batch): number[] {
  return Array.from({ length: batch.batchSize }, (_, row) => batch.inputIds[row * batch.seqLength]! - 100);
}

describe('makeBatch', () => {
  it('counts exactly one prediction for one target', () => {
    // Tokens [10, 11, 12, 13] with only token 12 as target: position 1 (after 10, 11) predicts 12.
    const batch = makeBatch([{ inputIds: [10, 11, 12, 13], targetMask: [0, 0, 1, 0] }], { padTokenId: PAD });
    expect(Array.from(batch.labels)).toEqual([11, 12, 13, PAD]);
    expect(Array.from(batch.lossMask)).toEqual([0, 1, 0, 0]);
    expect(batch.tokenCount).toBe(1);
  });

  it('pads on the right and masks padding', () => {
    const batch = makeBatch(
      [
        { inputIds: [5, 6], targetMask: [0, 1] },
        { inputIds: [7, 8, 9, 10], targetMask: [0, 1, 1, 1] },
      ],
      { padTokenId: 3 },
    );
    expect(batch.batchSize).toBe(2);
    expect(batch.seqLength).toBe(4);
    expect(Array.from(batch.inputIds)).toEqual([5, 6, 3, 3, 7, 8, 9, 10]);
    expect(Array.from(batch.labels)).toEqual([6, 3, 3, 3, 8, 9, 10, 3]);
    expect(Array.from(batch.lossMask)).toEqual([1, 0, 0, 0, 1, 1, 1, 0]);
    expect(Array.from(batch.attentionMask)).toEqual([1, 1, 0, 0, 1, 1, 1, 1]);
    expect(batch.lengths).toEqual([2, 4]);
    expect(batch.tokenCount).toBe(4);
  });

  it('counts a target equal to the padding id', () => {
    // EOS = padding = 2: the EOS that ends row 0 is a label that counts, the padding after it is not.
    const batch = makeBatch(
      [
        { inputIds: [9, 4, 2], targetMask: [0, 1, 1] },
        { inputIds: [9, 4, 4, 4, 2], targetMask: [0, 1, 1, 1, 1] },
      ],
      { padTokenId: 2 },
    );
    expect(Array.from(batch.labels.slice(0, 5))).toEqual([4, 2, 2, 2, 2]);
    expect(Array.from(batch.lossMask.slice(0, 5))).toEqual([1, 1, 0, 0, 0]);
    expect(batch.tokenCount).toBe(6);
  });

  it('rounds the length up to a multiple', () => {
    const batch = makeBatch([{ inputIds: [1, 2, 3, 4, 5], targetMask: [0, 1, 1, 1, 1] }], { padTokenId: PAD, padToMultipleOf: 8 });
    expect(batch.seqLength).toBe(8);
    expect(Array.from(batch.lossMask)).toEqual([1, 1, 1, 1, 0, 0, 0, 0]);
    expect(Array.from(batch.attentionMask)).toEqual([1, 1, 1, 1, 1, 0, 0, 0]);
  });

  it('gives a zero token count for a fully masked sample', () => {
    const batch = makeBatch([{ inputIds: [1, 2, 3], targetMask: [0, 0, 0] }], { padTokenId: PAD });
    expect(batch.tokenCount).toBe(0);
    expect(combineLossSums([{ lossSum: 0, tokenCount: batch.tokenCount }])).toBe(0);
  });

  it('rejects malformed samples', () => {
    expect(() => makeBatch([], { padTokenId: PAD })).toThrow(ArgumentError);
    expect(() => makeBatch([{ inputIds: [], targetMask: [] }], { padTokenId: PAD })).toThrow(/sample 0/);
    expect(() => makeBatch([{ inputIds: [1, 2], targetMask: [0] }], { padTokenId: PAD })).toThrow(/one mask entry per id/);
    expect(() => makeBatch([{ inputIds: [1], targetMask: [0] }], { padTokenId: -1 })).toThrow(/padTokenId/);
    expect(() => makeBatch([{ inputIds: [1], targetMask: [0] }], { padTokenId: PAD, padToMultipleOf: 0 })).toThrow(/padToMultipleOf/);
  });
});

describe('combineLossSums', () => {
  it('weights batches by token count', () => {
    // (1 * 2.0 + 3 * 1.0) / (1 + 3) = 5 / 4 = 1.25; the mean of batch means would be (2.0 + 1.0) / 2 = 1.5.
    expect(combineLossSums([
      { lossSum: 2.0, tokenCount: 1 },
      { lossSum: 3.0, tokenCount: 3 },
    ])).toBe(1.25);
  });

  it('returns zero for no tokens', () => {
    expect(combineLossSums([])).toBe(0);
    expect(combineLossSums([{ lossSum: 0, tokenCount: 0 }])).toBe(0);
  });

  it('rejects invalid parts', () => {
    expect(() => combineLossSums([{ lossSum: Number.NaN, tokenCount: 1 }])).toThrow(ArgumentError);
    expect(() => combineLossSums([{ lossSum: 1, tokenCount: -1 }])).toThrow(/part 0/);
    expect(() => combineLossSums([{ lossSum: 1, tokenCount: 1.5 }])).toThrow(/tokenCount 1.5/);
  });
});

describe('random helpers', () => {
  it('matches the reference mulberry32', () => {
    // Tommy Ettinger's published mulberry32, written as it is usually quoted, with its state left
    // to grow past 32 bits instead of being wrapped.
    function referenceMulberry32(seed: number): () => number {
      let a = seed;
      return () => {
        let t = (a += 0x6d2b79f5);
        t = Math.imul(t ^ (t >>> 15), t | 1);
        t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
        return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
      };
    }
    for (const seed of [0, 1, 42, 0xffffffff]) {
      const random = mulberry32(seed);
      const reference = referenceMulberry32(seed);
      for (let draw = 0; draw < 1000; draw += 1) expect(random()).toBe(reference());
    }
    // The reference's first draw for seed 1, times 2^32.
    expect(mulberry32(1)() * 4294967296).toBe(2693262067);
  });

  it('shuffles into a permutation', () => {
    const items = Array.from({ length: 50 }, (_, index) => index);
    const shuffled = shuffleInPlace([...items], mulberry32(7));
    expect([...shuffled].sort((a, b) => a - b)).toEqual(items);
    expect(shuffled).not.toEqual(items);
  });

  it('gives each epoch its own seed', () => {
    const seeds = new Set(Array.from({ length: 100 }, (_, epoch) => epochSeed(42, epoch)));
    expect(seeds.size).toBe(100);
  });
});

describe('BatchIterator', () => {
  const data = { samples: samples(10), padTokenId: PAD };

  it('covers every sample once per epoch', () => {
    const iterator = new BatchIterator(data, { batchSize: 3, seed: 5 });
    expect(iterator.batchesPerEpoch).toBe(4);
    const seen = [0, 1, 2, 3].flatMap(() => rowSamples(iterator.nextBatch()));
    expect([...seen].sort((a, b) => a - b)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(iterator.state()).toEqual({ epoch: 1, index: 0, seed: 5 });
  });

  it('keeps the last partial batch', () => {
    const iterator = new BatchIterator(data, { batchSize: 4, shuffle: false });
    expect([0, 1, 2].map(() => rowSamples(iterator.nextBatch()))).toEqual([
      [0, 1, 2, 3],
      [4, 5, 6, 7],
      [8, 9],
    ]);
  });

  it('drops the last partial batch on request', () => {
    const iterator = new BatchIterator(data, { batchSize: 4, shuffle: false, dropLast: true });
    expect(iterator.batchesPerEpoch).toBe(2);
    expect([0, 1, 2].map(() => rowSamples(iterator.nextBatch()))).toEqual([
      [0, 1, 2, 3],
      [4, 5, 6, 7],
      [0, 1, 2, 3],
    ]);
  });

  it('reshuffles each epoch', () => {
    const iterator = new BatchIterator(data, { batchSize: 10, seed: 3 });
    const first = rowSamples(iterator.nextBatch());
    const second = rowSamples(iterator.nextBatch());
    expect([...first].sort((a, b) => a - b)).toEqual([...second].sort((a, b) => a - b));
    expect(first).not.toEqual(second);
  });

  it('depends on the seed only', () => {
    const order = (seed: number): number[][] => {
      const iterator = new BatchIterator(data, { batchSize: 3, seed });
      return Array.from({ length: 8 }, () => rowSamples(iterator.nextBatch()));
    };
    expect(order(11)).toEqual(order(11));
    expect(order(11)).not.toEqual(order(12));
  });

  it('sorts batches by token length', () => {
    const iterator = new BatchIterator(data, { batchSize: 3, seed: 9, sortByLength: true });
    const lengths = data.samples.map((sample) => sample.inputIds.length);
    const sortedLengths = [...lengths].sort((a, b) => a - b);
    const batches = Array.from({ length: iterator.batchesPerEpoch }, () => iterator.nextBatch());

    // Each batch contains a run of consecutive lengths from the sorted list, so padding is minimal.
    const batchLengths = batches.map((batch) => [...batch.lengths].sort((a, b) => a - b));
    const runs = [...batchLengths].sort((a, b) => a[0]! - b[0]! || a.length - b.length);
    expect(runs.flat()).toEqual(sortedLengths);
    batchLengths.forEach((lengthsInBatch) => {
      expect(Math.max(...lengthsInBatch)).toBe(batches[batchLengths.indexOf(lengthsInBatch)]!.seqLength);
    });
  });

  it('gives shortest first when sorting without shuffle', () => {
    const iterator = new BatchIterator(data, { batchSize: 4, shuffle: false, sortByLength: true });
    const lengths = [0, 1, 2].flatMap(() => iterator.nextBatch().lengths);
    expect(lengths).toEqual([...lengths].sort((a, b) => a - b));
  });

  it('resumes with the same batches', () => {
    // Seven batches straight against three, a save of the position, a fresh iterator, and four more.
    const options = { batchSize: 3, seed: 1234, sortByLength: true };
    const straight = new BatchIterator(data, options);
    const expected = Array.from({ length: 7 }, () => straight.nextBatch());

    const first = new BatchIterator(data, options);
    const resumed = Array.from({ length: 3 }, () => first.nextBatch());
    const saved = JSON.parse(JSON.stringify(first.state())) as ReturnType<BatchIterator['state']>;
    expect(saved).toEqual({ epoch: 0, index: 3, seed: 1234 });

    const second = new BatchIterator(data, { ...options, seed: 1, state: saved });
    resumed.push(...Array.from({ length: 4 }, () => second.nextBatch()));
    expect(resumed).toEqual(expected);

    const third = new BatchIterator(data, { ...options, seed: 99 });
    third.restore(saved);
    third.nextBatch();
    expect(third.nextBatch()).toEqual(expected[4]);
  });

  it('rejects a state from another dataset', () => {
    const iterator = new BatchIterator(data, { batchSize: 3 });
    expect(() => iterator.restore({ epoch: 0, index: 9, seed: 0 })).toThrow(expect.objectContaining({ code: 'BATCH_STATE_INVALID' }));
    expect(() => iterator.restore({ epoch: -1, index: 0, seed: 0 })).toThrow(/state.epoch/);
    expect(() => iterator.restore({ epoch: 0, index: 0, seed: 2 ** 32 })).toThrow(/seed/);
  });

  it('rejects a batch larger than the dataset with dropLast', () => {
    expect(() => new BatchIterator(data, { batchSize: 11, dropLast: true })).toThrow(
      expect.objectContaining({ code: 'BATCH_SIZE_TOO_LARGE' }),
    );
    expect(new BatchIterator(data, { batchSize: 11 }).batchesPerEpoch).toBe(1);
  });

  it('iterates with for-of', () => {
    const iterator = new BatchIterator(data, { batchSize: 5 });
    let count = 0;
    for (const batch of iterator) {
      expect(batch.batchSize).toBe(5);
      count += 1;
      if (count === 5) break;
    }
    expect(iterator.state()).toEqual({ epoch: 2, index: 1, seed: 0 });
  });
});

describe('evalBatches', () => {
  const data = { samples: samples(7), padTokenId: PAD };

  it('returns the same batches in order', () => {
    const first = evalBatches(data, { batchSize: 3 });
    expect(first.map(rowSamples)).toEqual([[0, 1, 2], [3, 4, 5], [6]]);
    expect(evalBatches(data, { batchSize: 3 })).toEqual(first);
  });

  it('stops at maxBatches', () => {
    expect(evalBatches(data, { batchSize: 3, maxBatches: 2 }).map(rowSamples)).toEqual([
      [0, 1, 2],
      [3, 4, 5],
    ]);
  });

  it('needs a padding id', () => {
    expect(() => evalBatches({ samples: data.samples }, { batchSize: 2 })).toThrow(/padTokenId/);
  });
});
