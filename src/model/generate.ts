/**
 * Token generation for {@link CausalLM}: greedy or sampled, with or without a key/value cache.
 */
import * as tf from '@tensorflow/tfjs';

import { ArgumentError } from '../errors.js';
import type { CausalLM } from './causal-lm.js';
import { SeededRandom } from './random.js';
import { sampleToken, type SamplingOptions } from './sampling.js';

/** Options of {@link CausalLM.generate}. */
export interface GenerateOptions {
  /**
   * Maximum number of tokens to generate per prompt.
   * @default 128
   */
  maxNewTokens?: number;
  /**
   * Softmax temperature. 0 picks the most likely token (greedy decoding).
   * @default 0
   */
  temperature?: number;
  /**
   * Sample only from the `topK` most likely tokens. 0 disables the filter.
   * @default 0
   */
  topK?: number;
  /**
   * Sample only from the smallest set of most likely tokens whose probabilities sum to at least `topP`.
   * 1 disables the filter.
   * @default 1
   */
  topP?: number;
  /**
   * Tokens that end a sequence. The stop token is included in the output.
   * @default the model config's `eos_token_id`, or none
   */
  stopTokenIds?: readonly number[];
  /**
   * Seed of the sampling generator. The same seed, prompts and model give the same tokens.
   * @default 0
   */
  seed?: number;
  /**
   * Reuse keys and values of earlier positions. Without the cache every step recomputes the whole
   * sequence, which gives the same tokens more slowly.
   * @default true
   */
  useCache?: boolean;
  /**
   * Token id placed at padding positions: the left padding of shorter prompts and the slots of finished
   * sequences. The attention mask hides them, so any valid id works.
   * @default 0
   */
  padTokenId?: number;
}

/** Generates tokens for each prompt, as described at {@link CausalLM.generate}. */
export function generateTokens(
  model: CausalLM,
  promptIds: readonly number[] | readonly (readonly number[])[],
  options: GenerateOptions,
): number[][] {
  const prompts = normalizePrompts(promptIds);
  const settings = resolveOptions(model, options);
  const batch = prompts.length;
  const vocab = model.config.vocabSize;

  // Left-pad the prompts so that the newest token of every row sits in the last column.
  const promptLength = Math.max(...prompts.map((prompt) => prompt.length));
  let ids: number[][] = prompts.map((prompt) => [...new Array<number>(promptLength - prompt.length).fill(settings.padTokenId), ...prompt]);
  let mask: number[][] = prompts.map((prompt) => [...new Array<number>(promptLength - prompt.length).fill(0), ...new Array<number>(prompt.length).fill(1)]);

  const random = new SeededRandom(settings.seed);
  const outputs: number[][] = prompts.map(() => []);
  const finished = new Array<boolean>(batch).fill(false);
  const cache = settings.useCache ? model.createCache() : null;

  try {
    for (let step = 0; step < settings.maxNewTokens; step++) {
      const logits = tf.tidy(() => {
        const inputIds = tf.tensor2d(ids, undefined, 'int32');
        const attentionMask = tf.tensor2d(mask, undefined, 'float32');
        return model.forward(inputIds, { attentionMask, cache: cache ?? undefined, lastPositionOnly: true });
      });
      const values = logits.dataSync() as Float32Array;
      logits.dispose();

      const finishedBefore = [...finished];
      const next: number[] = [];
      for (let row = 0; row < batch; row++) {
        if (finished[row]) {
          next.push(settings.padTokenId);
          continue;
        }
        const token = sampleToken(values.subarray(row * vocab, (row + 1) * vocab), settings, random);
        (outputs[row] as number[]).push(token);
        next.push(token);
        if (settings.stopTokenIds.has(token)) {
          finished[row] = true;
        }
      }
      if (finished.every(Boolean)) {
        break;
      }

      // A finished row keeps receiving padding, which its attention mask hides.
      const nextMask = finishedBefore.map((done) => (done ? 0 : 1));
      if (cache !== null) {
        ids = next.map((token) => [token]);
        mask = nextMask.map((value) => [value]);
      } else {
        ids = ids.map((row, r) => [...row, next[r] as number]);
        mask = mask.map((row, r) => [...row, nextMask[r] as number]);
      }
    }
  } finally {
    cache?.dispose();
  }
  return outputs;
}

interface ResolvedGenerateOptions extends SamplingOptions {
  maxNewTokens: number;
  stopTokenIds: Set<number>;
  seed: number;
  useCache: boolean;
  padTokenId: number;
}

function resolveOptions(model: CausalLM, options: GenerateOptions): ResolvedGenerateOptions {
  const vocab = model.config.vocabSize;
  const maxNewTokens = options.maxNewTokens ?? 128;
  const temperature = options.temperature ?? 0;
  const topK = options.topK ?? 0;
  const topP = options.topP ?? 1;
  const seed = options.seed ?? 0;
  const padTokenId = options.padTokenId ?? 0;

  if (!Number.isInteger(maxNewTokens) || maxNewTokens < 1) {
    throw invalid('maxNewTokens', maxNewTokens, 'a positive integer');
  }
  if (typeof temperature !== 'number' || !(temperature >= 0) || !Number.isFinite(temperature)) {
    throw invalid('temperature', temperature, 'a finite number >= 0');
  }
  if (!Number.isInteger(topK) || topK < 0) {
    throw invalid('topK', topK, 'an integer >= 0');
  }
  if (typeof topP !== 'number' || !(topP > 0 && topP <= 1)) {
    throw invalid('topP', topP, 'a number in (0, 1]');
  }
  if (!Number.isInteger(seed)) {
    throw invalid('seed', seed, 'an integer');
  }
  if (!Number.isInteger(padTokenId) || padTokenId < 0 || padTokenId >= vocab) {
    throw invalid('padTokenId', padTokenId, `an integer in [0, ${vocab - 1}]`);
  }

  const eos = model.config.eosTokenId;
  const defaultStops = eos === undefined ? [] : Array.isArray(eos) ? eos : [eos];
  const stopTokenIds = new Set(options.stopTokenIds ?? defaultStops);

  return { maxNewTokens, temperature, topK, topP, stopTokenIds, seed, useCache: options.useCache ?? true, padTokenId };
}

function normalizePrompts(promptIds: readonly number[] | readonly (readonly number[])[]): number[][] {
  if (promptIds.length === 0) {
    throw invalid('promptIds', promptIds, 'one prompt (number[]) or a non-empty list of prompts (number[][])');
  }
  const prompts = typeof promptIds[0] === 'number' ? [promptIds as readonly number[]] : (promptIds as readonly (readonly number[])[]);
  prompts.forEach((prompt, index) => {
    if (!Array.isArray(prompt) || prompt.length === 0 || prompt.some((id) => !Number.isInteger(id))) {
      throw invalid(`promptIds[${index}]`, prompt, 'a non-empty array of integer token ids');
    }
  });
  return prompts.map((prompt) => [...prompt]);
}

function invalid(field: string, value: unknown, expected: string): ArgumentError {
  return new ArgumentError('GENERATE_INVALID_OPTION', `Invalid generation option ${field}: ${JSON.stringify(value)}. Expected ${expected}.`, {
    details: { field, value },
  });
}
