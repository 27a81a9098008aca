/**
 * The JSON files of a checkpoint folder: `metadata.json` (what the checkpoint is, for people and
 * tools) and `trainer_state.json` (everything besides weights and optimizer moments that an exact
 * resume needs). Non-finite numbers are written as strings, as in the metrics files.
 */
import { z } from 'zod';

import { MetricNumberSchema, TierStatsRecordSchema } from './metrics.js';

/** The format version of both files; a reader rejects other versions. */
export const CHECKPOINT_FORMAT_VERSION = 1;

/** Result of the `parameter_importance` calibration pass. */
export const CalibrationRecordSchema = z.object({
  batches: z.number().int().min(0).describe('Batches whose gradients were summed.'),
  skippedBatches: z.number().int().min(0).describe('Batches left out because a loss or gradient was not finite.'),
  statistics: z
    .record(z.string(), z.object({ gradSquaredSum: z.number(), count: z.number().int().min(0) }))
    .describe('Per parameter: the sum over batches of sum(g^2), g the gradient of the batch mean loss.'),
});

/** `metadata.json` of a checkpoint folder. */
export const CheckpointMetadataSchema = z.object({
  format: z.literal(CHECKPOINT_FORMAT_VERSION),
  name: z.string().describe('Folder name under checkpoints/.'),
  kind: z.enum(['periodic', 'best', 'final', 'manual']),
  step: z.number().int().min(0).describe('Training steps taken, skipped steps included.'),
  optimizerStep: z.number().int().min(0).describe('Optimizer updates applied; fewer than step when steps were skipped.'),
  isBest: z.boolean().describe('True for the best/ folder.'),
  isFinal: z.boolean().describe('True for the final/ folder.'),
  stopped: z.boolean().describe('True when a signal or stop() ended the run before numSteps.'),
  stopReason: z.enum(['completed', 'stopped', 'early_stopped']).optional().describe('Why the run ended; final/ only.'),
  bestValLoss: MetricNumberSchema.optional().describe('Lowest validation loss so far.'),
  bestStep: z.number().int().min(0).optional().describe('Step of the lowest validation loss.'),
  tierStats: z.array(TierStatsRecordSchema),
  elapsedTime: z.number().min(0).describe('Training wall time in seconds, summed over resumed sessions.'),
  timestamp: z.string().describe('Time the checkpoint was written, ISO 8601.'),
  libraryVersion: z.string(),
  backend: z.string().describe('tfjs backend the run used.'),
  experimentName: z.string(),
  calibration: CalibrationRecordSchema.optional().describe('The parameter_importance calibration pass, when it ran.'),
  config: z.record(z.string(), z.unknown()).describe('The run configuration with snake_case keys.'),
});

/** Position and counters of the loop, besides the optimizer's own state. */
export const TrainerStateSchema = z.object({
  format: z.literal(CHECKPOINT_FORMAT_VERSION),
  step: z.number().int().min(0).describe('Training steps taken; the next step is step + 1.'),
  optimizerStep: z.number().int().min(0).describe('Must equal the step stored in optimizer.safetensors.'),
  trainData: z
    .object({ epoch: z.number().int().min(0), index: z.number().int().min(0), seed: z.number().int().min(0) })
    .describe('Position of the training batch iterator.'),
  random: z
    .object({ seed: z.number().int().min(0) })
    .describe('Run seed. Dropout masks derive from (seed, step, micro-batch), so the step fixes them.'),
  schedule: z
    .object({
      schedule: z.enum(['constant', 'cosine', 'linear']),
      learningRate: z.number(),
      warmupSteps: z.number().int().min(0),
      totalSteps: z.number().int().min(1),
      minLearningRate: z.number(),
      nextStep: z.number().int().min(1),
    })
    .describe('Learning-rate schedule and the step it continues at.'),
  earlyStopping: z.object({
    bestValLoss: MetricNumberSchema.optional(),
    bestStep: z.number().int().min(0).optional(),
    evaluationsWithoutImprovement: z.number().int().min(0),
  }),
  nonFinite: z.object({
    skippedSteps: z.number().int().min(0).describe('Steps skipped because the loss or gradient norm was non-finite.'),
    consecutive: z.number().int().min(0).describe('Skipped steps in a row at the end of the run.'),
  }),
  retainBaseline: MetricNumberSchema.optional().describe('Retain-set loss measured before training.'),
  trainedTokens: z.number().int().min(0),
  elapsedTime: z.number().min(0),
  tierAssignments: z.record(z.string(), z.number().int().min(0)).describe('Parameter name to tier, as trained.'),
  calibration: CalibrationRecordSchema.optional().describe('The parameter_importance calibration pass, when it ran.'),
});

/** Contents of a checkpoint's `metadata.json`; fields in {@link CheckpointMetadataSchema}. */
export type CheckpointMetadata = z.output<typeof CheckpointMetadataSchema>;
/** Contents of a checkpoint's `trainer_state.json`; fields in {@link TrainerStateSchema}. */
export type TrainerState = z.output<typeof TrainerStateSchema>;
