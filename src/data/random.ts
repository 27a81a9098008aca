/**
 * A small seeded pseudo-random generator, so that batch order is the same on every platform and
 * can be recomputed from `(seed, epoch)` alone when training resumes.
 */

/**
 * Mulberry32 (Tommy Ettinger, public domain): 32 bits of state, period 2^32, uniform floats in
 * [0, 1). Good enough for shuffling and not for cryptography.
 */
export function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let mixed = state;
    mixed = Math.imul(mixed ^ (mixed >>> 15), mixed | 1);
    mixed ^= mixed + Math.imul(mixed ^ (mixed >>> 7), mixed | 61);
    return ((mixed ^ (mixed >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Derives the generator seed of one epoch from the run seed, with the MurmurHash3 32-bit
 * finaliser applied to `seed + epoch * 0x9e3779b9`, so neighbouring epochs get unrelated orders.
 */
export function epochSeed(seed: number, epoch: number): number {
  let hash = (seed + Math.imul(epoch, 0x9e3779b9)) >>> 0;
  hash = Math.imul(hash ^ (hash >>> 16), 0x85ebca6b);
  hash = Math.imul(hash ^ (hash >>> 13), 0xc2b2ae35);
  return (hash ^ (hash >>> 16)) >>> 0;
}

/** Shuffles `items` in place with the Fisher-Yates algorithm and returns it. */
export function shuffleInPlace<T>(items: T[], random: () => number): T[] {
  for (let i = items.length - 1; i > 0; i -= 1) {
    const j = Math.floor(random() * (i + 1));
    const swapped = items[i]!;
    items[i] = items[j]!;
    items[j] = swapped;
  }
  return items;
}
