/**
 * One training run as the CLI drives it: the trainer, its progress display, the stop signal, and the
 * summary that `summary.json` in the experiment folder records.
 */
import { join } from 'node:path';

import {
  currentBackend,
  NestedLoRATrainer,
  writeJsonAtomic,
  type DoneEventRecord,
  type EvalMetricsRecord,
  type NestedLearningConfig,
} from '../index.js';
import { ProgressDisplay } from './progress.js';
import { terminalLogger, type Terminal } from './terminal.js';

/** Name of the summary file the CLI writes into the experiment folder. */
export const SUMMARY_FILE = 'summary.json';

/** Outcome of a finished run: the `done` record, the evaluations and the paths of its files. */
export interface RunSummary {
  experimentFolder: string;
  finalCheckpoint: string;
  reason: DoneEventRecord['reason'];
  steps: number;
  numSteps: number;
  /** Training wall time in seconds, summed over resumed sessions. */
  trainingSeconds: number;
  /** Wall time of this command in seconds, setup and evaluations included. */
  wallSeconds: number;
  backend: string;
  tierUpdateFrequencies: number[];
  seed: number;
  bestValLoss: number | undefined;
  /** The last evaluation, or undefined when nothing was evaluated. */
  lastEvaluation: EvalMetricsRecord | undefined;
  /** Every evaluation of this session, in step order. */
  evaluations: EvalMetricsRecord[];
  skippedSteps: number;
}

/** Options of {@link runTraining}. */
export interface RunTrainingOptions {
  config: NestedLearningConfig;
  terminal: Terminal;
  /** Aborting it stops the run after the current step, with a final checkpoint. */
  signal?: AbortSignal;
  /** Prefix of progress lines. */
  label?: string;
  /** Lines about the run printed after setup, before the first step. */
  announce?: boolean;
}

/** Sets up and trains one run, shows its progress, writes `summary.json` and returns the summary. */
export async function runTraining(options: RunTrainingOptions): Promise<RunSummary> {
  const { config, terminal } = options;
  const started = performance.now();
  let display: ProgressDisplay | undefined;
  const trainer = new NestedLoRATrainer(config, { logger: terminalLogger(terminal, () => display?.finish()) });

  try {
    await trainer.setup();
    const experimentFolder = trainer.experimentFolder.root;
    display = new ProgressDisplay({
      stream: terminal.out,
      totalSteps: config.numSteps,
      logEvery: config.logEvery,
      startStep: trainer.step,
      label: options.label,
    });
    if (options.announce !== false) {
      announceRun(display, trainer, experimentFolder);
    }

    const evaluations: EvalMetricsRecord[] = [];
    const shown = display;
    trainer.on('step', (record) => shown.step(record));
    trainer.on('eval', (record) => {
      evaluations.push(record);
      shown.evaluation(record);
    });
    trainer.on('checkpoint', (record) => {
      if (record.kind === 'final' && record.stopped) {
        shown.line(`Stopped at step ${record.step}; final checkpoint written to ${record.path}`);
      }
    });

    const done = await trainer.train(options.signal === undefined ? {} : { signal: options.signal });
    display.finish();

    const summary: RunSummary = {
      experimentFolder,
      finalCheckpoint: done.finalCheckpointPath,
      reason: done.reason,
      steps: done.step,
      numSteps: config.numSteps,
      trainingSeconds: done.elapsedTime,
      wallSeconds: (performance.now() - started) / 1000,
      backend: currentBackend(),
      tierUpdateFrequencies: [...config.tierUpdateFrequencies],
      seed: config.seed,
      bestValLoss: done.bestValLoss,
      lastEvaluation: evaluations.at(-1),
      evaluations,
      skippedSteps: done.skippedSteps,
    };
    await writeJsonAtomic(join(experimentFolder, SUMMARY_FILE), summaryFileContent(summary));
    return summary;
  } finally {
    display?.finish();
    trainer.dispose();
  }
}

function announceRun(display: ProgressDisplay, trainer: NestedLoRATrainer, experimentFolder: string): void {
  const config = trainer.config;
  const tiers = trainer.parameterTierMap.tiers
    .map((tier) => `tier ${tier.tier} every ${tier.frequency} step(s): ${tier.parameterCount} tensors, layers [${tier.layers.join(', ')}]`)
    .join('; ');
  display.line(`Experiment folder: ${experimentFolder}`);
  display.line(`Base model: ${config.baseModelPath} | Backend: ${currentBackend()}`);
  display.line(`Train data: ${config.trainDataPath}`);
  if (config.retainDataPath !== undefined) {
    display.line(`Retain data (forgetting): ${config.retainDataPath}`);
  }
  display.line(`Steps: ${config.numSteps} | Batch size: ${config.batchSize} | Learning rate: ${config.learningRate} | Tiers: ${tiers}`);
  if (trainer.step > 0) {
    display.line(`Resuming from step ${trainer.step} (${trainer.resumedFromCheckpoint ?? 'checkpoint'})`);
  }
}

/** Returns the content of `summary.json`: the summary without the per-evaluation tier statistics. */
function summaryFileContent(summary: RunSummary): Record<string, unknown> {
  const last = summary.lastEvaluation;
  return {
    experimentFolder: summary.experimentFolder,
    finalCheckpoint: summary.finalCheckpoint,
    reason: summary.reason,
    steps: summary.steps,
    numSteps: summary.numSteps,
    trainingSeconds: summary.trainingSeconds,
    wallSeconds: summary.wallSeconds,
    backend: summary.backend,
    tierUpdateFrequencies: summary.tierUpdateFrequencies,
    seed: summary.seed,
    bestValLoss: summary.bestValLoss ?? null,
    valLoss: last?.valLoss ?? null,
    retainLoss: last?.retainLoss ?? null,
    retainBaseline: last?.retainBaseline ?? null,
    forgetting: last?.forgetting ?? null,
    evaluatedAtStep: last?.step ?? null,
    skippedSteps: summary.skippedSteps,
  };
}
