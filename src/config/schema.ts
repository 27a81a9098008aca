/**
 * The zod schema of {@link NestedLearningConfig}: the one source of every option's type, range,
 * default and one-line description. The documentation table and the JSON Schema are generated from
 * it, so a change here shows up in both.
 *
 * Field checks live here. Rules that involve several fields are in `rules.ts`.
 */
import { z } from 'zod';

/** Largest seed: seeds are unsigned 32-bit integers. */
const MAX_SEED = 2 ** 32 - 1;

/** Folder names that `experimentName` may not take, because they point elsewhere. */
const experimentNamePattern = /^(?!\.{1,2}$)[^/\\\0]+$/;

/** One entry per tier, so the list must not be empty. */
const perTierNumbers = (element: z.ZodNumber) => z.array(element).min(1);

/** Paths of the model, the adapter, the data and the experiment folder. */
export const pathFields = {
  baseModelPath: z
    .string()
    .min(1)
    .describe('Folder of the Hugging Face base model: config.json, the tokenizer files and *.safetensors weights.'),
  adapterPath: z
    .string()
    .min(1)
    .optional()
    .describe('Folder of a LoRA adapter (PEFT or mlx_lm) to continue training; a fresh adapter is created when absent.'),
  trainDataPath: z.string().min(1).describe('JSONL file of training samples.'),
  valDataPath: z
    .string()
    .min(1)
    .optional()
    .describe('JSONL file of validation samples; evaluation, early stopping and the best checkpoint need it.'),
  retainDataPath: z
    .string()
    .min(1)
    .optional()
    .describe('JSONL file of samples from the old domain; its loss at each evaluation measures forgetting.'),
  outputDir: z
    .string()
    .min(1)
    .default('./nested_learning/checkpoints')
    .describe('Folder that contains the experiment folders, relative to the working directory.'),
  experimentName: z
    .string()
    .min(1)
    .regex(experimentNamePattern, { message: 'must be one folder name: not empty, not "." or "..", and without "/" or "\\"' })
    .default('nested_learning_experiment')
    .describe('Name of this run\'s folder inside outputDir.'),
};

/** Parameter tiers and how parameters are assigned to them. */
export const tierFields = {
  numTiers: z
    .int()
    .min(1)
    .default(3)
    .describe('Number of parameter tiers; tier 0 is the fastest. When only tierUpdateFrequencies is given, its length.'),
  tierUpdateFrequencies: z
    .array(z.int().min(1))
    .min(1)
    .default([1, 2, 4])
    .describe(
      'Update frequency of each tier: tier k takes an optimizer step at the steps that are multiples of its frequency. ' +
        'When only numTiers is given, the powers of two 1, 2, 4, ...',
    ),
  tierAssignmentStrategy: z
    .enum(['layer_depth', 'parameter_importance', 'manual'])
    .default('layer_depth')
    .describe(
      'How LoRA parameters are assigned to tiers: by contiguous layer ranges, by gradient statistics of a calibration pass, or by tierMap.',
    ),
  tierMap: z
    .record(z.string().min(1), z.int().min(0))
    .optional()
    .describe(
      'Rules of the manual strategy: an exact parameter name, a glob (*, **, ?) or a /regular expression/flags, each mapped to a tier. ' +
        'The first matching rule wins.',
    ),
  defaultTier: z
    .int()
    .min(0)
    .optional()
    .describe(
      'Tier of the parameters a strategy cannot place: names without a layer number, names no tierMap rule matches, parameters without gradient statistics. ' +
        'When absent, layer_depth uses the slowest tier and the other strategies raise an error.',
    ),
  layerDepthFastEnd: z
    .enum(['low', 'high'])
    .default('low')
    .describe('End of the layer stack that layer_depth puts in tier 0: low puts the first layers in the fastest tier, high the last.'),
  importanceCalibrationBatches: z
    .int()
    .min(1)
    .default(8)
    .describe('Training batches whose squared gradients rank the parameters for the parameter_importance strategy.'),
  tierLearningRateScales: perTierNumbers(z.number().min(0))
    .optional()
    .describe('Learning-rate multiplier of each tier; 1 for every tier when absent.'),
  tierWeightDecays: perTierNumbers(z.number().min(0))
    .optional()
    .describe('Decoupled weight decay of each tier; weightDecay for every tier when absent.'),
  inactiveGradients: z
    .enum(['accumulate', 'mean', 'drop'])
    .default('accumulate')
    .describe(
      'Gradients a tier receives between its updates: accumulate adds them to the next update, mean averages them over the window, drop discards them.',
    ),
};

/** LoRA adapter shape. */
export const loraFields = {
  loraRank: z.int().min(1).default(8).describe('Rank r of the LoRA matrices.'),
  loraAlpha: z
    .number()
    .gt(0)
    .default(16)
    .describe('LoRA alpha: updates are scaled by loraAlpha / loraRank, or by loraAlpha / sqrt(loraRank) with useRslora.'),
  loraDropout: z.number().min(0).lt(1).default(0).describe('Dropout probability applied to the LoRA input during training.'),
  loraTargetModules: z
    .array(z.string().min(1))
    .min(1)
    .refine((modules) => new Set(modules).size === modules.length, { message: 'must not list a module twice' })
    .default(['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'])
    .describe('Names of the linear modules that get LoRA adapters.'),
  loraLayers: z
    .union([z.literal('all'), z.int().min(1)])
    .default('all')
    .describe('Number of decoder layers, counted from the last, that get LoRA adapters, or all.'),
  useRslora: z
    .boolean()
    .default(false)
    .describe('Use rank-stabilised LoRA scaling, loraAlpha / sqrt(loraRank), instead of loraAlpha / loraRank.'),
};

/** Optimizer, learning-rate schedule and training loop. */
export const trainingFields = {
  learningRate: z.number().gt(0).default(1e-5).describe('Peak learning rate.'),
  lrSchedule: z
    .enum(['constant', 'cosine', 'linear'])
    .default('constant')
    .describe('Learning-rate schedule after warmup: constant, or cosine or linear decay towards minLearningRate at numSteps.'),
  warmupSteps: z.int().min(0).default(0).describe('Optimizer steps of linear warmup up to learningRate.'),
  minLearningRate: z.number().min(0).default(0).describe('Learning rate that the cosine and linear schedules decay towards.'),
  batchSize: z.int().min(1).default(4).describe('Samples per micro-batch.'),
  gradientAccumulationSteps: z
    .int()
    .min(1)
    .default(1)
    .describe('Micro-batches per optimizer step; the loss is the mean over all target tokens of these micro-batches.'),
  numSteps: z.int().min(1).default(1000).describe('Number of optimizer steps to train.'),
  maxGradNorm: z
    .number()
    .min(0)
    .default(1)
    .describe('Maximum global L2 norm of the gradients; larger gradients are scaled down, and 0 turns clipping off.'),
  beta1: z.number().min(0).lt(1).default(0.9).describe('Adam decay rate of the first-moment estimate.'),
  beta2: z.number().min(0).lt(1).default(0.999).describe('Adam decay rate of the second-moment estimate.'),
  epsilon: z.number().gt(0).default(1e-8).describe('Adam term added to the denominator for numerical stability.'),
  weightDecay: z.number().min(0).default(0).describe('Decoupled (AdamW) weight decay.'),
  seed: z
    .int()
    .min(0)
    .max(MAX_SEED)
    .default(0)
    .describe('Seed of the LoRA initialisation, dropout and data shuffling.'),
  maxConsecutiveNonFiniteSteps: z
    .int()
    .min(1)
    .default(5)
    .describe('Consecutive steps with a non-finite loss or gradient that are skipped before training stops with an error.'),
  logEvery: z.int().min(1).default(10).describe('Optimizer steps between reports of the training metrics.'),
};

/** Training data: sequence length, loss mask, record fields and batching. */
export const dataFields = {
  maxSeqLength: z.int().min(1).default(2048).describe('Maximum tokens per sample; longer samples are truncated.'),
  maskPrompt: z
    .boolean()
    .default(false)
    .describe('Compute the loss on completion and final assistant tokens only, not on the prompt.'),
  promptField: z.string().min(1).default('prompt').describe('Record field of the prompt in prompt/completion data.'),
  completionField: z
    .string()
    .min(1)
    .default('completion')
    .describe('Record field of the completion in prompt/completion data.'),
  onInvalidLine: z
    .enum(['error', 'skip'])
    .default('error')
    .describe('Data lines that are not valid JSON or have no known format: error stops loading, skip skips and counts them.'),
  sortByLength: z
    .boolean()
    .default(false)
    .describe('Batch samples of similar token length together to reduce padding.'),
  dropLastBatch: z.boolean().default(false).describe('Drop the last partial batch of each epoch instead of training on it.'),
};

/** Evaluation, early stopping and checkpoints. */
export const evaluationFields = {
  evalEvery: z.int().min(0).default(100).describe('Optimizer steps between evaluations; 0 turns periodic evaluation off.'),
  evalBatches: z
    .union([z.literal(-1), z.int().min(1)])
    .default(25)
    .describe('Validation batches per evaluation; -1 uses the whole validation set.'),
  earlyStop: z
    .boolean()
    .default(false)
    .describe('Stop training when the validation loss has not improved for patience evaluations.'),
  patience: z.int().min(1).default(5).describe('Evaluations without improvement before early stopping.'),
  minDelta: z.number().min(0).default(1e-4).describe('Smallest decrease of the validation loss that counts as an improvement.'),
  checkpointEvery: z.int().min(0).default(100).describe('Optimizer steps between checkpoints; 0 turns periodic checkpoints off.'),
  keepLastNCheckpoints: z
    .union([z.literal(-1), z.int().min(1)])
    .default(5)
    .describe('Periodic checkpoints kept on disk, newest first; -1 keeps all of them.'),
  saveBestOnly: z
    .boolean()
    .default(false)
    .describe('Save the best checkpoint (lowest validation loss) and the final one, and no periodic checkpoints.'),
  resume: z.boolean().default(false).describe('Continue the run from the latest checkpoint in the experiment folder.'),
  overwrite: z
    .boolean()
    .default(false)
    .describe('Delete the config, checkpoints and metrics of an earlier run in the experiment folder before training.'),
};

/** Backend selection. */
export const runtimeFields = {
  backend: z
    .enum(['auto', 'tensorflow', 'wasm', 'cpu'])
    .default('auto')
    .describe('TensorFlow.js backend; auto takes tensorflow (tfjs-node-gpu, then tfjs-node), then wasm, then cpu.'),
};

/** A titled group of options, in the order the documentation lists them. */
export interface ConfigSection {
  title: string;
  fields: Readonly<Record<string, z.ZodType>>;
}

/** The option groups, in documentation order. */
export const configSections: readonly ConfigSection[] = [
  { title: 'Paths', fields: pathFields },
  { title: 'Tiers', fields: tierFields },
  { title: 'LoRA', fields: loraFields },
  { title: 'Training', fields: trainingFields },
  { title: 'Data', fields: dataFields },
  { title: 'Evaluation and checkpoints', fields: evaluationFields },
  { title: 'Runtime', fields: runtimeFields },
];

/** Every option of the configuration, by camelCase name. */
export const configFields = {
  ...pathFields,
  ...tierFields,
  ...loraFields,
  ...trainingFields,
  ...dataFields,
  ...evaluationFields,
  ...runtimeFields,
};

/** camelCase name of an option. */
export type ConfigFieldName = keyof typeof configFields;

/** The object schema of the options, with field checks only. */
export const configObjectSchema = z.object(configFields);

/** The validated configuration, with every default filled in. */
export type NestedLearningConfigOutput = z.output<typeof configObjectSchema>;

/** Input form of the options in camelCase, in which options with a default may be left out. */
export type NestedLearningConfigInput = z.input<typeof configObjectSchema>;

/** Names of the tier assignment strategies. */
export type TierAssignmentStrategyName = NestedLearningConfigOutput['tierAssignmentStrategy'];

/** Handling of the gradients a tier receives between its updates. */
export type InactiveGradientsMode = NestedLearningConfigOutput['inactiveGradients'];
