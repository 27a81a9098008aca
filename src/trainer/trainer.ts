/**
 * `NestedLoRATrainer`: continues training a LoRA adapter with parameter tiers that update at
 * different frequencies, evaluates validation loss and forgetting, and writes checkpoints that
 * resume exactly.
 *
 * Steps and skipped steps: a training step takes `gradientAccumulationSteps` micro-batches and
 * calls the optimizer once. When its loss or gradient norm is not finite the optimizer is not
 * called, so weights, moments, accumulators, tier update counts and the optimizer's step counter
 * stay as they were. The training step still counts, because it consumed data and `numSteps`
 * bounds the run. After a skipped step the optimizer step therefore lags the training step by one.
 * Tier activity follows the optimizer step, and the learning-rate schedule follows the training step.
 */
import * as tf from '@tensorflow/tfjs';

import { convertAdapter, type LoraAdapter } from '../adapters/index.js';
import { initBackend, type BackendName } from '../backend/index.js';
import { NestedLearningConfig, type NestedLearningConfigInput } from '../config/index.js';
import type { Batch, BatchIterator, Dataset, Tokenizer } from '../data/index.js';
import { ArgumentError, ConfigError, NestedLearningError, TrainingError } from '../errors.js';
import { silentLogger, type Logger } from '../logger.js';
import { LORA_MODULE_PATHS, type CausalLM, type LoraTargetModule } from '../model/index.js';
import { NestedAdam } from '../optimizer/index.js';
import { activeTiers, normalizeTierMap, ParameterTierScheduler, type TierMap, type TierMapLike } from '../scheduler/index.js';
import { calibrateImportance, type CalibrationResult } from './calibration.js';
import {
  disposeCheckpoint,
  readCheckpointFiles,
  readTrainerState,
  writeCheckpointFiles,
  type CheckpointSnapshot,
} from './checkpoint-files.js';
import { createEvaluationBatches, createTrainIterator, loadTrainerDatasets, type TrainerDatasets } from './data-setup.js';
import { evaluateLoss } from './evaluation.js';
import { loadTrainingModel } from './model-loading.js';
import {
  TrainerEventEmitter,
  type CheckpointEventRecord,
  type CheckpointKind,
  type DoneEventRecord,
  type DoneReason,
  type TrainerEvent,
  type TrainerEventListener,
  type TrainerEventName,
} from './events.js';
import { ExperimentFolder, periodicCheckpointName, type CheckpointEntry, type ExperimentFolderMode } from './experiment.js';
import { createLearningRateSchedule, type LearningRateSchedule } from './lr-schedule.js';
import { checkResumeConfig, withOtherCheckpointHint } from './resume-check.js';
import { MetricsFileWriter, type EvalMetricsRecord, type TierStatsRecord, type TrainMetricsRecord } from './metrics.js';
import { runOptimizerStep, type ComputeGradients } from './optimizer-step.js';
import {
  buildCheckpointMetadata,
  buildTrainerState,
  freshProgress,
  progressFromTrainerState,
  scheduleDiffers,
  type TrainingProgress,
} from './progress.js';
import { dropoutSeed } from './seeds.js';
import type { TrainerState } from './state.js';

/** Argument of {@link NestedLoRATrainerOptions.onCheckpointFileWritten}. */
export interface CheckpointFileEvent {
  /** Checkpoint folder name, for example `checkpoint_0000100`. */
  name: string;
  /** File just completed, for example `optimizer.safetensors`. */
  file: string;
  /** Temporary folder that becomes the checkpoint folder when every file is written. */
  temporaryDir: string;
}

/** Options of {@link NestedLoRATrainer}. */
export interface NestedLoRATrainerOptions {
  /** Receives progress and warnings. The library never writes to the console. @default silentLogger */
  logger?: Logger;
  /**
   * tfjs backend, in place of the configuration's `backend`. With an injected `model` and no
   * `backend`, the trainer keeps the backend that is active, where the model's tensors live.
   */
  backend?: BackendName | 'auto';
  /**
   * A model with LoRA adapters to train instead of loading `baseModelPath`. The caller keeps
   * ownership: `dispose()` does not dispose it. Its LoRA variables must be registered in the tfjs
   * engine under their adapter keys (no other live model with the same keys).
   */
  model?: CausalLM;
  /** Tokenizer to use instead of loading the one in `baseModelPath`. */
  tokenizer?: Tokenizer;
  /** Datasets to use instead of loading `trainDataPath`, `valDataPath` and `retainDataPath`. */
  datasets?: TrainerDatasets;
  /**
   * Called after each file of a checkpoint is complete in its temporary folder, before the folder
   * is renamed into place. The write waits for a returned promise. Meant for fault-injection tests.
   */
  onCheckpointFileWritten?: (event: CheckpointFileEvent) => void | Promise<void>;
}

/** Options of {@link NestedLoRATrainer.train}. */
export interface TrainOptions {
  /** Aborting it ends the run after the current step, as {@link NestedLoRATrainer.stop} does. */
  signal?: AbortSignal;
}

/** Options of {@link NestedLoRATrainer.saveCheckpoint}. */
export interface SaveCheckpointOptions {
  /** Folder name under `checkpoints/`: letters, digits, `_` and `-`. @default `checkpoint_{step}` */
  name?: string;
}

type Phase = 'created' | 'settingUp' | 'ready' | 'training' | 'finished' | 'failed' | 'disposed';

interface MetricsWriters {
  train: MetricsFileWriter;
  eval: MetricsFileWriter;
}

/**
 * Trains the LoRA adapter of a causal language model with Nested Learning's multi-frequency
 * tiers. Call {@link NestedLoRATrainer.setup}, optionally replace
 * {@link NestedLoRATrainer.parameterTierMap} or call {@link NestedLoRATrainer.loadCheckpoint},
 * then {@link NestedLoRATrainer.train}.
 *
 * @example
 * ```ts
 * const trainer = new NestedLoRATrainer({
 *   baseModelPath: './models/Qwen2.5-0.5B',
 *   trainDataPath: './data/train.jsonl',
 *   retainDataPath: './data/old-domain.jsonl',
 *   tierUpdateFrequencies: [1, 2, 4],
 * });
 * await trainer.setup();
 * trainer.on('eval', (record) => console.log(record.step, record.valLoss, record.forgetting));
 * const done = await trainer.train({ signal: AbortSignal.timeout(3_600_000) });
 * trainer.dispose();
 * ```
 */
export class NestedLoRATrainer {
  /** The validated configuration. */
  readonly config: NestedLearningConfig;

  private readonly logger: Logger;
  private readonly options: NestedLoRATrainerOptions;
  private readonly emitter: TrainerEventEmitter;
  private phase: Phase = 'created';
  private stopRequested = false;
  private resumedFrom: string | undefined;
  private backendName = tf.getBackend();

  private experiment!: ExperimentFolder;
  private modelInstance!: CausalLM;
  private ownsModel = false;
  private trainDataset!: Dataset;
  private trainIterator!: BatchIterator;
  private validationBatches: Batch[] = [];
  private retainBatches: Batch[] = [];
  private tierMap!: TierMap;
  private optimizer!: NestedAdam;
  private schedule!: LearningRateSchedule;
  private calibration: CalibrationResult | undefined;
  private progress: TrainingProgress = freshProgress();

  constructor(config: NestedLearningConfigInput | NestedLearningConfig, options: NestedLoRATrainerOptions = {}) {
    this.config = NestedLearningConfig.parse(config);
    this.options = options;
    this.logger = options.logger ?? silentLogger;
    this.emitter = new TrainerEventEmitter(this.logger);
  }

  // ---------------------------------------------------------------------------------------------
  // Public state

  /** The model being trained; available after {@link NestedLoRATrainer.setup}. */
  get model(): CausalLM {
    this.requirePhase(['ready', 'training', 'finished', 'failed'], 'read the model');
    return this.modelInstance;
  }

  /** The experiment folder; available after {@link NestedLoRATrainer.setup}. */
  get experimentFolder(): ExperimentFolder {
    this.requirePhase(['ready', 'training', 'finished', 'failed'], 'read the experiment folder');
    return this.experiment;
  }

  /** Training steps taken so far, skipped steps included. */
  get step(): number {
    return this.progress.step;
  }

  /** Path of the checkpoint this run resumed from, if any. */
  get resumedFromCheckpoint(): string | undefined {
    return this.resumedFrom;
  }

  /** Statistics of the `parameter_importance` calibration pass, when it ran. */
  get calibrationStatistics(): CalibrationResult | undefined {
    return this.calibration;
  }

  /** The assignment of LoRA parameters to tiers; available after {@link NestedLoRATrainer.setup}. */
  get parameterTierMap(): TierMap {
    this.requirePhase(['ready', 'training', 'finished', 'failed'], 'read parameterTierMap');
    return this.tierMap;
  }

  /**
   * Replaces the tier assignment between `setup()` and `train()`. Accepts a {@link TierMap}, a
   * `Map` or a plain name-to-tier record; every LoRA parameter needs exactly one tier from 0 to
   * `numTiers - 1`, and every name must be a LoRA parameter. The optimizer is rebuilt for it.
   */
  set parameterTierMap(tierMap: TierMapLike) {
    this.requirePhase(['ready'], 'replace parameterTierMap');
    if (this.resumedFrom !== undefined) {
      throw new ArgumentError(
        'TRAINER_TIER_MAP_LOCKED',
        `The tier map of a resumed run comes from its checkpoint (${this.resumedFrom}) and cannot be replaced, ` +
          'because the saved optimizer state belongs to it. Start a new run to use another tier map.',
        { details: { checkpoint: this.resumedFrom } },
      );
    }
    const normalized = normalizeTierMap(tierMap, {
      parameters: this.loraShapes(),
      frequencies: this.config.tierUpdateFrequencies,
    });
    this.installTierMap(normalized);
  }

  // ---------------------------------------------------------------------------------------------
  // Events

  /** Registers a listener of a trainer event and returns a function that removes it. */
  on<Name extends TrainerEventName>(event: Name, listener: TrainerEventListener<Name>): () => void {
    return this.emitter.on(event, listener);
  }

  /** Removes a listener registered with {@link NestedLoRATrainer.on}. */
  off<Name extends TrainerEventName>(event: Name, listener: TrainerEventListener<Name>): void {
    this.emitter.off(event, listener);
  }

  /** Returns an async iterator over the events from now until the next `done` or `error`. */
  events(): AsyncIterableIterator<TrainerEvent> {
    return this.emitter.events();
  }

  // ---------------------------------------------------------------------------------------------
  // Setup

  /**
   * Prepares the run: backend, experiment folder, tokenizer, base model with a fresh or loaded
   * adapter, datasets and batches, tier map (with the calibration pass of `parameter_importance`)
   * and optimizer. With `resume`, it then loads the latest complete checkpoint of the experiment.
   */
  async setup(): Promise<void> {
    this.requirePhase(['created'], 'set up');
    this.phase = 'settingUp';
    try {
      await this.prepareBackend();
      let mode: ExperimentFolderMode = 'new';
      if (this.config.resume) {
        mode = 'resume';
      } else if (this.config.overwrite) {
        mode = 'overwrite';
      }
      this.experiment = await ExperimentFolder.prepare({
        outputDir: this.config.outputDir,
        experimentName: this.config.experimentName,
        mode,
      });

      // A resumed run replaces config.json only once its checkpoint has loaded, so a resume that
      // fails leaves the record of the run it tried to continue unchanged.
      const resumeFrom = this.config.resume ? await this.experiment.latestCheckpoint() : undefined;
      if (this.config.resume) {
        for (const path of await this.experiment.incompleteCheckpoints()) {
          this.logger.warn(`Skipping the incomplete checkpoint ${path}: a file is missing or metadata.json cannot be read.`, { checkpoint: path });
        }
      }
      if (resumeFrom === undefined) {
        await this.experiment.writeConfig(NestedLearningConfig.toSnakeCase(this.config));
      } else {
        await this.withCheckpointHint(resumeFrom, () => checkResumeConfig(resumeFrom, this.config));
      }

      await this.prepareModel();
      await this.prepareData();
      this.schedule = createLearningRateSchedule({
        schedule: this.config.lrSchedule,
        learningRate: this.config.learningRate,
        warmupSteps: this.config.warmupSteps,
        totalSteps: this.config.numSteps,
        minLearningRate: this.config.minLearningRate,
      });

      if (resumeFrom !== undefined) {
        const saved = await this.withCheckpointHint(resumeFrom, () => readTrainerState(resumeFrom.path));
        this.installTierMap(normalizeTierMap(saved.tierAssignments, { parameters: this.loraShapes(), frequencies: this.config.tierUpdateFrequencies }));
      } else {
        this.installTierMap(this.assignTiers());
      }
      this.phase = 'ready';

      if (resumeFrom !== undefined) {
        await this.withCheckpointHint(resumeFrom, () => this.loadCheckpoint(resumeFrom.path));
        await this.experiment.writeConfig(NestedLearningConfig.toSnakeCase(this.config));
      } else if (this.config.resume) {
        this.logger.warn(`No complete checkpoint in ${this.experiment.checkpointsDir}; the run starts from step 0.`, {
          experiment: this.experiment.root,
        });
        await this.experiment.truncateMetrics(-1);
      }
    } catch (error) {
      this.phase = 'failed';
      throw error;
    }
  }

  /**
   * Loads a checkpoint folder written by this trainer and continues from it: adapter weights,
   * optimizer moments and accumulators, tier clock, tier map, data position, learning-rate
   * position, early-stopping state and counters. Metrics lines of later steps are removed from
   * the experiment's metrics files. Call it after `setup()` and before `train()`.
   */
  async loadCheckpoint(path: string): Promise<void> {
    this.requirePhase(['ready'], 'load a checkpoint');
    const checkpoint = await readCheckpointFiles(path);
    let optimizer: NestedAdam | undefined;
    try {
      const state = checkpoint.trainerState;
      if (state.optimizerStep !== checkpoint.optimizerState.step) {
        throw new TrainingError(
          'CHECKPOINT_INCONSISTENT',
          `Checkpoint ${path} is inconsistent: trainer_state.json says optimizer step ${state.optimizerStep}, ` +
            `optimizer.safetensors says ${checkpoint.optimizerState.step}. Resume from another checkpoint.`,
          { details: { path } },
        );
      }

      // Everything is restored into new objects first, each of which checks its input, so a
      // checkpoint that does not fit leaves the trainer as it was. The tier map comes before the
      // optimizer state, which is laid out by tier.
      const tierMap = normalizeTierMap(state.tierAssignments, {
        parameters: this.loraShapes(),
        frequencies: this.config.tierUpdateFrequencies,
      });
      optimizer = this.createOptimizer(tierMap);
      optimizer.setState(checkpoint.optimizerState);
      const trainIterator = createTrainIterator(this.trainDataset, this.config);
      trainIterator.restore(state.trainData);

      // setLoraWeights checks every name and shape before it assigns anything.
      this.modelInstance.setLoraWeights(checkpoint.adapter.weights, checkpoint.adapter.scale);
      this.optimizer.dispose();
      this.optimizer = optimizer;
      optimizer = undefined;
      this.tierMap = tierMap;
      this.trainIterator = trainIterator;
      this.progress = progressFromTrainerState(state);
      this.calibration = state.calibration;
      this.checkSchedule(state, path);
    } finally {
      optimizer?.dispose();
      disposeCheckpoint(checkpoint);
    }

    await this.experiment.truncateMetrics(this.progress.step);
    this.resumedFrom = path;
    this.logger.info(`Resumed from ${path} at step ${this.progress.step}.`, { checkpoint: path, step: this.progress.step });
  }

  // ---------------------------------------------------------------------------------------------
  // Training

  /**
   * Trains until `numSteps`, early stopping, or a stop request, then writes `final/` and resolves
   * with the `done` record. Rejects (and emits `error`) when training cannot continue, for example
   * with a {@link TrainingError} after `maxConsecutiveNonFiniteSteps` skipped steps in a row; the
   * checkpoints written before stay intact.
   */
  async train(options: TrainOptions = {}): Promise<DoneEventRecord> {
    this.requirePhase(['ready'], 'train');
    this.phase = 'training';

    const signal = options.signal;
    const onAbort = (): void => this.stop();
    signal?.addEventListener('abort', onAbort);
    if (signal?.aborted === true) {
      this.stop();
    }

    let writers: MetricsWriters | undefined;
    try {
      writers = {
        train: await MetricsFileWriter.open(this.experiment.trainMetricsPath),
        eval: await MetricsFileWriter.open(this.experiment.evalMetricsPath),
      };
      const done = await this.runLoop(writers);
      this.phase = 'finished';
      this.emitter.emit('done', done);
      return done;
    } catch (error) {
      this.phase = 'failed';
      const failure = error instanceof Error ? error : new Error(String(error));
      this.logger.error(`Training failed at step ${this.progress.step}: ${failure.message}`, { step: this.progress.step, error: failure });
      this.emitter.emit('error', {
        step: this.progress.step,
        error: failure,
        code: NestedLearningError.isInstance(failure) ? failure.code : undefined,
        message: failure.message,
      });
      throw failure;
    } finally {
      signal?.removeEventListener('abort', onAbort);
      await writers?.train.close();
      await writers?.eval.close();
    }
  }

  /**
   * Asks a running `train()` to end after the current step; it then writes `final/` marked as
   * stopped. Calling it again, or before `train()`, does no harm (before `train()`, the run ends
   * before its first step).
   */
  stop(): void {
    if (!this.stopRequested) {
      this.stopRequested = true;
      this.logger.info('Stop requested; training ends after the current step.', { step: this.progress.step });
    }
  }

  /**
   * Evaluates the adapter as it is now: validation loss and perplexity on the fixed validation
   * batches, and retain loss and forgetting when a retain set is given. Writes nothing and does
   * not change the best checkpoint or early stopping.
   */
  evaluate(): EvalMetricsRecord {
    this.requirePhase(['ready', 'training', 'finished', 'failed'], 'evaluate');
    const losses: Omit<EvalMetricsRecord, 'step' | 'tierStats' | 'timestamp'> = {};

    if (this.validationBatches.length > 0) {
      const validation = evaluateLoss(this.modelInstance, this.validationBatches);
      losses.valLoss = validation.loss;
      losses.valPerplexity = Math.exp(validation.loss);
      losses.valTokens = validation.tokens;
    }

    if (this.retainBatches.length > 0) {
      const retain = evaluateLoss(this.modelInstance, this.retainBatches);
      losses.retainLoss = retain.loss;
      if (this.progress.retainBaseline === undefined && this.progress.step === 0) {
        this.progress.retainBaseline = retain.loss;
      }
      if (this.progress.retainBaseline !== undefined) {
        losses.retainBaseline = this.progress.retainBaseline;
        losses.forgetting = retain.loss - this.progress.retainBaseline;
      }
    }

    const record: EvalMetricsRecord = { step: this.progress.step, ...losses, tierStats: this.tierStats(), timestamp: new Date().toISOString() };
    return record;
  }

  /**
   * Writes a checkpoint of the current state under `checkpoints/{name}` and returns its record.
   * The state is copied before the first file is written, so training may continue meanwhile.
   */
  async saveCheckpoint(options: SaveCheckpointOptions = {}): Promise<CheckpointEventRecord> {
    this.requirePhase(['ready', 'training', 'finished', 'failed'], 'save a checkpoint');
    return this.writeCheckpoint('manual', options.name ?? periodicCheckpointName(this.progress.step), false);
  }

  /**
   * Converts the mlx_lm adapter of a checkpoint folder to a PEFT adapter folder
   * (`adapter_model.safetensors` + `adapter_config.json`) that names `baseModelPath` as its base.
   */
  async exportPeft(checkpointDir: string, outDir: string): Promise<void> {
    await convertAdapter(checkpointDir, outDir, { to: 'peft', baseModelNameOrPath: this.config.baseModelPath, useRslora: this.config.useRslora });
  }

  /**
   * Disposes the optimizer and, when the trainer loaded it, the model. Safe to call twice. Raises
   * `TRAINER_BUSY` while `setup()` or `train()` runs.
   */
  dispose(): void {
    if (this.phase === 'disposed') {
      return;
    }
    if (this.phase === 'training') {
      throw new ArgumentError('TRAINER_BUSY', 'Cannot dispose the trainer while train() runs. Call stop() and await train() first.');
    }
    if (this.phase === 'settingUp') {
      // setup() would go on to load the model after this call, and nothing would dispose it.
      throw new ArgumentError('TRAINER_BUSY', 'Cannot dispose the trainer while setup() runs. Await setup() first, then call dispose().');
    }
    this.optimizer?.dispose();
    if (this.ownsModel) {
      this.modelInstance?.dispose();
    }
    this.phase = 'disposed';
  }

  // ---------------------------------------------------------------------------------------------
  // Loop

  private async runLoop(writers: MetricsWriters): Promise<DoneEventRecord> {
    const sessionStart = performance.now();
    const elapsedBefore = this.progress.elapsedTime;
    const elapsed = (): number => elapsedBefore + (performance.now() - sessionStart) / 1000;

    if (this.progress.step === 0 && (this.validationBatches.length > 0 || this.retainBatches.length > 0)) {
      const initial = this.evaluate();
      await writers.eval.append(initial);
      this.emitter.emit('eval', initial);
    }

    let reason: DoneReason = 'completed';
    let evaluatedAtLastStep = false;
    const firstStep = this.progress.step;
    while (this.progress.step < this.config.numSteps) {
      if (this.stopRequested) {
        reason = 'stopped';
        break;
      }

      const record = this.trainStep(elapsed);
      await writers.train.append(record);
      this.emitter.emit('step', record);
      this.logStep(record);
      await this.failOnNonFiniteRun(record);

      const step = record.step;
      evaluatedAtLastStep = this.config.evalEvery > 0 && step % this.config.evalEvery === 0 && this.hasEvaluationData();
      if (evaluatedAtLastStep) {
        await this.evaluateAndRecord(writers);
      }
      if (this.config.checkpointEvery > 0 && step % this.config.checkpointEvery === 0 && !this.config.saveBestOnly) {
        this.progress.elapsedTime = elapsed();
        await this.writeCheckpoint('periodic', periodicCheckpointName(step), false);
        await this.pruneCheckpoints();
      }
      if (this.config.earlyStop && this.progress.evaluationsWithoutImprovement >= this.config.patience) {
        reason = 'early_stopped';
        this.logger.info(`Early stopping at step ${step}: no improvement in ${this.config.patience} evaluations.`, { step });
        break;
      }
    }

    const trainedThisSession = this.progress.step > firstStep;
    if (reason === 'completed' && trainedThisSession && !evaluatedAtLastStep && this.hasEvaluationData()) {
      await this.evaluateAndRecord(writers);
    }

    this.progress.elapsedTime = elapsed();
    const final = await this.writeCheckpoint('final', 'final', reason === 'stopped', reason);
    return {
      step: this.progress.step,
      reason,
      bestValLoss: this.progress.bestValLoss,
      finalCheckpointPath: final.path,
      skippedSteps: this.progress.skippedSteps,
      elapsedTime: this.progress.elapsedTime,
    };
  }

  private trainStep(elapsed: () => number): TrainMetricsRecord {
    const step = this.progress.step + 1;
    const started = performance.now();

    const batches = Array.from({ length: this.config.gradientAccumulationSteps }, () => this.trainIterator.nextBatch());
    const learningRate = this.schedule(step);
    const result = runOptimizerStep({
      batches,
      computeGradients: this.gradientsAt(step),
      optimizer: this.optimizer,
      learningRate,
      maxGradNorm: this.config.maxGradNorm,
    });

    const stepTime = (performance.now() - started) / 1000;
    this.progress.step = step;
    this.progress.trainedTokens += result.tokens;
    if (result.applied) {
      this.progress.consecutiveNonFinite = 0;
    } else {
      this.progress.skippedSteps += 1;
      this.progress.consecutiveNonFinite += 1;
    }

    return {
      step,
      loss: result.loss,
      learningRate,
      gradNorm: result.gradNorm,
      activeTiers: result.applied ? activeTiers(this.optimizer.step, this.config.tierUpdateFrequencies) : [],
      tokens: result.tokens,
      trainedTokens: this.progress.trainedTokens,
      tokensPerSecond: stepTime > 0 ? result.tokens / stepTime : 0,
      stepTime,
      elapsedTime: elapsed(),
      tierStats: this.tierStats(),
      skipped: !result.applied,
      skippedSteps: this.progress.skippedSteps,
      timestamp: new Date().toISOString(),
    };
  }

  private gradientsAt(step: number): ComputeGradients {
    return (batch, microBatch) =>
      this.modelInstance.lossAndGradients(batch, { training: true, dropoutSeed: dropoutSeed(this.config.seed, step, microBatch) });
  }

  private async failOnNonFiniteRun(record: TrainMetricsRecord): Promise<void> {
    if (!record.skipped) {
      return;
    }
    this.logger.warn(
      `Step ${record.step} skipped: loss ${record.loss}, gradient norm ${record.gradNorm} (${this.progress.consecutiveNonFinite} in a row).`,
      { step: record.step, loss: record.loss, gradNorm: record.gradNorm },
    );
    const limit = this.config.maxConsecutiveNonFiniteSteps;
    if (this.progress.consecutiveNonFinite < limit) {
      return;
    }

    const last = await this.experiment.latestCheckpoint();
    const checkpointText = last === undefined ? 'No checkpoint was written yet.' : `The last complete checkpoint is ${last.path} (step ${last.step}).`;
    throw new TrainingError(
      'TRAINING_NON_FINITE',
      `Training stopped at step ${record.step}: the loss or gradient norm was not finite for ${limit} steps in a row ` +
        `(last loss ${record.loss}, gradient norm ${record.gradNorm}); none of these steps changed the weights. ${checkpointText} ` +
        'Lower learningRate or maxGradNorm, check the training data, then resume or start again.',
      { details: { step: record.step, consecutive: limit, checkpoint: last?.path } },
    );
  }

  private async evaluateAndRecord(writers: MetricsWriters): Promise<void> {
    const record = this.evaluate();
    await writers.eval.append(record);
    this.emitter.emit('eval', record);
    this.logger.info(`Evaluation at step ${record.step}`, { ...record, tierStats: undefined });

    const valLoss = record.valLoss;
    if (valLoss === undefined) {
      return;
    }
    const best = this.progress.bestValLoss ?? Number.POSITIVE_INFINITY;
    if (valLoss < best - this.config.minDelta) {
      this.progress.bestValLoss = valLoss;
      this.progress.bestStep = record.step;
      this.progress.evaluationsWithoutImprovement = 0;
      await this.writeCheckpoint('best', 'best', false);
    } else {
      this.progress.evaluationsWithoutImprovement += 1;
    }
  }

  private logStep(record: TrainMetricsRecord): void {
    if (record.step % this.config.logEvery !== 0 && record.step !== this.config.numSteps) {
      return;
    }
    this.logger.info(
      `Step ${record.step}/${this.config.numSteps}: loss ${record.loss.toFixed(4)}, learning rate ${record.learningRate.toExponential(3)}, ` +
        `${record.tokensPerSecond.toFixed(1)} tokens/s, active tiers [${record.activeTiers.join(', ')}]`,
      { step: record.step, loss: record.loss, learningRate: record.learningRate, tokensPerSecond: record.tokensPerSecond },
    );
  }

  // ---------------------------------------------------------------------------------------------
  // Checkpoints

  private async writeCheckpoint(
    kind: CheckpointKind,
    name: string,
    stopped: boolean,
    stopReason?: DoneReason,
  ): Promise<CheckpointEventRecord> {
    const snapshot = this.snapshot(kind, name, stopped, stopReason);
    let path: string;
    try {
      const listener = this.options.onCheckpointFileWritten;
      path = await this.experiment.writeCheckpoint(name, (temporaryDir) =>
        writeCheckpointFiles(temporaryDir, snapshot, listener === undefined ? undefined : (file, dir) => listener({ name, file, temporaryDir: dir })),
      );
    } finally {
      disposeCheckpoint(snapshot);
    }

    const record: CheckpointEventRecord = { step: this.progress.step, name, path, kind, stopped };
    this.emitter.emit('checkpoint', record);
    this.logger.info(`Checkpoint ${name} written at step ${record.step}.`, { path, step: record.step });
    return record;
  }

  /** Copies everything a checkpoint holds, synchronously, so later steps cannot change it. */
  private snapshot(kind: CheckpointKind, name: string, stopped: boolean, stopReason: DoneReason | undefined): CheckpointSnapshot {
    const lora = this.modelInstance.lora;
    const weights = this.modelInstance.getLoraWeights();
    const adapter: LoraAdapter = {
      format: 'mlx',
      rank: lora?.rank ?? this.config.loraRank,
      scale: this.modelInstance.loraScale,
      dropout: lora?.dropout ?? this.config.loraDropout,
      targetModules: (lora?.targetModules ?? []).map((module: LoraTargetModule) => LORA_MODULE_PATHS[module]).sort(),
      layers: [...(lora?.layers ?? [])],
      weights,
      config: {},
    };
    let optimizerState;
    try {
      optimizerState = this.optimizer.getState();
    } catch (error) {
      tf.dispose(Object.values(weights));
      throw error;
    }

    const trainerState = buildTrainerState({
      config: this.config,
      progress: this.progress,
      optimizerStep: this.optimizer.step,
      trainData: this.trainIterator.state(),
      tierAssignments: this.tierMap.assignments,
      calibration: this.calibration,
    });
    const metadata = buildCheckpointMetadata({
      config: this.config,
      snakeCaseConfig: NestedLearningConfig.toSnakeCase(this.config),
      progress: this.progress,
      optimizerStep: this.optimizer.step,
      name,
      kind,
      stopped,
      stopReason,
      tierStats: this.tierStats(),
      backend: this.backendName,
      calibration: this.calibration,
    });

    return { adapter, numHiddenLayers: this.modelInstance.config.numHiddenLayers, optimizerState, trainerState, metadata };
  }

  private async pruneCheckpoints(): Promise<void> {
    const keep = this.config.keepLastNCheckpoints;
    if (keep === -1) {
      return;
    }
    const removed = await this.experiment.pruneCheckpoints(keep);
    if (removed.length > 0) {
      this.logger.debug(`Removed old checkpoints: ${removed.join(', ')}`, { removed });
    }
  }

  private checkSchedule(state: TrainerState, path: string): void {
    if (state.step >= this.config.numSteps) {
      this.logger.warn(
        `Checkpoint ${path} is at step ${state.step}, which reaches numSteps ${this.config.numSteps}, so train() runs no step. ` +
          `Set numSteps above ${state.step} to continue training.`,
        { checkpoint: path, step: state.step, numSteps: this.config.numSteps },
      );
    }
    if (scheduleDiffers(state, this.config)) {
      this.logger.warn(
        `The learning-rate schedule differs from the one checkpoint ${path} was trained with; the configured one applies from step ${state.step + 1}.`,
        { saved: state.schedule, checkpoint: path },
      );
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Setup helpers

  private async prepareBackend(): Promise<void> {
    const requested = this.options.backend ?? (this.options.model === undefined ? this.config.backend : undefined);
    if (requested !== undefined) {
      const info = await initBackend({ backend: requested });
      this.logger.info(`Using the tfjs backend ${info.name} (${info.package}).`, { backend: info.name });
    }
    this.backendName = tf.getBackend();
  }

  private async prepareModel(): Promise<void> {
    if (this.options.model !== undefined) {
      this.modelInstance = this.options.model;
      this.ownsModel = false;
    } else {
      this.modelInstance = await loadTrainingModel(this.config, this.logger);
      this.ownsModel = true;
    }

    const parameters = this.modelInstance.loraParameters;
    if (parameters.size === 0) {
      throw new ArgumentError('TRAINER_NO_LORA', 'The model has no LoRA parameters to train. Build it with LoRA adapters.');
    }
    const misnamed = [...parameters].filter(([key, variable]) => variable.name !== key).map(([key]) => key);
    if (misnamed.length > 0) {
      throw new ArgumentError(
        'TRAINER_VARIABLE_NAME_TAKEN',
        `${misnamed.length} LoRA variable(s) are registered in tfjs under another name (for example ${misnamed[0]}), ` +
          'because another live model holds the same adapter keys. Dispose the other model before training this one.',
        { details: { misnamed } },
      );
    }
  }

  private async prepareData(): Promise<void> {
    const datasets = this.options.datasets ?? (await loadTrainerDatasets(this.config, this.options.tokenizer, this.logger));
    this.trainDataset = datasets.train;
    this.trainIterator = createTrainIterator(datasets.train, this.config);
    this.validationBatches = createEvaluationBatches(datasets.validation, this.config);
    this.retainBatches = createEvaluationBatches(datasets.retain, this.config);

    if (this.config.earlyStop && this.validationBatches.length === 0) {
      throw new ConfigError('CONFIG_INVALID', 'earlyStop needs validation data: set valDataPath, or turn earlyStop off.', {
        details: { earlyStop: true },
      });
    }
  }

  private assignTiers(): TierMap {
    const scheduler = ParameterTierScheduler.fromConfig(this.config);
    const parameters = this.loraShapes();
    if (this.config.tierAssignmentStrategy !== 'parameter_importance') {
      return scheduler.assign(parameters);
    }

    // Calibration batches come from their own iterator, so the training order is unchanged.
    const iterator = createTrainIterator(this.trainDataset, this.config);
    const batches = Array.from({ length: this.config.importanceCalibrationBatches }, () => iterator.nextBatch());
    this.calibration = calibrateImportance(batches, (batch) => this.modelInstance.lossAndGradients(batch, { training: false }));
    this.logger.info(
      `Calibrated parameter importance on ${this.calibration.batches} batches (${this.calibration.skippedBatches} skipped).`,
      { batches: this.calibration.batches, skippedBatches: this.calibration.skippedBatches },
    );
    return scheduler.assign(parameters, { importance: this.calibration.statistics });
  }

  private installTierMap(tierMap: TierMap): void {
    const optimizer = this.createOptimizer(tierMap);
    this.optimizer?.dispose();
    this.optimizer = optimizer;
    this.tierMap = tierMap;
  }

  private createOptimizer(tierMap: TierMap): NestedAdam {
    const config = this.config;
    const tiers = config.tierUpdateFrequencies.map((frequency, tier) => ({
      frequency,
      learningRateScale: config.tierLearningRateScales?.[tier] ?? 1,
      weightDecay: config.tierWeightDecays?.[tier] ?? config.weightDecay,
    }));
    return new NestedAdam({
      learningRate: config.learningRate,
      beta1: config.beta1,
      beta2: config.beta2,
      epsilon: config.epsilon,
      weightDecay: config.weightDecay,
      tiers,
      tierMap,
      inactiveGradients: config.inactiveGradients,
      logger: this.logger,
    });
  }

  private loraShapes(): Map<string, number[]> {
    return new Map([...this.modelInstance.loraParameters].map(([key, variable]) => [key, variable.shape]));
  }

  /**
   * Returns per tier the update frequency, the optimizer updates taken so far, and the parameter and
   * element counts. Each metrics line carries the same records. Available after `setup()`.
   */
  tierStats(): TierStatsRecord[] {
    this.requirePhase(['ready', 'training', 'finished', 'failed'], 'read tierStats');
    const counts = this.optimizer.tierStats();
    return this.tierMap.tiers.map((tier) => ({
      tier: tier.tier,
      frequency: tier.frequency,
      updateCount: counts[tier.tier]?.updateCount ?? 0,
      parameterCount: tier.parameterCount,
      elementCount: tier.elementCount,
    }));
  }

  private hasEvaluationData(): boolean {
    return this.validationBatches.length > 0 || this.retainBatches.length > 0;
  }

  /** Runs a step of resuming from `checkpoint`, naming another checkpoint when this one cannot be read. */
  private async withCheckpointHint<T>(checkpoint: CheckpointEntry, step: () => Promise<T>): Promise<T> {
    try {
      return await step();
    } catch (error) {
      throw await withOtherCheckpointHint(error, checkpoint, this.experiment);
    }
  }

  private requirePhase(allowed: readonly Phase[], action: string): void {
    if (!allowed.includes(this.phase)) {
      const hint: Partial<Record<Phase, string>> = {
        created: 'Call setup() first.',
        settingUp: 'Wait for setup() to finish.',
        training: 'Wait for train() to finish.',
        disposed: 'Create a new trainer.',
      };
      throw new ArgumentError(
        'TRAINER_INVALID_STATE',
        `Cannot ${action} while the trainer is ${this.phase}. ${hint[this.phase] ?? 'Create a new trainer for another run.'}`,
        { details: { phase: this.phase, action } },
      );
    }
  }
}

