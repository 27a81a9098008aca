import { describe, expect, it } from 'vitest';

import { ArgumentError } from '../src/errors.js';
import { createLearningRateSchedule, learningRateAt } from '../src/trainer/lr-schedule.js';

describe('learning-rate schedule', () => {
  it('warmup starts above zero', () => {
    const schedule = createLearningRateSchedule({ schedule: 'constant', learningRate: 1e-3, warmupSteps: 4, totalSteps: 10 });

    // Step s of 4 warmup steps uses 1e-3 * s / 4: 2.5e-4, 5e-4, 7.5e-4, 1e-3; then constant 1e-3.
    const expected = [2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3];
    expected.forEach((rate, index) => {
      expect(schedule(index + 1)).toBeCloseTo(rate, 15);
    });
  });

  it('constant without warmup', () => {
    const schedule = createLearningRateSchedule({ schedule: 'constant', learningRate: 2e-5, totalSteps: 3 });
    expect([schedule(1), schedule(2), schedule(3)]).toEqual([2e-5, 2e-5, 2e-5]);
  });

  it('cosine decays after warmup', () => {
    const schedule = createLearningRateSchedule({ schedule: 'cosine', learningRate: 1e-3, warmupSteps: 4, totalSteps: 12 });

    // D = 12 - 4 = 8 decay steps, k = step - 5, rate = 1e-3 * (1 + cos(pi * k / 8)) / 2.
    // step 5: k=0 -> 1e-3
    expect(schedule(5)).toBeCloseTo(1e-3, 15);
    // step 6: k=1 -> (1 + 0.92387953251) / 2 = 0.96193976625 -> 9.6193976625e-4
    expect(schedule(6)).toBeCloseTo(9.6193976625e-4, 13);
    // step 9: k=4 -> (1 + cos(pi/2)) / 2 = 0.5 -> 5e-4
    expect(schedule(9)).toBeCloseTo(5e-4, 15);
    // step 12: k=7 -> (1 - 0.92387953251) / 2 = 0.03806023375 -> 3.806023375e-5, still above zero
    expect(schedule(12)).toBeCloseTo(3.806023375e-5, 13);
  });

  it('linear decays after warmup', () => {
    const schedule = createLearningRateSchedule({ schedule: 'linear', learningRate: 1e-3, warmupSteps: 4, totalSteps: 12 });

    // rate = 1e-3 * (1 - k / 8) with k = step - 5: step 5 -> 1e-3, step 9 -> 5e-4, step 12 -> 1.25e-4.
    expect(schedule(4)).toBeCloseTo(1e-3, 15);
    expect(schedule(5)).toBeCloseTo(1e-3, 15);
    expect(schedule(9)).toBeCloseTo(5e-4, 15);
    expect(schedule(12)).toBeCloseTo(1.25e-4, 15);
  });

  it('decay respects the floor', () => {
    // min 1e-4: step 9 of the linear case -> 1e-4 + 0.5 * (1e-3 - 1e-4) = 5.5e-4.
    const rate = learningRateAt(9, { schedule: 'linear', learningRate: 1e-3, warmupSteps: 4, totalSteps: 12, minLearningRate: 1e-4 });
    expect(rate).toBeCloseTo(5.5e-4, 15);
  });

  it('rejects steps outside the schedule', () => {
    const schedule = createLearningRateSchedule({ schedule: 'cosine', learningRate: 1e-3, totalSteps: 12 });
    for (const step of [0, 13, 1.5, Number.NaN]) {
      expect(() => schedule(step)).toThrow(ArgumentError);
    }
    expect(() => schedule(0)).toThrow(/step 0 is invalid: it must be an integer from 1 to totalSteps \(12\)/);
  });

  it('rejects invalid options', () => {
    expect(() => createLearningRateSchedule({ schedule: 'cosine', learningRate: 1e-3, warmupSteps: 20, totalSteps: 12 })).toThrow(
      /warmupSteps \(20\) is greater than totalSteps \(12\)/,
    );
    expect(() => createLearningRateSchedule({ schedule: 'cosine', learningRate: -1, totalSteps: 12 })).toThrow(
      /learningRate is -1; expected a finite number >= 0/,
    );
    expect(() =>
      createLearningRateSchedule({ schedule: 'step' as unknown as 'cosine', learningRate: 1e-3, totalSteps: 12 }),
    ).toThrow(/schedule is "step"; expected constant, cosine or linear/);
  });
});
