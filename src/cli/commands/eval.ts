/**
 * `nested-learning eval`: validation loss and retain loss (forgetting) of a checkpoint or adapter.
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';

import { Command } from 'commander';

import {
  ArgumentError,
  evalBatches,
  evaluateLoss,
  initBackend,
  loadCausalLM,
  loadDataset,
  loadTokenizer,
  readAdapter,
  type Batch,
  type CausalLM,
  type NestedLearningConfig,
  type Tokenizer,
} from '../../index.js';
import { addConfigOptions, resolveConfig } from '../config-options.js';
import { formatNumber, formatSigned } from '../progress.js';
import type { Terminal } from '../terminal.js';

/** Losses of one adapter, and of the base model on the retain set. */
export interface CheckpointEvaluation {
  checkpoint: string;
  /** Step in the checkpoint's `trainer_state.json`, when it has one. */
  step: number | undefined;
  valLoss: number | undefined;
  valPerplexity: number | undefined;
  valTokens: number | undefined;
  retainLoss: number | undefined;
  /** Retain loss of the base model without the adapter. */
  retainBaseline: number | undefined;
  /** `retainLoss - retainBaseline`; positive means the old domain got worse. */
  forgetting: number | undefined;
  retainTokens: number | undefined;
}

/** Builds the `eval` command. */
export function evalCommand(terminal: () => Terminal): Command {
  const command = new Command('eval')
    .summary('validation and retain losses of a checkpoint')
    .description(
      'Compute the validation loss of a checkpoint (or any PEFT or mlx_lm adapter folder), its loss on the retain set of the old ' +
        'domain, and forgetting: that retain loss minus the base model\'s retain loss without the adapter. The configuration is ' +
        '--config, else the config.json of the experiment the checkpoint belongs to, else the embedded default; flags override it. ' +
        'evalBatches and batchSize set how much data is read.',
    )
    .argument('<checkpoint>', 'checkpoint folder, for example nested_learning/checkpoints/<experiment>/checkpoints/final')
    .option('--json', 'print the result as JSON');
  addConfigOptions(command).action(async (checkpoint: string, options: Record<string, unknown>) => {
    const folder = resolve(checkpoint);
    if (!existsSync(folder)) {
      throw new ArgumentError('CLI_CHECKPOINT_NOT_FOUND', `Checkpoint folder ${folder} does not exist. Pass a checkpoint or adapter folder.`, {
        details: { path: folder },
      });
    }
    const experimentConfig = join(dirname(dirname(folder)), 'config.json');
    const configFile = (options.config as string | undefined) ?? (existsSync(experimentConfig) ? experimentConfig : undefined);
    const config = await resolveConfig({ ...options, config: configFile });

    const result = await evaluateCheckpoint(folder, config);
    terminal().out.write(options.json === true ? `${JSON.stringify(result, null, 2)}\n` : formatEvaluation(result, config));
  });
  return command;
}

/** Loads the base model with and without the adapter and evaluates both on the configured data. */
export async function evaluateCheckpoint(checkpoint: string, config: NestedLearningConfig): Promise<CheckpointEvaluation> {
  await initBackend({ backend: config.backend });
  const tokenizer = await loadTokenizer(config.baseModelPath);
  const validation = await evaluationBatches(config.valDataPath, tokenizer, config);
  const retain = await evaluationBatches(config.retainDataPath, tokenizer, config);
  if (validation.length === 0 && retain.length === 0) {
    throw new ArgumentError('CLI_NO_EVALUATION_DATA', 'Nothing to evaluate: set --val-data-path or --retain-data-path (or both).');
  }

  const adapter = await readAdapter(checkpoint);
  let adapted: CausalLM | undefined;
  let base: CausalLM | undefined;
  try {
    adapted = await loadCausalLM(config.baseModelPath, { adapter });
    const valResult = validation.length > 0 ? evaluateLoss(adapted, validation) : undefined;
    const retainResult = retain.length > 0 ? evaluateLoss(adapted, retain) : undefined;
    adapted.dispose();
    adapted = undefined;

    let retainBaseline: number | undefined;
    if (retain.length > 0) {
      base = await loadCausalLM(config.baseModelPath);
      retainBaseline = evaluateLoss(base, retain).loss;
    }

    return {
      checkpoint,
      step: await checkpointStep(checkpoint),
      valLoss: valResult?.loss,
      valPerplexity: valResult === undefined ? undefined : Math.exp(valResult.loss),
      valTokens: valResult?.tokens,
      retainLoss: retainResult?.loss,
      retainBaseline,
      forgetting: retainResult === undefined || retainBaseline === undefined ? undefined : retainResult.loss - retainBaseline,
      retainTokens: retainResult?.tokens,
    };
  } finally {
    adapted?.dispose();
    base?.dispose();
    for (const tensor of Object.values(adapter.weights)) {
      tensor.dispose();
    }
  }
}

async function evaluationBatches(path: string | undefined, tokenizer: Tokenizer, config: NestedLearningConfig): Promise<Batch[]> {
  if (path === undefined) {
    return [];
  }
  const dataset = await loadDataset(path, {
    tokenizer,
    maxSeqLength: config.maxSeqLength,
    maskPrompt: config.maskPrompt,
    promptField: config.promptField,
    completionField: config.completionField,
    onInvalidLine: config.onInvalidLine,
  });
  return evalBatches(dataset, { batchSize: config.batchSize, maxBatches: config.evalBatches === -1 ? undefined : config.evalBatches });
}

async function checkpointStep(checkpoint: string): Promise<number | undefined> {
  const statePath = join(checkpoint, 'trainer_state.json');
  if (!existsSync(statePath)) {
    return undefined;
  }
  const state = JSON.parse(await readFile(statePath, 'utf8')) as { step?: unknown };
  return typeof state.step === 'number' ? state.step : undefined;
}

/** Formats the result as lines of text. */
export function formatEvaluation(result: CheckpointEvaluation, config: NestedLearningConfig): string {
  const lines = [`Checkpoint: ${result.checkpoint}${result.step === undefined ? '' : ` (step ${result.step})`}`, `Base model: ${config.baseModelPath}`];
  if (result.valLoss !== undefined) {
    lines.push(
      `Validation loss: ${formatNumber(result.valLoss)} (perplexity ${formatNumber(result.valPerplexity ?? Number.NaN)}, ` +
        `${result.valTokens} tokens of ${config.valDataPath})`,
    );
  }
  if (result.retainLoss !== undefined && result.retainBaseline !== undefined && result.forgetting !== undefined) {
    lines.push(
      `Retain loss: ${formatNumber(result.retainLoss)} (base model without the adapter: ${formatNumber(result.retainBaseline)}, ` +
        `${result.retainTokens} tokens of ${config.retainDataPath})`,
      `Forgetting: ${formatSigned(result.forgetting)} (positive means the old domain got worse)`,
    );
  }
  return `${lines.join('\n')}\n`;
}
