/**
 * Checking Hugging Face weights against a {@link ModelConfig} and converting them to the layout the
 * decoder computes with.
 */
import * as tf from '@tensorflow/tfjs';

import { ShapeError } from '../errors.js';
import { expectedWeightShapes } from './checkpoint.js';
import { LORA_MODULE_PATHS, LORA_TARGET_MODULES, type LoraTargetModule } from './lora.js';
import type { ModelConfig } from './types.js';

/** A frozen projection, stored `[in, out]` so that the forward product needs no transpose. */
export interface ProjectionWeights {
  weight: tf.Tensor2D;
  bias: tf.Tensor1D | null;
}

/** Frozen weights of one decoder layer. */
export interface LayerWeights {
  inputNorm: tf.Tensor1D;
  postAttentionNorm: tf.Tensor1D;
  projections: Record<LoraTargetModule, ProjectionWeights>;
}

/** Frozen weights of the whole decoder. */
export interface DecoderWeights {
  /** `[vocab, hidden]`, the embedding table (and the output matrix when embeddings are tied). */
  embedTokens: tf.Tensor2D;
  /**
   * `[hidden, vocab]`, the output matrix transposed, for the logits product.
   * NOTE: with tied embeddings this is a second copy of the embedding table, because the lookup and the
   * logits product each need their own layout for speed on wasm.
   */
  outputHeadTransposed: tf.Tensor2D;
  finalNorm: tf.Tensor1D;
  layers: LayerWeights[];
}

/**
 * Lists every weight a checkpoint of this architecture holds, with its Hugging Face shape (`[out, in]`
 * for projections), in checkpoint order: {@link expectedWeightShapes} as a Map.
 */
export function decoderWeightShapes(config: ModelConfig): Map<string, number[]> {
  return new Map(Object.entries(expectedWeightShapes(config)));
}

/**
 * Checks `weights` against the architecture and converts them: projection matrices and the output
 * matrix are transposed to `[in, out]`. Every problem is reported in one {@link ShapeError}, and on
 * error no tensor has been disposed. On success the decoder owns every tensor of `weights`: those it
 * keeps are disposed by {@link disposeDecoderWeights}, the others (replaced by a transposed copy, or
 * ignored) are disposed here.
 *
 * Ignored names: `lm_head.weight` when embeddings are tied, and the `rotary_emb.inv_freq` buffers older
 * checkpoints carry.
 */
export function buildDecoderWeights(config: ModelConfig, weights: Record<string, tf.Tensor>): DecoderWeights {
  const expected = decoderWeightShapes(config);
  checkWeights(config, weights, expected);

  const take = (name: string): tf.Tensor => weights[name] as tf.Tensor;
  const transposed = (name: string): tf.Tensor2D => tf.keep(tf.transpose(take(name) as tf.Tensor2D));

  const layers: LayerWeights[] = [];
  for (let layer = 0; layer < config.numHiddenLayers; layer++) {
    const prefix = `model.layers.${layer}`;
    const projections = {} as Record<LoraTargetModule, ProjectionWeights>;
    for (const module of LORA_TARGET_MODULES) {
      const name = `${prefix}.${LORA_MODULE_PATHS[module]}`;
      projections[module] = {
        weight: transposed(`${name}.weight`),
        bias: expected.has(`${name}.bias`) ? (take(`${name}.bias`) as tf.Tensor1D) : null,
      };
    }
    layers.push({
      inputNorm: take(`${prefix}.input_layernorm.weight`) as tf.Tensor1D,
      postAttentionNorm: take(`${prefix}.post_attention_layernorm.weight`) as tf.Tensor1D,
      projections,
    });
  }

  const embedTokens = take('model.embed_tokens.weight') as tf.Tensor2D;
  const decoder: DecoderWeights = {
    embedTokens,
    outputHeadTransposed: transposed(config.tieWordEmbeddings ? 'model.embed_tokens.weight' : 'lm_head.weight'),
    finalNorm: take('model.norm.weight') as tf.Tensor1D,
    layers,
  };

  // Dispose what the decoder does not keep: the [out, in] originals and the ignored names.
  const keptTensors = new Set<tf.Tensor>(decoderTensors(decoder));
  for (const tensor of Object.values(weights)) {
    if (!keptTensors.has(tensor) && !tensor.isDisposed) {
      tensor.dispose();
    }
  }
  return decoder;
}

/** Lists every tensor the decoder holds. */
export function decoderTensors(decoder: DecoderWeights): tf.Tensor[] {
  const tensors: tf.Tensor[] = [decoder.embedTokens, decoder.outputHeadTransposed, decoder.finalNorm];
  for (const layer of decoder.layers) {
    tensors.push(layer.inputNorm, layer.postAttentionNorm);
    for (const module of LORA_TARGET_MODULES) {
      const projection = layer.projections[module];
      tensors.push(projection.weight);
      if (projection.bias !== null) {
        tensors.push(projection.bias);
      }
    }
  }
  return tensors;
}

/** Disposes every tensor the decoder holds. */
export function disposeDecoderWeights(decoder: DecoderWeights): void {
  for (const tensor of decoderTensors(decoder)) {
    if (!tensor.isDisposed) {
      tensor.dispose();
    }
  }
}

/** Returns copies of the decoder weights under Hugging Face names and in Hugging Face layout (`[out, in]`). */
export function exportDecoderWeights(config: ModelConfig, decoder: DecoderWeights): Record<string, tf.Tensor> {
  return tf.tidy(() => {
    const result: Record<string, tf.Tensor> = {};
    result['model.embed_tokens.weight'] = tf.clone(decoder.embedTokens);
    decoder.layers.forEach((layer, index) => {
      const prefix = `model.layers.${index}`;
      result[`${prefix}.input_layernorm.weight`] = tf.clone(layer.inputNorm);
      result[`${prefix}.post_attention_layernorm.weight`] = tf.clone(layer.postAttentionNorm);
      for (const module of LORA_TARGET_MODULES) {
        const projection = layer.projections[module];
        const name = `${prefix}.${LORA_MODULE_PATHS[module]}`;
        result[`${name}.weight`] = tf.transpose(projection.weight);
        if (projection.bias !== null) {
          result[`${name}.bias`] = tf.clone(projection.bias);
        }
      }
    });
    result['model.norm.weight'] = tf.clone(decoder.finalNorm);
    if (!config.tieWordEmbeddings) {
      result['lm_head.weight'] = tf.transpose(decoder.outputHeadTransposed);
    }
    return result;
  });
}

function isIgnoredName(name: string, config: ModelConfig): boolean {
  return name.endsWith('rotary_emb.inv_freq') || (config.tieWordEmbeddings && name === 'lm_head.weight');
}

function checkWeights(config: ModelConfig, weights: Record<string, tf.Tensor>, expected: Map<string, number[]>): void {
  const missing: string[] = [];
  const wrongShape: string[] = [];
  const wrongType: string[] = [];
  const unexpected: string[] = [];

  for (const [name, shape] of expected) {
    const tensor = weights[name];
    if (tensor === undefined) {
      missing.push(name);
      continue;
    }
    if (tensor.isDisposed) {
      wrongType.push(`${name} (disposed)`);
      continue;
    }
    if (tensor.shape.length !== shape.length || tensor.shape.some((size, i) => size !== shape[i])) {
      wrongShape.push(`${name} [${tensor.shape.join(', ')}], expected [${shape.join(', ')}]`);
    }
    if (tensor.dtype !== 'float32') {
      wrongType.push(`${name} (${tensor.dtype})`);
    }
  }
  for (const name of Object.keys(weights)) {
    if (!expected.has(name) && !isIgnoredName(name, config)) {
      unexpected.push(name);
    }
  }

  const problems: string[] = [];
  const list = (label: string, names: string[]): void => {
    if (names.length > 0) {
      const listed = names.slice(0, 8).join('; ');
      problems.push(`${label} (${names.length}): ${listed}${names.length > 8 ? '; ...' : ''}`);
    }
  };
  list('missing', missing);
  list('wrong shape', wrongShape);
  list('not float32', wrongType);
  list('unexpected', unexpected);

  if (problems.length > 0) {
    throw new ShapeError(
      'MODEL_WEIGHTS_MISMATCH',
      `The weights do not match the ${config.modelType} architecture of the config ` +
        `(${config.numHiddenLayers} layers, hidden ${config.hiddenSize}): ${problems.join('. ')}. ` +
        'Check that config.json and the weight files come from the same checkpoint.',
      { details: { missing, wrongShape, wrongType, unexpected } },
    );
  }
}
