export * from './lr-schedule.js';
export * from './events.js';
export * from './metrics.js';
export * from './experiment.js';
export * from './state.js';
export { NestedLoRATrainer } from './trainer.js';
export type {
  CheckpointFileEvent,
  NestedLoRATrainerOptions,
  SaveCheckpointOptions,
  TrainOptions,
} from './trainer.js';
export type { TrainerDatasets } from './data-setup.js';
export type { TrainingProgress } from './progress.js';
export { runOptimizerStep } from './optimizer-step.js';
export type { ComputeGradients, MicroBatchGradients, OptimizerStepOptions, OptimizerStepResult } from './optimizer-step.js';
export { evaluateLoss } from './evaluation.js';
export type { EvaluationLoss } from './evaluation.js';
export { calibrateImportance } from './calibration.js';
export type { CalibrationResult } from './calibration.js';
export { disposeCheckpoint, readCheckpointFiles } from './checkpoint-files.js';
export type { LoadedCheckpoint } from './checkpoint-files.js';
