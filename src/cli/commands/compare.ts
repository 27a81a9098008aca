/**
 * `nested-learning compare`: plain LoRA (every tier every step) against nested learning on the same
 * data, seeds and step budget, with a report folder holding `report.md`, `report.svg` and `report.json`.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { cpus } from 'node:os';
import { join, resolve } from 'node:path';

import { Command } from 'commander';

import { ArgumentError, NestedLearningConfig, TrainingError, writeJsonAtomic } from '../../index.js';
import { renderMarkdown, renderSvg, summarizeComparison, type ComparisonRun, type MethodName } from '../compare-report.js';
import { addConfigOptions, resolveConfig } from '../config-options.js';
import { timestampName } from '../names.js';
import { formatDuration } from '../progress.js';
import { runTraining } from '../run-training.js';
import type { Terminal } from '../terminal.js';
import { listenForStop } from './train.js';

const REPORT_FILE = 'report.md';
const CHART_FILE = 'report.svg';
const DATA_FILE = 'report.json';

/** Builds the `compare` command. */
export function compareCommand(terminal: () => Terminal): Command {
  const command = new Command('compare')
    .summary('compare plain LoRA with nested learning over several seeds')
    .description(
      'Train plain LoRA (every tier every step) and nested learning (the configured tier frequencies, [1, 2, 4] by default) on ' +
        'the same data, seeds and step budget, then write report.md (table of new-domain validation loss, old-domain forgetting ' +
        'and time, mean and spread over seeds), report.svg (curves) and report.json to the report folder. Both methods need ' +
        'valDataPath and retainDataPath; the embedded default has both.',
    )
    .option('--seeds <list>', 'comma-separated seeds; each seed trains both methods', '0,1,2')
    .option('--report-dir <folder>', 'report folder (default: ./nested_learning/reports/compare-<time>)');
  addConfigOptions(command).action(async (options: Record<string, unknown>) => {
    const seeds = parseSeeds(String(options.seeds));
    const config = await resolveConfig(options);
    const reportDir = resolve((options.reportDir as string | undefined) ?? join('nested_learning', 'reports', `compare-${timestampName(new Date())}`));
    const stop = listenForStop(terminal());
    try {
      await runComparison({ config, seeds, reportDir, terminal: terminal(), signal: stop.signal });
    } finally {
      stop.dispose();
    }
  });
  return command;
}

/** Options of {@link runComparison}. */
export interface RunComparisonOptions {
  config: NestedLearningConfig;
  seeds: number[];
  reportDir: string;
  terminal: Terminal;
  /** Aborting it stops the current run with its final checkpoint and ends the comparison without a report. */
  signal?: AbortSignal;
}

/** Trains both methods for every seed and writes the report files; returns the path of `report.md`. */
export async function runComparison(options: RunComparisonOptions): Promise<string> {
  const { config, seeds, reportDir, terminal } = options;
  const nestedFrequencies = [...config.tierUpdateFrequencies];
  if (nestedFrequencies.every((frequency) => frequency === 1)) {
    throw new ArgumentError(
      'CLI_COMPARE_NO_NESTING',
      `The tier frequencies [${nestedFrequencies.join(', ')}] are all 1, so nested learning would equal plain LoRA. ` +
        'Set --tier-update-frequencies, for example 1,2,4.',
      { details: { tierUpdateFrequencies: nestedFrequencies } },
    );
  }
  if (config.valDataPath === undefined || config.retainDataPath === undefined) {
    throw new ArgumentError(
      'CLI_COMPARE_NEEDS_DATA',
      'compare measures new-domain validation loss and old-domain forgetting: set both --val-data-path and --retain-data-path.',
      { details: { valDataPath: config.valDataPath, retainDataPath: config.retainDataPath } },
    );
  }

  await mkdir(reportDir, { recursive: true });
  const started = performance.now();
  const runs: ComparisonRun[] = [];
  let backend = config.backend as string;
  const methods: [MethodName, number[]][] = [
    ['lora', nestedFrequencies.map(() => 1)],
    ['nested', nestedFrequencies],
  ];
  terminal.out.write(`Comparing plain LoRA and nested [${nestedFrequencies.join(', ')}]: seeds ${seeds.join(', ')}, ${config.numSteps} steps each.\n`);

  for (const seed of seeds) {
    for (const [method, frequencies] of methods) {
      const runConfig = NestedLearningConfig.parse({
        ...config,
        seed,
        tierUpdateFrequencies: frequencies,
        numTiers: frequencies.length,
        outputDir: join(reportDir, 'runs'),
        experimentName: `${method}-seed${seed}`,
        resume: false,
        overwrite: false,
      });
      const label = `[${method} seed ${seed}] `;
      const summary = await runTraining({ config: runConfig, terminal, label, announce: false, ...(options.signal === undefined ? {} : { signal: options.signal }) });
      if (summary.reason === 'stopped') {
        throw new TrainingError(
          'CLI_COMPARE_STOPPED',
          `The comparison stopped during the ${method} run of seed ${seed}, so no report was written. ` +
            `The runs so far are in ${join(reportDir, 'runs')}; start compare again with another --report-dir to repeat it.`,
          { details: { method, seed, reportDir } },
        );
      }
      const last = summary.lastEvaluation;
      backend = summary.backend;
      runs.push({
        method,
        seed,
        tierUpdateFrequencies: frequencies,
        steps: summary.steps,
        valLoss: last?.valLoss ?? Number.NaN,
        forgetting: last?.forgetting ?? Number.NaN,
        trainingSeconds: summary.trainingSeconds,
        experimentFolder: summary.experimentFolder,
        curve: summary.evaluations.map((record) => ({ step: record.step, valLoss: record.valLoss, forgetting: record.forgetting })),
      });
      terminal.out.write(`${label}done in ${formatDuration(summary.trainingSeconds)}\n`);
    }
  }

  const summary = summarizeComparison(runs, config.numSteps);
  const setup = [
    `Command: \`nested-learning ${process.argv.slice(2).join(' ')}\``,
    `Base model: \`${config.baseModelPath}\`; train data \`${config.trainDataPath}\`; validation \`${config.valDataPath}\`; retain \`${config.retainDataPath}\``,
    `Steps: ${config.numSteps}; batch size ${config.batchSize}; learning rate ${config.learningRate} (${config.lrSchedule}); LoRA rank ${config.loraRank}, alpha ${config.loraAlpha}; ` +
      `tier strategy ${config.tierAssignmentStrategy}; inactive gradients ${config.inactiveGradients}; evaluation every ${config.evalEvery} steps on ${config.evalBatches === -1 ? 'all' : config.evalBatches} batches`,
    `Machine: ${cpus().length} cores (${cpus()[0]?.model ?? 'unknown CPU'}), Node ${process.version}, tfjs backend ${backend}; total wall time ${formatDuration((performance.now() - started) / 1000)}`,
  ];
  const reportPath = join(reportDir, REPORT_FILE);
  await writeFile(join(reportDir, CHART_FILE), renderSvg(runs, summary));
  await writeFile(reportPath, renderMarkdown(summary, runs, setup, CHART_FILE));
  await writeJsonAtomic(join(reportDir, DATA_FILE), { setup, summary, runs });

  terminal.out.write(`\n${renderMarkdown(summary, runs, setup, CHART_FILE).split('## Runs')[0]?.trimEnd() ?? ''}\n\nReport: ${reportPath}\n`);
  return reportPath;
}

function parseSeeds(text: string): number[] {
  const seeds = text.split(',').map((item) => item.trim()).filter((item) => item !== '').map(Number);
  if (seeds.length === 0 || seeds.some((seed) => !Number.isInteger(seed) || seed < 0 || seed > 2 ** 32 - 1)) {
    throw new ArgumentError('CLI_INVALID_FLAG', `Invalid --seeds ${JSON.stringify(text)}. Expected comma-separated integers from 0 to 4294967295, for example 0,1,2.`, {
      details: { flag: '--seeds', value: text },
    });
  }
  if (new Set(seeds).size !== seeds.length) {
    throw new ArgumentError('CLI_INVALID_FLAG', `--seeds ${JSON.stringify(text)} repeats a seed. Give each seed once.`, { details: { flag: '--seeds', value: text } });
  }
  return seeds;
}
