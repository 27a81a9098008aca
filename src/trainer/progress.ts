/**
 * The counters and early-stopping state of a run, and their conversion to and from the JSON
 * files of a checkpoint folder.
 */
import type { NestedLearningConfig } from '../config/index.js';
import type { BatchIteratorState } from '../data/index.js';
import type { CalibrationResult } from './calibration.js';
import type { CheckpointKind, DoneReason } from './events.js';
import type { TierStatsRecord } from './metrics.js';
import { CHECKPOINT_FORMAT_VERSION, type CheckpointMetadata, type TrainerState } from './state.js';
import { LIBRARY_VERSION } from './version.js';

/** Counters and early-stopping state of a run. */
export interface TrainingProgress {
  /** Training steps taken, skipped steps included. */
  step: number;
  trainedTokens: number;
  /** Training wall time in seconds, summed over sessions. */
  elapsedTime: number;
  skippedSteps: number;
  consecutiveNonFinite: number;
  bestValLoss: number | undefined;
  bestStep: number | undefined;
  evaluationsWithoutImprovement: number;
  /** Retain-set loss before training. */
  retainBaseline: number | undefined;
}

/** Returns the progress of a run that has not taken a step. */
export function freshProgress(): TrainingProgress {
  return {
    step: 0,
    trainedTokens: 0,
    elapsedTime: 0,
    skippedSteps: 0,
    consecutiveNonFinite: 0,
    bestValLoss: undefined,
    bestStep: undefined,
    evaluationsWithoutImprovement: 0,
    retainBaseline: undefined,
  };
}

/** Returns the progress stored in `trainer_state.json`. */
export function progressFromTrainerState(state: TrainerState): TrainingProgress {
  return {
    step: state.step,
    trainedTokens: state.trainedTokens,
    elapsedTime: state.elapsedTime,
    skippedSteps: state.nonFinite.skippedSteps,
    consecutiveNonFinite: state.nonFinite.consecutive,
    bestValLoss: state.earlyStopping.bestValLoss,
    bestStep: state.earlyStopping.bestStep,
    evaluationsWithoutImprovement: state.earlyStopping.evaluationsWithoutImprovement,
    retainBaseline: state.retainBaseline,
  };
}

/** Contents of `trainer_state.json` besides the progress. */
export interface TrainerStateParts {
  config: NestedLearningConfig;
  progress: TrainingProgress;
  optimizerStep: number;
  trainData: BatchIteratorState;
  tierAssignments: Record<string, number>;
  calibration: CalibrationResult | undefined;
}

/** Builds the content of `trainer_state.json`. */
export function buildTrainerState(parts: TrainerStateParts): TrainerState {
  const { config, progress } = parts;
  return {
    format: CHECKPOINT_FORMAT_VERSION,
    step: progress.step,
    optimizerStep: parts.optimizerStep,
    trainData: { ...parts.trainData },
    random: { seed: config.seed },
    schedule: {
      schedule: config.lrSchedule,
      learningRate: config.learningRate,
      warmupSteps: config.warmupSteps,
      totalSteps: config.numSteps,
      minLearningRate: config.minLearningRate,
      nextStep: progress.step + 1,
    },
    earlyStopping: {
      bestValLoss: progress.bestValLoss,
      bestStep: progress.bestStep,
      evaluationsWithoutImprovement: progress.evaluationsWithoutImprovement,
    },
    nonFinite: { skippedSteps: progress.skippedSteps, consecutive: progress.consecutiveNonFinite },
    retainBaseline: progress.retainBaseline,
    trainedTokens: progress.trainedTokens,
    elapsedTime: progress.elapsedTime,
    tierAssignments: { ...parts.tierAssignments },
    calibration: parts.calibration,
  };
}

/** Inputs of `metadata.json`. */
export interface CheckpointMetadataParts {
  config: NestedLearningConfig;
  /** The configuration as `config.json` writes it, with snake_case keys. */
  snakeCaseConfig: Record<string, unknown>;
  progress: TrainingProgress;
  optimizerStep: number;
  name: string;
  kind: CheckpointKind;
  stopped: boolean;
  stopReason: DoneReason | undefined;
  tierStats: TierStatsRecord[];
  backend: string;
  calibration: CalibrationResult | undefined;
}

/** Builds the content of `metadata.json`. */
export function buildCheckpointMetadata(parts: CheckpointMetadataParts): CheckpointMetadata {
  const { progress, kind } = parts;
  return {
    format: CHECKPOINT_FORMAT_VERSION,
    name: parts.name,
    kind,
    step: progress.step,
    optimizerStep: parts.optimizerStep,
    isBest: kind === 'best',
    isFinal: kind === 'final',
    stopped: parts.stopped,
    stopReason: parts.stopReason,
    bestValLoss: progress.bestValLoss,
    bestStep: progress.bestStep,
    tierStats: parts.tierStats,
    elapsedTime: progress.elapsedTime,
    timestamp: new Date().toISOString(),
    libraryVersion: LIBRARY_VERSION,
    backend: parts.backend,
    experimentName: parts.config.experimentName,
    calibration: parts.calibration,
    config: parts.snakeCaseConfig,
  };
}

/** Tells whether the configured learning-rate schedule differs from the one a checkpoint was trained with. */
export function scheduleDiffers(state: TrainerState, config: NestedLearningConfig): boolean {
  const saved = state.schedule;
  return (
    saved.schedule !== config.lrSchedule ||
    saved.learningRate !== config.learningRate ||
    saved.warmupSteps !== config.warmupSteps ||
    saved.totalSteps !== config.numSteps ||
    saved.minLearningRate !== config.minLearningRate
  );
}
