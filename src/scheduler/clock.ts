/**
 * The step clock. Steps count optimizer steps (not micro-batches) from 1, and tier k is active at
 * step s when `s % frequencies[k] === 0`, so a tier of frequency 1 is active at every step.
 */

/** Tells whether a tier of the given update frequency is active at optimizer step `step` (from 1). */
export function isTierActive(step: number, frequency: number): boolean {
  return step >= 1 && step % frequency === 0;
}

/** Returns the indices of the tiers active at optimizer step `step` (from 1), ascending. */
export function activeTiers(step: number, frequencies: readonly number[]): number[] {
  const active: number[] = [];
  frequencies.forEach((frequency, tier) => {
    if (isTierActive(step, frequency)) {
      active.push(tier);
    }
  });
  return active;
}
