/**
 * Seeds derived from the run seed, so that every random draw of a step depends only on the run
 * seed and the step, and a resumed run draws exactly what an uninterrupted one would.
 */

/**
 * Returns the LoRA dropout seed of one micro-batch: a 32-bit hash of the run seed, the training
 * step and the micro-batch index. The mixing is the finaliser of MurmurHash3 (fmix32), applied
 * after each input is folded in.
 */
export function dropoutSeed(runSeed: number, step: number, microBatch: number): number {
  let hash = fmix32(runSeed >>> 0);
  hash = fmix32((hash ^ Math.imul(step >>> 0, 0x9e3779b1)) >>> 0);
  hash = fmix32((hash ^ Math.imul(microBatch >>> 0, 0x85ebca77)) >>> 0);
  return hash;
}

function fmix32(value: number): number {
  let h = value >>> 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b) >>> 0;
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35) >>> 0;
  h ^= h >>> 16;
  return h >>> 0;
}
