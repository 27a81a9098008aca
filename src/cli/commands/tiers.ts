/**
 * `nested-learning tiers`: the tier assignment a training run would use, without training.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { Command } from 'commander';

import { NestedLoRATrainer, type NestedLearningConfig, type TierMap } from '../../index.js';
import { addConfigOptions, resolveConfig } from '../config-options.js';
import { terminalLogger, type Terminal } from '../terminal.js';

/** Builds the `tiers` command. */
export function tiersCommand(terminal: () => Terminal): Command {
  const command = new Command('tiers')
    .summary('show the tier assignment without training')
    .description(
      'Show how the LoRA parameters of a model, adapter and configuration are assigned to tiers: per tier its update frequency, ' +
        'layers, parameter tensors and elements. It loads the model and data as train does (and runs the calibration pass of ' +
        'parameter_importance), in a temporary experiment folder that is deleted afterwards.',
    )
    .option('--json', 'print the tier map as JSON');
  addConfigOptions(command).action(async (options: Record<string, unknown>) => {
    const config = await resolveConfig(options);
    const tierMap = await assignTiers(config, terminal());
    terminal().out.write(options.json === true ? `${JSON.stringify(tierMap, null, 2)}\n` : formatTierMap(config, tierMap));
  });
  return command;
}

/** Sets up a trainer in a temporary folder and returns its tier map. */
export async function assignTiers(config: NestedLearningConfig, terminal: Terminal): Promise<TierMap> {
  const outputDir = await mkdtemp(join(tmpdir(), 'nested-learning-tiers-'));
  const trainer = new NestedLoRATrainer({ ...config, outputDir, resume: false, overwrite: false }, { logger: terminalLogger(terminal) });
  try {
    await trainer.setup();
    return trainer.parameterTierMap;
  } finally {
    trainer.dispose();
    await rm(outputDir, { recursive: true, force: true });
  }
}

/** Formats a tier map as a table with one row per tier and the first steps of the schedule. */
export function formatTierMap(config: NestedLearningConfig, tierMap: TierMap): string {
  const rows = tierMap.tiers.map((tier) => [
    String(tier.tier),
    String(tier.frequency),
    formatLayers(tier.layers),
    String(tier.parameterCount),
    tier.elementCount.toLocaleString('en-US'),
  ]);
  const header = ['tier', 'frequency', 'layers', 'parameters', 'elements'];
  const widths = header.map((title, column) => Math.max(title.length, ...rows.map((row) => (row[column] as string).length)));
  const format = (cells: string[]): string => cells.map((cell, column) => cell.padEnd(widths[column] as number)).join('  ');

  const totalElements = tierMap.tiers.reduce((sum, tier) => sum + tier.elementCount, 0);
  const schedule = Array.from({ length: 8 }, (_, index) => {
    const step = index + 1;
    const active = tierMap.frequencies.flatMap((frequency, tier) => (step % frequency === 0 ? [tier] : []));
    return `${step}:[${active.join(',')}]`;
  });

  const lines = [
    `Model: ${config.baseModelPath}`,
    `Adapter: ${config.adapterPath ?? `fresh, rank ${config.loraRank}, alpha ${config.loraAlpha}`}`,
    `Strategy: ${config.tierAssignmentStrategy} | Tiers: ${tierMap.numTiers} | Frequencies: [${tierMap.frequencies.join(', ')}]`,
    '',
    format(header),
    ...rows.map(format),
    '',
    `Total: ${tierMap.tiers.reduce((sum, tier) => sum + tier.parameterCount, 0)} parameter tensors, ${totalElements.toLocaleString('en-US')} elements`,
    `Active tiers at steps 1-8: ${schedule.join(' ')}`,
  ];
  if (tierMap.unassigned.length > 0) {
    lines.push(`Placed in the default tier because the strategy could not place them: ${tierMap.unassigned.join(', ')}`);
  }
  return `${lines.join('\n')}\n`;
}

/** Formats layer numbers as ranges: `[0, 1, 2, 5]` -> `0-2, 5`; `-` when there are none. */
export function formatLayers(layers: readonly number[]): string {
  if (layers.length === 0) {
    return '-';
  }
  const ranges: string[] = [];
  let start = layers[0] as number;
  let previous = start;
  for (const layer of [...layers.slice(1), Number.NaN]) {
    if (layer === previous + 1) {
      previous = layer;
      continue;
    }
    ranges.push(start === previous ? String(start) : `${start}-${previous}`);
    start = layer;
    previous = layer;
  }
  return ranges.join(', ');
}
