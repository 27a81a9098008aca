/**
 * Learning-rate schedules of the trainer.
 *
 * Steps are optimizer steps counted from 1, as everywhere in the library. A schedule has a linear
 * warmup over the first `warmupSteps` steps, then a constant, cosine or linear phase that lasts
 * until `totalSteps`. The warmup's first step already trains: step s of warmup uses
 * `learningRate * s / warmupSteps`, so with a base rate of 1e-3 and 4 warmup steps the rates are
 * 2.5e-4, 5e-4, 7.5e-4 and 1e-3.
 */
import { ArgumentError } from '../errors.js';

/** The shape of the phase after warmup. */
export type LearningRateScheduleName = 'constant' | 'cosine' | 'linear';

/** Options of {@link learningRateAt} and {@link createLearningRateSchedule}. */
export interface LearningRateScheduleOptions {
  /** Shape of the phase after warmup. */
  schedule: LearningRateScheduleName;
  /** Peak learning rate, reached at the last warmup step (or at step 1 without warmup). */
  learningRate: number;
  /** Number of linear-warmup steps. @default 0 */
  warmupSteps?: number;
  /** Last step of the schedule; cosine and linear decay over the steps after warmup up to this one. */
  totalSteps: number;
  /** Floor of the cosine and linear decay. @default 0 */
  minLearningRate?: number;
}

/** A learning-rate schedule: the rate to apply at an optimizer step (from 1). */
export type LearningRateSchedule = (step: number) => number;

/**
 * Returns the learning rate of optimizer step `step` (from 1 to `totalSteps`).
 *
 * The decay phase counts its own steps from 0: the first step after warmup uses the full rate, and
 * the decay never reaches `minLearningRate` inside the schedule, so the last step still trains.
 * With D = totalSteps - warmupSteps decay steps and k = step - warmupSteps - 1:
 * cosine gives `min + (lr - min) * (1 + cos(pi * k / D)) / 2`, linear gives
 * `min + (lr - min) * (1 - k / D)`.
 */
export function learningRateAt(step: number, options: LearningRateScheduleOptions): number {
  const { schedule, learningRate, totalSteps } = options;
  const warmupSteps = options.warmupSteps ?? 0;
  const minLearningRate = options.minLearningRate ?? 0;

  if (!Number.isInteger(step) || step < 1 || step > totalSteps) {
    throw new ArgumentError(
      'LR_SCHEDULE_STEP_OUT_OF_RANGE',
      `Learning-rate schedule step ${step} is invalid: it must be an integer from 1 to totalSteps (${totalSteps}).`,
      { details: { step, totalSteps } },
    );
  }

  // 1) Linear warmup: step s of warmupSteps gets s / warmupSteps of the peak rate.
  if (step <= warmupSteps) {
    return (learningRate * step) / warmupSteps;
  }

  // 2) Constant after warmup.
  if (schedule === 'constant') {
    return learningRate;
  }

  // 3) Decay from the peak towards minLearningRate over the remaining steps.
  const decaySteps = totalSteps - warmupSteps;
  const decayRatio = (step - warmupSteps - 1) / decaySteps;
  if (!(decayRatio >= 0 && decayRatio < 1)) {
    throw new ArgumentError(
      'LR_SCHEDULE_STEP_OUT_OF_RANGE',
      `Learning-rate decay ratio ${decayRatio} at step ${step} is outside [0, 1).`,
      { details: { step, warmupSteps, totalSteps } },
    );
  }

  const coefficient = schedule === 'cosine' ? 0.5 * (1 + Math.cos(Math.PI * decayRatio)) : 1 - decayRatio;
  return minLearningRate + coefficient * (learningRate - minLearningRate);
}

/** Validates the options once and returns the schedule as a function of the step. */
export function createLearningRateSchedule(options: LearningRateScheduleOptions): LearningRateSchedule {
  validateScheduleOptions(options);
  const frozen = { ...options };
  return (step: number) => learningRateAt(step, frozen);
}

function validateScheduleOptions(options: LearningRateScheduleOptions): void {
  const { schedule, learningRate, totalSteps } = options;
  const warmupSteps = options.warmupSteps ?? 0;
  const minLearningRate = options.minLearningRate ?? 0;

  const problems: string[] = [];
  if (schedule !== 'constant' && schedule !== 'cosine' && schedule !== 'linear') {
    problems.push(`schedule is ${JSON.stringify(schedule)}; expected constant, cosine or linear`);
  }
  if (!Number.isFinite(learningRate) || learningRate < 0) {
    problems.push(`learningRate is ${learningRate}; expected a finite number >= 0`);
  }
  if (!Number.isInteger(totalSteps) || totalSteps < 1) {
    problems.push(`totalSteps is ${totalSteps}; expected an integer >= 1`);
  }
  if (!Number.isInteger(warmupSteps) || warmupSteps < 0) {
    problems.push(`warmupSteps is ${warmupSteps}; expected an integer >= 0`);
  } else if (Number.isInteger(totalSteps) && warmupSteps > totalSteps) {
    problems.push(`warmupSteps (${warmupSteps}) is greater than totalSteps (${totalSteps})`);
  }
  if (!Number.isFinite(minLearningRate) || minLearningRate < 0 || minLearningRate > learningRate) {
    problems.push(`minLearningRate is ${minLearningRate}; expected a finite number from 0 to learningRate (${learningRate})`);
  }

  if (problems.length > 0) {
    throw new ArgumentError(
      'LR_SCHEDULE_INVALID_OPTION',
      `Invalid learning-rate schedule options:\n${problems.map((problem) => `- ${problem}`).join('\n')}`,
      { details: { options } },
    );
  }
}
