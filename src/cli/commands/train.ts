/**
 * `nested-learning train`: one training run from a config file, a preset or the embedded default,
 * with flags overriding configuration fields. Ctrl-C (SIGINT) or SIGTERM stops after the current
 * step and writes the final checkpoint; a second Ctrl-C exits at once.
 */
import { Command } from 'commander';

import { addConfigOptions, resolveConfig } from '../config-options.js';
import { EMBEDDED_DEFAULT_STEPS } from '../../index.js';
import { formatDuration, formatNumber, formatSigned } from '../progress.js';
import { runTraining, SUMMARY_FILE, type RunSummary } from '../run-training.js';
import type { Terminal } from '../terminal.js';

/** Exit status of a run stopped by a signal, as shells report 128 + SIGINT. */
export const STOPPED_EXIT_CODE = 130;

/** Builds the `train` command. */
export function trainCommand(terminal: () => Terminal): Command {
  const command = new Command('train')
    .summary('train a LoRA adapter with nested tiers')
    .description(
      'Train a LoRA adapter with Nested Learning tiers. Without --config it runs the embedded default: the tiny Qwen2 model ' +
        `from the package, nested tiers [1, 2, 4] on Brown Corpus fiction for ${EMBEDDED_DEFAULT_STEPS} steps, forgetting measured ` +
        'on Brown Corpus press. Flags override configuration fields. Ctrl-C stops after the current step and writes the final ' +
        `checkpoint (exit status ${STOPPED_EXIT_CODE}).`,
    );
  addConfigOptions(command).action(async (options: Record<string, unknown>) => {
    const config = await resolveConfig(options);
    process.exitCode = await trainAction(config, terminal());
  });
  return command;
}

async function trainAction(config: Awaited<ReturnType<typeof resolveConfig>>, terminal: Terminal): Promise<number> {
  const stop = listenForStop(terminal);
  try {
    const summary = await runTraining({ config, terminal, signal: stop.signal });
    terminal.out.write(formatSummary(summary));
    return summary.reason === 'stopped' ? STOPPED_EXIT_CODE : 0;
  } finally {
    stop.dispose();
  }
}

/** A stop signal raised by SIGINT or SIGTERM, and the removal of its listeners. */
export interface StopListener {
  signal: AbortSignal;
  dispose(): void;
}

/**
 * Aborts the returned signal on the first SIGINT or SIGTERM, so the running training writes its final
 * checkpoint and ends. A second signal exits the process at once with {@link STOPPED_EXIT_CODE}.
 */
export function listenForStop(terminal: Terminal): StopListener {
  const controller = new AbortController();
  const onSignal = (signal: NodeJS.Signals): void => {
    if (controller.signal.aborted) {
      terminal.err.write(`\nSecond ${signal}: exiting without waiting for the final checkpoint.\n`);
      process.exit(STOPPED_EXIT_CODE);
    }
    terminal.err.write(`\n${signal} received: stopping after the current step and writing the final checkpoint (Ctrl-C again to exit at once).\n`);
    controller.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return {
    signal: controller.signal,
    dispose: () => {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    },
  };
}

/** Formats the end-of-run summary: outcome, losses, forgetting, time and the experiment folder. */
export function formatSummary(summary: RunSummary): string {
  const last = summary.lastEvaluation;
  const outcome = { completed: 'completed', stopped: 'stopped by signal', early_stopped: 'stopped early (no improvement)' }[summary.reason];
  const lines = ['', `Training ${outcome}: ${summary.steps}/${summary.numSteps} steps in ${formatDuration(summary.trainingSeconds)} (${formatDuration(summary.wallSeconds)} with setup and evaluation).`];

  if (last?.valLoss !== undefined) {
    const best = summary.bestValLoss === undefined ? '' : ` (best ${formatNumber(summary.bestValLoss)})`;
    lines.push(`Validation loss at step ${last.step}: ${formatNumber(last.valLoss)}${best}`);
  } else {
    lines.push('Validation loss: not measured (no valDataPath, or no evaluation ran).');
  }
  if (last?.forgetting !== undefined && last.retainLoss !== undefined && last.retainBaseline !== undefined) {
    lines.push(
      `Forgetting at step ${last.step}: ${formatSigned(last.forgetting)} (retain loss ${formatNumber(last.retainLoss)}, ` +
        `${formatNumber(last.retainBaseline)} before training; positive means the old domain got worse)`,
    );
  } else {
    lines.push('Forgetting: not measured (no retainDataPath, or no evaluation ran).');
  }
  lines.push(
    `Experiment folder: ${summary.experimentFolder}`,
    `  config.json, checkpoints/ (final: ${summary.finalCheckpoint}), metrics/train_metrics.jsonl, metrics/eval_metrics.jsonl, ${SUMMARY_FILE}`,
    '',
  );
  return lines.join('\n');
}
