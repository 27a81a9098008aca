/**
 * `nested-learning convert`: LoRA adapters between the PEFT and mlx_lm formats.
 */
import { Command, Option } from 'commander';

import { convertAdapter, detectAdapterFormat, initBackend, loadModelConfig, type ConvertAdapterOptions } from '../../index.js';
import type { Terminal } from '../terminal.js';

interface ConvertFlags {
  to: 'peft' | 'mlx';
  baseModel?: string;
  numLayers?: string;
  modelConfig?: string;
  useRslora?: boolean;
  dtype?: 'F32' | 'F16' | 'BF16';
}

/** Builds the `convert` command. */
export function convertCommand(terminal: () => Terminal): Command {
  return new Command('convert')
    .summary('convert adapters between PEFT and mlx_lm')
    .description(
      'Convert a LoRA adapter folder between Hugging Face PEFT (adapter_model.safetensors) and mlx_lm (adapters.safetensors). ' +
        'A training checkpoint folder is an mlx_lm adapter. The source format is detected from its files.',
    )
    .argument('<source>', 'adapter folder to read')
    .argument('<target>', 'folder to write; created when missing')
    .addOption(new Option('--to <format>', 'format to write').choices(['peft', 'mlx']).makeOptionMandatory())
    .option('--base-model <name>', 'PEFT only: base_model_name_or_path to record (a Hugging Face name or folder)')
    .option('--use-rslora', 'PEFT only: write use_rslora: true, so PEFT scales by lora_alpha / sqrt(r)')
    .option('--model-config <folder>', 'mlx only: base model folder whose config.json gives the number of decoder layers')
    .option('--num-layers <count>', 'mlx only: num_layers to record, the number of last layers with LoRA, or -1 for all')
    .addOption(new Option('--dtype <dtype>', 'mlx only: storage dtype of the weights').choices(['F32', 'F16', 'BF16']))
    .action(async (source: string, target: string, flags: ConvertFlags) => {
      // Without an explicit backend, tfjs would start its cpu backend, which prints a banner about tfjs-node.
      await initBackend({ backend: 'auto' });
      const from = await detectAdapterFormat(source);
      await convertAdapter(source, target, await converterOptions(flags));
      terminal().out.write(`Converted ${source} (${from}) to ${target} (${flags.to}).\n`);
    });
}

async function converterOptions(flags: ConvertFlags): Promise<ConvertAdapterOptions> {
  if (flags.to === 'peft') {
    return {
      to: 'peft',
      ...(flags.baseModel === undefined ? {} : { baseModelNameOrPath: flags.baseModel }),
      ...(flags.useRslora === undefined ? {} : { useRslora: true }),
    };
  }
  const numHiddenLayers = flags.modelConfig === undefined ? undefined : (await loadModelConfig(flags.modelConfig)).numHiddenLayers;
  return {
    to: 'mlx',
    ...(flags.numLayers === undefined ? {} : { numLayers: Number(flags.numLayers) }),
    ...(numHiddenLayers === undefined ? {} : { numHiddenLayers }),
    ...(flags.dtype === undefined ? {} : { dtype: flags.dtype }),
  };
}
