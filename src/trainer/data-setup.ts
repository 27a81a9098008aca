/**
 * The trainer's data: datasets loaded from the configured JSONL files, the training batch
 * iterator, and the fixed evaluation batches.
 */
import type { NestedLearningConfig } from '../config/index.js';
import { BatchIterator, evalBatches, loadDataset, loadTokenizer, type Batch, type Dataset, type Tokenizer } from '../data/index.js';
import { ConfigError } from '../errors.js';
import type { Logger } from '../logger.js';

/** Datasets given to the trainer instead of the files named in the configuration. */
export interface TrainerDatasets {
  train: Dataset;
  /** Validation set; without it there is no validation loss, best checkpoint or early stopping. */
  validation?: Dataset;
  /** Data of the old domain; without it forgetting is not measured. */
  retain?: Dataset;
}

/**
 * Loads `trainDataPath`, and `valDataPath` and `retainDataPath` when set, with the tokenizer of
 * `baseModelPath` unless one is given.
 */
export async function loadTrainerDatasets(
  config: NestedLearningConfig,
  tokenizer: Tokenizer | undefined,
  logger: Logger,
): Promise<TrainerDatasets> {
  const options = {
    tokenizer: tokenizer ?? (await loadTokenizer(config.baseModelPath)),
    maxSeqLength: config.maxSeqLength,
    maskPrompt: config.maskPrompt,
    promptField: config.promptField,
    completionField: config.completionField,
    onInvalidLine: config.onInvalidLine,
  };

  const train = await loadDataset(config.trainDataPath, options);
  const validation = config.valDataPath === undefined ? undefined : await loadDataset(config.valDataPath, options);
  const retain = config.retainDataPath === undefined ? undefined : await loadDataset(config.retainDataPath, options);
  for (const [role, dataset] of [['train', train], ['validation', validation], ['retain', retain]] as const) {
    if (dataset !== undefined) {
      logger.info(`Loaded ${role} data from ${dataset.source}: ${dataset.stats.samples} samples.`, { role, ...dataset.stats });
      checkNotEmpty(role, dataset, config.maxSeqLength);
    }
  }
  return { train, ...(validation === undefined ? {} : { validation }), ...(retain === undefined ? {} : { retain }) };
}

/** Returns the endless, seeded iterator of training batches. Two calls give the same batches. */
export function createTrainIterator(dataset: Dataset, config: NestedLearningConfig): BatchIterator {
  return new BatchIterator(dataset, {
    batchSize: config.batchSize,
    seed: config.seed,
    sortByLength: config.sortByLength,
    dropLast: config.dropLastBatch,
  });
}

/** Returns the first `evalBatches` batches of a dataset (all for -1), or none without a dataset. */
export function createEvaluationBatches(dataset: Dataset | undefined, config: NestedLearningConfig): Batch[] {
  if (dataset === undefined) {
    return [];
  }
  const maxBatches = config.evalBatches === -1 ? undefined : config.evalBatches;
  return evalBatches(dataset, { batchSize: config.batchSize, maxBatches });
}

/**
 * Raises a ConfigError with code `DATASET_EMPTY` when no sample of a configured dataset is left,
 * which would otherwise surface as a batch-size error (training) or silently turn evaluation off
 * (validation and retain data).
 */
function checkNotEmpty(role: 'train' | 'validation' | 'retain', dataset: Dataset, maxSeqLength: number): void {
  if (dataset.samples.length > 0) {
    return;
  }

  const { lines, skippedInvalid, skippedNoTargets } = dataset.stats;
  let advice = 'Add samples to the file.';
  if (skippedNoTargets > 0) {
    advice =
      'Raise maxSeqLength or shorten the prompts, because with maskPrompt a prompt that fills maxSeqLength leaves no token ' +
      'to train on. Empty records have no target token either.';
  } else if (skippedInvalid > 0) {
    advice = 'Fix the invalid lines, or set onInvalidLine to "error" to see the first one.';
  }
  throw new ConfigError(
    'DATASET_EMPTY',
    `The ${role} data ${dataset.source} has no usable sample: of ${lines} line(s), ${skippedInvalid} were invalid and ` +
      `${skippedNoTargets} had no target token left after truncation to maxSeqLength ${maxSeqLength}. ${advice}`,
    { details: { role, path: dataset.source, ...dataset.stats } },
  );
}
