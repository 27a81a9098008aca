/** Checking an adapter against the base model it is meant for. */
import { ShapeError } from '../errors.js';
import { expectedWeightShapes } from '../model/checkpoint.js';
import type { ModelConfig } from '../model/types.js';
import { parseLayerAdapterKey } from './keys.js';
import type { LoraAdapter } from './types.js';

/**
 * Checks that every LoRA pair of `adapter` fits the base model. The layer must exist and the
 * module must be a linear layer of the model. With the base weight `[out, in]`, `lora_a` must be
 * `[in, rank]` and `lora_b` `[rank, out]`, and both matrices of a pair must be present. A matrix
 * left in PEFT's transposed layout is named as such. Every problem is reported in one
 * {@link ShapeError} (`ADAPTER_SHAPE_MISMATCH`).
 *
 * NOTE: when `in`, `out` and the rank are all equal, a transposed pair has the right shape and
 * cannot be detected here. Only a numeric comparison with the source format catches it.
 */
export function validateAdapter(adapter: LoraAdapter, modelConfig: ModelConfig): void {
  const baseShapes = expectedWeightShapes(modelConfig);
  const problems: string[] = [];
  const matrices = new Set<string>();

  if (!Number.isInteger(adapter.rank) || adapter.rank < 1) {
    problems.push(`rank must be a positive integer, got ${adapter.rank}`);
  }
  if (!Number.isFinite(adapter.scale)) {
    problems.push(`scale must be a finite number, got ${adapter.scale}`);
  }

  for (const [key, tensor] of Object.entries(adapter.weights)) {
    const parsed = parseLayerAdapterKey(key);
    if (parsed === undefined) {
      problems.push(`${key} is not a model.layers.{i}.<module>.lora_a or .lora_b key`);
      continue;
    }
    matrices.add(key);

    const { layer, modulePath, matrix } = parsed;
    if (layer >= modelConfig.numHiddenLayers) {
      problems.push(`${key} is for layer ${layer}, but the model has ${modelConfig.numHiddenLayers} layers (0 to ${modelConfig.numHiddenLayers - 1})`);
      continue;
    }
    const baseShape = baseShapes[`model.layers.${layer}.${modulePath}.weight`];
    if (baseShape === undefined || baseShape.length !== 2) {
      problems.push(`${key} adapts "${modulePath}", which is not a linear layer of a ${modelConfig.modelType} decoder layer`);
      continue;
    }

    const [outFeatures, inFeatures] = baseShape as [number, number];
    const expected = matrix === 'lora_a' ? [inFeatures, adapter.rank] : [adapter.rank, outFeatures];
    const actual = tensor.shape;
    if (actual.length === 2 && actual[0] === expected[0] && actual[1] === expected[1]) {
      continue;
    }
    const transposed = actual.length === 2 && actual[0] === expected[1] && actual[1] === expected[0];
    problems.push(
      `${key} is [${actual.join(', ')}], expected [${expected.join(', ')}]` +
        (transposed ? ' (it is transposed: PEFT stores lora_A as [r, in] and lora_B as [out, r])' : ''),
    );
  }

  for (const key of matrices) {
    const partner = key.endsWith('.lora_a') ? `${key.slice(0, -7)}.lora_b` : `${key.slice(0, -7)}.lora_a`;
    if (!matrices.has(partner)) {
      problems.push(`${partner} is missing, so ${key} has no partner`);
    }
  }

  if (problems.length > 0) {
    throw new ShapeError(
      'ADAPTER_SHAPE_MISMATCH',
      `Adapter does not fit the base model (${modelConfig.modelType}, hidden ${modelConfig.hiddenSize}, ` +
        `${modelConfig.numHiddenLayers} layers, rank ${adapter.rank}): ${problems.slice(0, 10).join('; ')}` +
        `${problems.length > 10 ? `; and ${problems.length - 10} more` : ''}. Check that the adapter was trained on this model.`,
      { details: { problems } },
    );
  }
}
