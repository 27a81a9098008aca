/**
 * Llama/Qwen2 decoder-only causal language model with LoRA adapters, in TensorFlow.js.
 */
import * as tf from '@tensorflow/tfjs';

import { ArgumentError, ShapeError } from '../errors.js';
import { generateTokens, type GenerateOptions } from './generate.js';
import { KVCache } from './kv-cache.js';
import {
  initialLoraA,
  loraModuleSpecs,
  resolveLoraOptions,
  type LoraModuleSpec,
  type LoraOptions,
  type LoraTargetModule,
  type ResolvedLoraOptions,
} from './lora.js';
import { maskedCrossEntropy } from './loss.js';
import { applyRotary, attention, linear, outputProjection, rmsNorm, swiGlu, type LoraBranch } from './ops.js';
import { SeededRandom } from './random.js';
import { RotaryTables } from './rope.js';
import type { ModelConfig } from './types.js';
import {
  buildDecoderWeights,
  disposeDecoderWeights,
  exportDecoderWeights,
  type DecoderWeights,
  type LayerWeights,
} from './weights.js';

/** Options of {@link CausalLM.fromWeights}. */
export interface CausalLMOptions {
  /** Architecture, usually from `loadModelConfig`. */
  config: ModelConfig;
  /**
   * Weights keyed by Hugging Face names, in Hugging Face layout (`[out, in]` for projections), float32.
   * The model takes ownership of every tensor in this record once construction succeeds: it disposes
   * them, now or in {@link CausalLM.dispose}, and the caller must not use or dispose them afterwards.
   * When construction fails, nothing has been disposed.
   */
  weights: Record<string, tf.Tensor>;
  /** LoRA adapters to add. Without this option the model has no trainable parameters. */
  lora?: LoraOptions;
}

/** Options of {@link CausalLM.forward}. */
export interface ForwardOptions {
  /**
   * `[batch, time]` mask, 1 for real tokens and 0 for padding. Padding may sit on the right (training)
   * or on the left (batched generation). With a cache it may cover the cached and the new positions
   * (`[batch, cached + time]`, as `transformers` passes it) or only the new ones (`[batch, time]`).
   */
  attentionMask?: tf.Tensor2D;
  /**
   * Apply LoRA dropout.
   * @default false
   */
  training?: boolean;
  /** Key/value cache to read earlier positions from and append these positions to. */
  cache?: KVCache;
  /**
   * `[batch, time]` int32 positions for the rotary embedding. Without it, positions are counted over real
   * tokens as `transformers` generation does: `cumsum(mask) - 1`, and 1 at padding positions.
   */
  positionIds?: tf.Tensor2D;
  /** Seed of the LoRA dropout masks. Without it the model draws one from its own seeded generator. */
  dropoutSeed?: number;
  /**
   * Compute logits for the last column (position `time - 1`) of each row only, `[batch, 1, vocab]`, as
   * generation with left padding needs.
   * @default false
   */
  lastPositionOnly?: boolean;
}

/** A batch for {@link CausalLM.lossAndGradients} and {@link CausalLM.computeLoss}, every field `[batch, time]`. */
export interface TrainingBatch {
  /** Token ids, nested rows or a flat row-major array. */
  inputIds: Int32Array | readonly (readonly number[])[];
  /** Target ids: position `t` predicts `labels[t]`. Ignored where `lossMask` is 0. */
  labels: Int32Array | readonly (readonly number[])[];
  /** 1 where the position counts towards the loss, 0 elsewhere. */
  lossMask: Float32Array | readonly (readonly number[])[];
  /** 1 for real tokens and 0 for padding, all ones when absent. */
  attentionMask?: Int32Array | Float32Array | readonly (readonly number[])[];
  /** Number of rows, required when the fields are flat arrays. */
  batchSize?: number;
  /** Number of positions per row, required when the fields are flat arrays. */
  seqLength?: number;
}

/** Summed loss of a batch. */
export interface LossResult {
  /** Sum of the token losses, owned (and disposed) by the caller. */
  lossSum: tf.Scalar;
  /** Number of counted positions (the sum of the loss mask). */
  tokenCount: number;
}

/** Summed loss of a batch and the gradients of the LoRA parameters. */
export interface LossAndGradients extends LossResult {
  /** Gradient of `lossSum` per LoRA parameter, keyed by adapter key and owned by the caller. */
  grads: Record<string, tf.Tensor>;
}

/** Options of {@link CausalLM.lossAndGradients}. */
export interface LossAndGradientsOptions {
  /**
   * Apply LoRA dropout.
   * @default true
   */
  training?: boolean;
  /** Seed of the LoRA dropout masks. */
  dropoutSeed?: number;
}

interface LoraPair {
  a: tf.Variable;
  b: tf.Variable;
}

/** Additive attention-mask value for hidden keys, chosen because exp(-1e9 - max) is 0 in float32. */
const MASKED = -1e9;

/**
 * A Llama or Qwen2 decoder with optional LoRA adapters.
 *
 * Base weights are plain tensors and never receive gradients; the LoRA parameters are the only
 * `tf.Variable`s. Each variable is registered in the tfjs engine under its adapter key (for example
 * `model.layers.0.self_attn.q_proj.lora_a`), so tfjs optimizers, which look variables up by name,
 * find them under the names of the adapter files.
 *
 * NOTE: tfjs allows one live variable per name. When a variable of another live model already uses an
 * adapter key as its name, this model registers its variable as `<key>#<n>` instead. Its
 * {@link CausalLM.loraParameters} and the gradients of {@link CausalLM.lossAndGradients} still use the
 * adapter key, so an optimizer that looks names up in the engine would update the other model. When
 * training, dispose a model before building another with the same adapter keys.
 */
export class CausalLM {
  readonly config: ModelConfig;
  /** LoRA settings with defaults filled in, or null without adapters. */
  readonly lora: ResolvedLoraOptions | null;
  /** LoRA parameters keyed by adapter key, `lora_a` `[in, rank]` and `lora_b` `[rank, out]`. */
  readonly loraParameters: Map<string, tf.Variable>;

  private readonly decoder: DecoderWeights;
  private readonly rotary: RotaryTables;
  private readonly loraSpecs: LoraModuleSpec[];
  private readonly loraByLayer: Partial<Record<LoraTargetModule, LoraPair>>[];
  private readonly dropoutRandom: SeededRandom;
  private scale: number;
  private merged = false;
  private disposed = false;

  private constructor(config: ModelConfig, decoder: DecoderWeights, lora: ResolvedLoraOptions | null) {
    this.config = config;
    this.decoder = decoder;
    this.rotary = new RotaryTables(config);
    this.lora = lora;
    this.scale = lora?.scale ?? 0;
    this.loraParameters = new Map();
    this.loraByLayer = Array.from({ length: config.numHiddenLayers }, () => ({}));
    this.loraSpecs = lora === null ? [] : loraModuleSpecs(lora, config);
    this.dropoutRandom = new SeededRandom((lora?.seed ?? 0) ^ 0x5bd1e995);

    if (lora !== null) {
      this.createLoraVariables(lora);
    }
  }

  /**
   * Builds a model from Hugging Face weights; see {@link CausalLMOptions.weights} for ownership.
   * Throws a {@link ShapeError} listing every missing, unexpected or misshapen weight.
   */
  static fromWeights(options: CausalLMOptions): CausalLM {
    const { config, weights } = options;
    checkConfig(config);
    const lora = options.lora === undefined ? null : resolveLoraOptions(options.lora, config);
    const decoder = buildDecoderWeights(config, weights);
    return new CausalLM(config, decoder, lora);
  }

  /** Multiplier of every adapter's output (mlx `scale`, PEFT `lora_alpha / r`). */
  get loraScale(): number {
    return this.scale;
  }

  set loraScale(value: number) {
    this.assertLive();
    this.assertNotMerged('change the LoRA scale');
    if (typeof value !== 'number' || !Number.isFinite(value)) {
      throw new ArgumentError('LORA_INVALID_OPTION', `Invalid LoRA scale ${String(value)}. Expected a finite number.`, {
        details: { scale: value },
      });
    }
    this.scale = value;
  }

  /** Whether {@link CausalLM.merge} has folded the adapters into the base weights. */
  get isMerged(): boolean {
    return this.merged;
  }

  /**
   * Computes logits `[batch, time, vocab]` (or `[batch, 1, vocab]` with `lastPositionOnly`) for int32
   * token ids `[batch, time]`. The caller owns the result, and every intermediate tensor is disposed.
   */
  forward(inputIds: tf.Tensor2D, options: ForwardOptions = {}): tf.Tensor3D {
    this.assertLive();
    if (inputIds.rank !== 2) {
      throw new ShapeError('MODEL_SHAPE_MISMATCH', `inputIds must be [batch, time], but has shape [${inputIds.shape.join(', ')}].`, {
        details: { shape: inputIds.shape },
      });
    }
    const [batch, time] = inputIds.shape;
    const ids = Int32Array.from(inputIds.dataSync());
    const mask = options.attentionMask === undefined ? null : Float32Array.from(options.attentionMask.dataSync());
    const positions = options.positionIds === undefined ? null : Int32Array.from(options.positionIds.dataSync());
    if (positions !== null && positions.length !== batch * time) {
      throw new ShapeError(
        'MODEL_SHAPE_MISMATCH',
        `positionIds has shape [${options.positionIds?.shape.join(', ')}], but inputIds has [${batch}, ${time}].`,
        { details: { positionIds: options.positionIds?.shape, inputIds: inputIds.shape } },
      );
    }

    return tf.tidy(() =>
      this.run(ids, batch, time, {
        mask,
        positions,
        cache: options.cache ?? null,
        dropoutSeed: this.resolveDropoutSeed(options.training ?? false, options.dropoutSeed),
        lastPositionOnly: options.lastPositionOnly ?? false,
      }),
    );
  }

  /** Computes the summed loss of a batch without dropout and without gradients. */
  computeLoss(batch: TrainingBatch): LossResult {
    this.assertLive();
    const prepared = prepareBatch(batch);
    let tokenCount = 0;
    const lossSum = tf.tidy(() => {
      const logits = this.run(prepared.inputIds, prepared.batchSize, prepared.seqLength, {
        mask: prepared.attentionMask,
        positions: null,
        cache: null,
        dropoutSeed: null,
        lastPositionOnly: false,
      });
      const labels = tf.tensor2d(prepared.labels, [prepared.batchSize, prepared.seqLength], 'int32');
      const lossMask = tf.tensor2d(prepared.lossMask, [prepared.batchSize, prepared.seqLength], 'float32');
      const result = maskedCrossEntropy(logits, labels, lossMask);
      tokenCount = result.tokenCount;
      return result.sum;
    });
    return { lossSum, tokenCount };
  }

  /**
   * Computes the summed cross-entropy of a batch and its gradients with respect to the LoRA parameters
   * only. Frozen weights and the embedding lookup are not on the differentiated path, so no gradient is
   * computed for them.
   */
  lossAndGradients(batch: TrainingBatch, options: LossAndGradientsOptions = {}): LossAndGradients {
    this.assertLive();
    this.assertNotMerged('compute LoRA gradients');
    if (this.loraParameters.size === 0) {
      throw new ArgumentError(
        'MODEL_NO_LORA',
        'The model has no LoRA parameters to compute gradients for. Build it with the `lora` option.',
      );
    }

    const prepared = prepareBatch(batch);
    const dropoutSeed = this.resolveDropoutSeed(options.training ?? true, options.dropoutSeed);
    const variables = [...this.loraParameters.values()];
    let tokenCount = 0;

    const labels = tf.tensor2d(prepared.labels, [prepared.batchSize, prepared.seqLength], 'int32');
    const lossMask = tf.tensor2d(prepared.lossMask, [prepared.batchSize, prepared.seqLength], 'float32');
    try {
      const { value, grads } = tf.variableGrads(() => {
        const logits = this.run(prepared.inputIds, prepared.batchSize, prepared.seqLength, {
          mask: prepared.attentionMask,
          positions: null,
          cache: null,
          dropoutSeed,
          lastPositionOnly: false,
        });
        const result = maskedCrossEntropy(logits, labels, lossMask);
        tokenCount = result.tokenCount;
        return result.sum;
      }, variables);

      const byKey: Record<string, tf.Tensor> = {};
      for (const [key, variable] of this.loraParameters) {
        const gradient = grads[variable.name];
        if (gradient !== undefined) {
          byKey[key] = gradient;
        }
      }
      return { lossSum: value, tokenCount, grads: byKey };
    } finally {
      labels.dispose();
      lossMask.dispose();
    }
  }

  /**
   * Sets the LoRA parameters from tensors keyed by adapter key (`lora_a` `[in, rank]`, `lora_b`
   * `[rank, out]`), and the scale when given. Every parameter of the model must be present and no other
   * key. The variables share the tensors' data; the caller still owns and may dispose the tensors.
   */
  setLoraWeights(weights: Record<string, tf.Tensor>, scale?: number): void {
    this.assertLive();
    this.assertNotMerged('set LoRA weights');

    const missing = [...this.loraParameters.keys()].filter((key) => weights[key] === undefined);
    const unexpected = Object.keys(weights).filter((key) => !this.loraParameters.has(key));
    const wrongShape: string[] = [];
    for (const [key, variable] of this.loraParameters) {
      const tensor = weights[key];
      if (tensor !== undefined && (tensor.rank !== 2 || tensor.shape[0] !== variable.shape[0] || tensor.shape[1] !== variable.shape[1])) {
        wrongShape.push(`${key} [${tensor.shape.join(', ')}], expected [${variable.shape.join(', ')}]`);
      }
    }
    if (missing.length > 0 || unexpected.length > 0 || wrongShape.length > 0) {
      const parts = [
        missing.length > 0 ? `missing: ${missing.slice(0, 6).join(', ')}${missing.length > 6 ? ', ...' : ''}` : '',
        unexpected.length > 0 ? `unexpected: ${unexpected.slice(0, 6).join(', ')}${unexpected.length > 6 ? ', ...' : ''}` : '',
        wrongShape.length > 0 ? `wrong shape: ${wrongShape.slice(0, 6).join('; ')}` : '',
      ].filter((part) => part !== '');
      throw new ShapeError(
        'LORA_WEIGHTS_MISMATCH',
        `The LoRA weights do not match the model's adapters (rank ${this.lora?.rank ?? 0}, ${this.loraParameters.size} parameters): ` +
          `${parts.join('; ')}. Build the model with the adapter's rank, target modules and layers.`,
        { details: { missing, unexpected, wrongShape } },
      );
    }

    if (scale !== undefined) {
      this.loraScale = scale;
    }
    for (const [key, variable] of this.loraParameters) {
      const tensor = weights[key] as tf.Tensor;
      if (tensor.dtype === 'float32') {
        variable.assign(tensor);
      } else {
        const widened = tf.cast(tensor, 'float32');
        variable.assign(widened);
        widened.dispose();
      }
    }
  }

  /** Returns copies of the LoRA parameters keyed by adapter key, owned by the caller. */
  getLoraWeights(): Record<string, tf.Tensor> {
    this.assertLive();
    const result: Record<string, tf.Tensor> = {};
    for (const [key, variable] of this.loraParameters) {
      result[key] = tf.clone(variable);
    }
    return result;
  }

  /**
   * Folds every adapter into its base weight, `W += scale * A @ B`, so that inference runs without the
   * LoRA branch. Training and changes to the adapters or the scale raise an error until {@link CausalLM.unmerge}.
   */
  merge(): void {
    this.assertLive();
    if (this.merged) {
      throw new ArgumentError('MODEL_ALREADY_MERGED', 'The adapters are already merged into the base weights. Call unmerge() first.');
    }
    this.foldAdapters(1);
    this.merged = true;
  }

  /**
   * Subtracts the adapters merged by {@link CausalLM.merge} from the base weights. The restored weights
   * equal the originals up to one float32 rounding per element.
   */
  unmerge(): void {
    this.assertLive();
    if (!this.merged) {
      throw new ArgumentError('MODEL_NOT_MERGED', 'The adapters are not merged, so there is nothing to unmerge.');
    }
    this.foldAdapters(-1);
    this.merged = false;
  }

  /**
   * Returns copies of the base weights under Hugging Face names and layout (with the adapters folded in
   * while merged), for example to save a merged model. The caller owns them.
   */
  getWeights(): Record<string, tf.Tensor> {
    this.assertLive();
    return exportDecoderWeights(this.config, this.decoder);
  }

  /**
   * Generates tokens after each prompt with a key/value cache (or without, with `useCache: false`), and
   * returns the new tokens of each prompt, ending with the stop token when one was produced.
   */
  generate(promptIds: readonly number[] | readonly (readonly number[])[], options: GenerateOptions = {}): number[][] {
    this.assertLive();
    return generateTokens(this, promptIds, options);
  }

  /** Creates an empty key/value cache for this model. */
  createCache(): KVCache {
    return new KVCache(this.config.numHiddenLayers);
  }

  /** Disposes the weights, the LoRA variables and every other tensor the model holds. Safe to call twice. */
  dispose(): void {
    if (this.disposed) {
      return;
    }
    disposeDecoderWeights(this.decoder);
    for (const variable of this.loraParameters.values()) {
      variable.dispose();
    }
    this.loraParameters.clear();
    this.rotary.dispose();
    this.disposed = true;
  }

  private createLoraVariables(lora: ResolvedLoraOptions): void {
    const initialA = initialLoraA(this.loraSpecs, lora.rank, lora.seed);
    this.loraSpecs.forEach((spec, index) => {
      const a = tf.tidy(() =>
        tf.variable(tf.tensor2d(initialA[index] as Float32Array, [spec.inFeatures, lora.rank]), true, engineName(spec.keyA)),
      );
      const b = tf.tidy(() => tf.variable(tf.zeros([lora.rank, spec.outFeatures]), true, engineName(spec.keyB)));
      this.loraParameters.set(spec.keyA, a);
      this.loraParameters.set(spec.keyB, b);
      (this.loraByLayer[spec.layer] as Partial<Record<LoraTargetModule, LoraPair>>)[spec.module] = { a, b };
    });
  }

  private foldAdapters(sign: 1 | -1): void {
    for (const spec of this.loraSpecs) {
      const pair = this.loraByLayer[spec.layer]?.[spec.module] as LoraPair;
      const projection = (this.decoder.layers[spec.layer] as LayerWeights).projections[spec.module];
      const previous = projection.weight;
      projection.weight = tf.tidy(() => {
        const delta = tf.mul(tf.matMul(pair.a, pair.b), this.scale);
        return sign === 1 ? tf.add(previous, delta) : tf.sub(previous, delta);
      }) as tf.Tensor2D;
      previous.dispose();
    }
  }

  private resolveDropoutSeed(training: boolean, seed: number | undefined): number | null {
    if (!training || this.lora === null || this.lora.dropout === 0 || this.merged) {
      return null;
    }
    return seed ?? this.dropoutRandom.nextUint32();
  }

  private assertLive(): void {
    if (this.disposed) {
      throw new ArgumentError('MODEL_DISPOSED', 'The model has been disposed. Load it again to use it.');
    }
  }

  private assertNotMerged(action: string): void {
    if (this.merged) {
      throw new ArgumentError('MODEL_MERGED', `Cannot ${action} while the adapters are merged into the base weights. Call unmerge() first.`);
    }
  }

  /** Runs the decoder and the output projection. Callers run it inside a tf.tidy or tf.variableGrads. */
  private run(ids: Int32Array, batch: number, time: number, options: RunOptions): tf.Tensor3D {
    const config = this.config;
    checkTokenIds(ids, config.vocabSize);

    const cache = options.cache;
    cache?.checkBatch(batch);
    const past = cache?.length ?? 0;
    const total = past + time;

    const fullMask = combineMasks(options.mask, cache, batch, time);
    const positions = options.positions ?? positionsFromMask(fullMask, batch, time, past);
    const additiveMask = buildAttentionMask(fullMask, batch, time, past);
    const [cos, sin] = this.rotaryFactors(positions, batch, time);
    const dropoutRandom = options.dropoutSeed === null ? null : new SeededRandom(options.dropoutSeed);

    const flatIds = tf.tensor1d(ids, 'int32');
    // The embedding lookup depends on no variable, so tfjs leaves it off the differentiated path.
    let hidden = tf.gather(this.decoder.embedTokens, flatIds) as tf.Tensor2D;
    let streamNeedsGradient = false;

    for (let index = 0; index < config.numHiddenLayers; index++) {
      const layerOutput = this.runLayer(index, hidden, streamNeedsGradient, {
        batch,
        time,
        additiveMask,
        cos,
        sin,
        cache,
        dropoutRandom,
      });
      hidden = layerOutput.hidden;
      streamNeedsGradient = layerOutput.needsGradient;
    }

    hidden = rmsNorm(hidden, this.decoder.finalNorm, config.rmsNormEps);
    let rows = time;
    if (options.lastPositionOnly) {
      const lastRows = Int32Array.from({ length: batch }, (_, row) => row * time + time - 1);
      hidden = tf.gather(hidden, tf.tensor1d(lastRows, 'int32')) as tf.Tensor2D;
      rows = 1;
    }

    const tiedHead = config.tieWordEmbeddings ? this.decoder.embedTokens : null;
    const logits = outputProjection(hidden, this.decoder.outputHeadTransposed, tiedHead, streamNeedsGradient);

    cache?.commit(batch, fullMask ?? new Float32Array(batch * total).fill(1), total);
    return tf.reshape(logits, [batch, rows, config.vocabSize]) as tf.Tensor3D;
  }

  /**
   * Runs one decoder layer. `inputNeedsGradient` tells whether anything trainable lies upstream of
   * `input`; the returned flag tells the same of the output.
   */
  private runLayer(
    index: number,
    input: tf.Tensor2D,
    inputNeedsGradient: boolean,
    context: LayerContext,
  ): { hidden: tf.Tensor2D; needsGradient: boolean } {
    const config = this.config;
    const weights = this.decoder.layers[index] as LayerWeights;
    const adapters = this.merged ? {} : (this.loraByLayer[index] as Partial<Record<LoraTargetModule, LoraPair>>);
    const { batch, time } = context;
    const rows = batch * time;
    const headDim = config.headDim;
    const heads = config.numAttentionHeads;
    const kvHeads = config.numKeyValueHeads;

    const project = (module: LoraTargetModule, x: tf.Tensor2D, xNeedsGradient: boolean): tf.Tensor2D => {
      const pair = adapters[module];
      const projection = weights.projections[module];
      if (pair === undefined) {
        return linear(x, projection.weight, projection.bias, null, xNeedsGradient);
      }
      const branch: LoraBranch = {
        a: pair.a as tf.Tensor2D,
        b: pair.b as tf.Tensor2D,
        scale: this.scale,
        dropoutMask: this.dropoutMask(context, rows, x.shape[1]),
      };
      return linear(x, projection.weight, projection.bias, branch, xNeedsGradient);
    };
    const adapted = (module: LoraTargetModule): boolean => adapters[module] !== undefined;
    // [rows, count * headDim] -> [batch, count, time, headDim], with the rotary embedding for queries and keys.
    const splitHeads = (projected: tf.Tensor2D, count: number, rotate: boolean): tf.Tensor4D => {
      let perHead = tf.reshape(projected, [batch, time, count, headDim]) as tf.Tensor4D;
      if (rotate) {
        perHead = applyRotary(perHead, context.cos, context.sin, this.rotary.rotateHalf);
      }
      return tf.transpose(perHead, [0, 2, 1, 3]) as tf.Tensor4D;
    };

    // Attention block.
    const normed = rmsNorm(input, weights.inputNorm, config.rmsNormEps);
    const queryNeedsGradient = inputNeedsGradient || adapted('q_proj');
    const keyNeedsGradient = inputNeedsGradient || adapted('k_proj');
    const valueNeedsGradient = inputNeedsGradient || adapted('v_proj');

    const query = splitHeads(project('q_proj', normed, inputNeedsGradient), heads, true);
    let key = splitHeads(project('k_proj', normed, inputNeedsGradient), kvHeads, true);
    let value = splitHeads(project('v_proj', normed, inputNeedsGradient), kvHeads, false);

    if (context.cache !== null) {
      const cached = context.cache.layer(index);
      if (cached !== null) {
        key = tf.concat([cached.key, key], 2);
        value = tf.concat([cached.value, value], 2);
      }
      context.cache.setLayer(index, key, value);
    }

    const attended = attention(query, key, value, context.additiveMask, 1 / Math.sqrt(headDim), {
      query: queryNeedsGradient,
      key: keyNeedsGradient,
      value: valueNeedsGradient,
    });
    const attendedNeedsGradient = queryNeedsGradient || keyNeedsGradient || valueNeedsGradient;
    const combinedHeads = tf.reshape(tf.transpose(attended, [0, 2, 1, 3]), [rows, heads * headDim]) as tf.Tensor2D;
    const attentionOutput = project('o_proj', combinedHeads, attendedNeedsGradient);
    const afterAttention = tf.add(input, attentionOutput) as tf.Tensor2D;
    const streamNeedsGradient = inputNeedsGradient || attendedNeedsGradient || adapted('o_proj');

    // MLP block.
    const normedAgain = rmsNorm(afterAttention, weights.postAttentionNorm, config.rmsNormEps);
    const gate = project('gate_proj', normedAgain, streamNeedsGradient);
    const up = project('up_proj', normedAgain, streamNeedsGradient);
    const gateNeedsGradient = streamNeedsGradient || adapted('gate_proj');
    const upNeedsGradient = streamNeedsGradient || adapted('up_proj');
    const activated = swiGlu(gate, up, { gate: gateNeedsGradient, up: upNeedsGradient });
    const down = project('down_proj', activated, gateNeedsGradient || upNeedsGradient);

    return {
      hidden: tf.add(afterAttention, down) as tf.Tensor2D,
      needsGradient: streamNeedsGradient || gateNeedsGradient || upNeedsGradient || adapted('down_proj'),
    };
  }

  private dropoutMask(context: LayerContext, rows: number, features: number): tf.Tensor2D | null {
    if (context.dropoutRandom === null || this.lora === null) {
      return null;
    }
    const rate = this.lora.dropout;
    const seed = context.dropoutRandom.nextUint32();
    return tf.tidy(() => {
      const keep = tf.cast(tf.greaterEqual(tf.randomUniform([rows, features], 0, 1, 'float32', seed), rate), 'float32');
      return tf.mul(keep, 1 / (1 - rate)) as tf.Tensor2D;
    });
  }

  /** Returns cos and sin factors `[batch or 1, time, 1, headDim]` for the positions. */
  private rotaryFactors(positions: Int32Array, batch: number, time: number): [tf.Tensor4D, tf.Tensor4D] {
    let maxPosition = 0;
    for (const position of positions) {
      if (position < 0) {
        throw new ArgumentError('MODEL_INVALID_POSITION', `Position id ${position} is negative. Position ids start at 0.`, {
          details: { position },
        });
      }
      maxPosition = Math.max(maxPosition, position);
    }
    const [cosTable, sinTable] = this.rotary.tables(maxPosition + 1);

    // Rows with identical positions (no padding) share one set of factors.
    const shared = positions.every((position, i) => position === positions[i % time]);
    const rows = shared ? 1 : batch;
    const indices = tf.tensor1d(shared ? positions.subarray(0, time) : positions, 'int32');
    const headDim = this.config.headDim;
    const cos = tf.reshape(tf.gather(cosTable, indices), [rows, time, 1, headDim]) as tf.Tensor4D;
    const sin = tf.reshape(tf.gather(sinTable, indices), [rows, time, 1, headDim]) as tf.Tensor4D;
    return [cos, sin];
  }
}

interface RunOptions {
  mask: Float32Array | null;
  positions: Int32Array | null;
  cache: KVCache | null;
  dropoutSeed: number | null;
  lastPositionOnly: boolean;
}

interface LayerContext {
  batch: number;
  time: number;
  additiveMask: tf.Tensor4D;
  cos: tf.Tensor4D;
  sin: tf.Tensor4D;
  cache: KVCache | null;
  dropoutRandom: SeededRandom | null;
}

/** Returns the engine name for a variable: the adapter key, or `<key>#<n>` while another live variable uses the key. */
function engineName(key: string): string {
  const registered = tf.engine().registeredVariables;
  if (registered[key] === undefined) {
    return key;
  }
  for (let n = 2; ; n++) {
    const candidate = `${key}#${n}`;
    if (registered[candidate] === undefined) {
      return candidate;
    }
  }
}

function checkConfig(config: ModelConfig): void {
  const problems: string[] = [];
  const positive = (name: keyof ModelConfig): void => {
    const value = config[name];
    if (typeof value !== 'number' || !Number.isInteger(value) || value < 1) {
      problems.push(`${name} must be a positive integer, got ${JSON.stringify(value)}`);
    }
  };
  positive('hiddenSize');
  positive('intermediateSize');
  positive('numHiddenLayers');
  positive('numAttentionHeads');
  positive('numKeyValueHeads');
  positive('headDim');
  positive('vocabSize');
  if (config.headDim % 2 !== 0) {
    problems.push(`headDim must be even for rotary embeddings, got ${config.headDim}`);
  }
  if (config.numAttentionHeads % config.numKeyValueHeads !== 0) {
    problems.push(`numAttentionHeads (${config.numAttentionHeads}) must be a multiple of numKeyValueHeads (${config.numKeyValueHeads})`);
  }
  if (!(config.rmsNormEps > 0)) {
    problems.push(`rmsNormEps must be positive, got ${config.rmsNormEps}`);
  }
  if (!(config.ropeTheta > 0)) {
    problems.push(`ropeTheta must be positive, got ${config.ropeTheta}`);
  }
  if (problems.length > 0) {
    throw new ArgumentError('MODEL_INVALID_CONFIG', `Invalid model config: ${problems.join('; ')}.`, { details: { problems } });
  }
}

function checkTokenIds(ids: Int32Array, vocabSize: number): void {
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i] as number;
    if (id < 0 || id >= vocabSize) {
      throw new ArgumentError(
        'MODEL_TOKEN_OUT_OF_RANGE',
        `Token id ${id} at flat index ${i} is outside the vocabulary [0, ${vocabSize - 1}]. Check that the tokenizer matches the model.`,
        { details: { id, index: i, vocabSize } },
      );
    }
  }
}

/** Returns the `[batch, cached + time]` mask of cached and new positions, or null when every position is real. */
function combineMasks(mask: Float32Array | null, cache: KVCache | null, batch: number, time: number): Float32Array | null {
  const past = cache?.length ?? 0;
  const total = past + time;
  if (mask !== null && mask.length !== batch * time && mask.length !== batch * total) {
    throw new ShapeError(
      'MODEL_SHAPE_MISMATCH',
      `attentionMask has ${mask.length} values, but the input needs [${batch}, ${time}]` +
        (past > 0 ? ` or [${batch}, ${total}] with the ${past} cached positions.` : '.'),
      { details: { maskSize: mask.length, batch, time, cached: past } },
    );
  }

  const cachedMask = cache !== null && past > 0 ? cache.attentionMask : null;
  if (mask === null && cachedMask === null) {
    return null;
  }
  if (mask !== null && mask.length === batch * total) {
    return mask;
  }

  const full = new Float32Array(batch * total).fill(1);
  for (let row = 0; row < batch; row++) {
    if (cachedMask !== null) {
      full.set(cachedMask.subarray(row * past, (row + 1) * past), row * total);
    }
    if (mask !== null) {
      full.set(mask.subarray(row * time, (row + 1) * time), row * total + past);
    }
  }
  return full;
}

/** Computes positions `cumsum(mask) - 1` (1 at padding) for the new positions, or `past + t` without a mask. */
function positionsFromMask(fullMask: Float32Array | null, batch: number, time: number, past: number): Int32Array {
  const positions = new Int32Array(batch * time);
  const total = past + time;
  for (let row = 0; row < batch; row++) {
    let count = 0;
    for (let column = 0; column < total; column++) {
      const real = fullMask === null || fullMask[row * total + column] !== 0;
      if (real) {
        count++;
      }
      if (column >= past) {
        positions[row * time + column - past] = real ? count - 1 : 1;
      }
    }
  }
  return positions;
}

/**
 * Builds the additive mask `[batch or 1, 1, time, cached + time]`: 0 where query `i` may read key `j`
 * (`j <= cached + i` and key `j` is a real token), {@link MASKED} elsewhere.
 */
function buildAttentionMask(fullMask: Float32Array | null, batch: number, time: number, past: number): tf.Tensor4D {
  const total = past + time;
  const rows = fullMask === null ? 1 : batch;
  const values = new Float32Array(rows * time * total).fill(MASKED);
  for (let row = 0; row < rows; row++) {
    for (let query = 0; query < time; query++) {
      const offset = (row * time + query) * total;
      for (let key = 0; key <= past + query; key++) {
        if (fullMask === null || fullMask[row * total + key] !== 0) {
          values[offset + key] = 0;
        }
      }
    }
  }
  return tf.tensor4d(values, [rows, 1, time, total]);
}

interface PreparedBatch {
  inputIds: Int32Array;
  labels: Int32Array;
  lossMask: Float32Array;
  attentionMask: Float32Array | null;
  batchSize: number;
  seqLength: number;
}

function prepareBatch(batch: TrainingBatch): PreparedBatch {
  let batchSize = batch.batchSize;
  let seqLength = batch.seqLength;
  if (!(batch.inputIds instanceof Int32Array)) {
    batchSize = batch.inputIds.length;
    seqLength = batch.inputIds[0]?.length ?? 0;
  }
  if (batchSize === undefined || seqLength === undefined || batchSize < 1 || seqLength < 1) {
    throw new ArgumentError(
      'MODEL_INVALID_BATCH',
      'The batch needs at least one row and one position; with flat arrays, also set batchSize and seqLength.',
      { details: { batchSize, seqLength } },
    );
  }
  const size = batchSize * seqLength;
  const rows = batchSize;
  const columns = seqLength;

  const flatten = <T extends Int32Array | Float32Array>(
    name: string,
    value: T | readonly (readonly number[])[],
    make: (length: number) => T,
  ): T => {
    if (ArrayBuffer.isView(value)) {
      if (value.length !== size) {
        throw batchShapeError(name, `${value.length} values`, rows, columns);
      }
      return value as T;
    }
    const rowsValue = value as readonly (readonly number[])[];
    if (rowsValue.length !== rows || rowsValue.some((row) => row.length !== columns)) {
      throw batchShapeError(name, `${rowsValue.length} rows of lengths ${[...new Set(rowsValue.map((row) => row.length))].join('/')}`, rows, columns);
    }
    const flat = make(size);
    rowsValue.forEach((row, r) => flat.set(row, r * columns));
    return flat;
  };

  const attentionMaskSource = batch.attentionMask;
  let attentionMask: Float32Array | null = null;
  if (attentionMaskSource !== undefined) {
    const flat = ArrayBuffer.isView(attentionMaskSource)
      ? Float32Array.from(attentionMaskSource as Int32Array | Float32Array)
      : (attentionMaskSource as readonly (readonly number[])[]);
    attentionMask = flatten('attentionMask', flat, (n) => new Float32Array(n));
  }

  return {
    inputIds: flatten('inputIds', batch.inputIds, (n) => new Int32Array(n)),
    labels: flatten('labels', batch.labels, (n) => new Int32Array(n)),
    lossMask: flatten('lossMask', batch.lossMask, (n) => new Float32Array(n)),
    attentionMask,
    batchSize,
    seqLength,
  };
}

function batchShapeError(name: string, actual: string, rows: number, columns: number): ShapeError {
  return new ShapeError(
    'MODEL_INVALID_BATCH',
    `Batch field ${name} has ${actual}, but the batch is [${rows}, ${columns}]. Give every field the shape of inputIds.`,
    { details: { field: name, rows, columns } },
  );
}
