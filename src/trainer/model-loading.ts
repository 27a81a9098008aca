/**
 * Loading the base model for training, with a fresh LoRA adapter or one read from disk.
 */
import * as tf from '@tensorflow/tfjs';

import { readAdapter, validateAdapter, type LoraAdapter } from '../adapters/index.js';
import type { NestedLearningConfig } from '../config/index.js';
import type { Logger } from '../logger.js';
import {
  CausalLM,
  loadCheckpointWeights,
  loadModelConfig,
  LORA_MODULE_PATHS,
  type LoraOptions,
  type LoraTargetModule,
} from '../model/index.js';

/**
 * Loads `config.baseModelPath` with LoRA adapters.
 *
 * Without `adapterPath` the adapter is fresh: rank, scale (`loraAlpha / loraRank`, or
 * `/ sqrt(loraRank)` with rsLoRA), target modules and layers (the last `loraLayers`) come from the
 * configuration. With `adapterPath` (PEFT or mlx_lm) the adapter's own rank, scale, modules and
 * layers apply, and the configured ones are ignored with a warning where they differ.
 */
export async function loadTrainingModel(config: NestedLearningConfig, logger: Logger): Promise<CausalLM> {
  const modelConfig = await loadModelConfig(config.baseModelPath);
  const adapter = config.adapterPath === undefined ? undefined : await readAdapter(config.adapterPath);

  try {
    if (adapter !== undefined) {
      validateAdapter(adapter, modelConfig);
    }
    const lora = adapter === undefined ? freshLoraOptions(config, modelConfig.numHiddenLayers) : adapterLoraOptions(config, adapter, logger);

    const weights = await loadCheckpointWeights(config.baseModelPath, modelConfig);
    let model: CausalLM;
    try {
      model = CausalLM.fromWeights({ config: modelConfig, weights, lora });
    } catch (error) {
      tf.dispose(Object.values(weights));
      throw error;
    }

    if (adapter !== undefined) {
      try {
        model.setLoraWeights(adapter.weights, adapter.scale);
      } catch (error) {
        model.dispose();
        throw error;
      }
    }
    return model;
  } finally {
    if (adapter !== undefined) {
      tf.dispose(Object.values(adapter.weights));
    }
  }
}

function freshLoraOptions(config: NestedLearningConfig, numHiddenLayers: number): LoraOptions {
  const count = config.loraLayers === 'all' ? numHiddenLayers : Math.min(config.loraLayers, numHiddenLayers);
  return {
    rank: config.loraRank,
    scale: config.useRslora ? config.loraAlpha / Math.sqrt(config.loraRank) : config.loraAlpha / config.loraRank,
    dropout: config.loraDropout,
    targetModules: config.loraTargetModules,
    layers: Array.from({ length: count }, (_, index) => numHiddenLayers - count + index),
    seed: config.seed,
  };
}

function adapterLoraOptions(config: NestedLearningConfig, adapter: LoraAdapter, logger: Logger): LoraOptions {
  const moduleByPath = new Map(Object.entries(LORA_MODULE_PATHS).map(([module, path]) => [path, module as LoraTargetModule]));
  const targetModules = adapter.targetModules.map((path) => moduleByPath.get(path) ?? path);

  const configuredScale = config.useRslora ? config.loraAlpha / Math.sqrt(config.loraRank) : config.loraAlpha / config.loraRank;
  if (adapter.rank !== config.loraRank || Math.abs(adapter.scale - configuredScale) > 1e-6 * Math.abs(configuredScale)) {
    logger.warn(
      `The adapter in ${config.adapterPath} has rank ${adapter.rank} and scale ${adapter.scale}; ` +
        `these replace the configured loraRank ${config.loraRank} and scale ${configuredScale}.`,
      { adapterPath: config.adapterPath, rank: adapter.rank, scale: adapter.scale },
    );
  }

  return {
    rank: adapter.rank,
    scale: adapter.scale,
    dropout: config.loraDropout,
    targetModules,
    layers: adapter.layers,
    seed: config.seed,
  };
}
