/**
 * Loading the weights of a Hugging Face model folder: a single `model.safetensors`, or shards
 * listed in `model.safetensors.index.json`.
 *
 * All headers are read and checked against the weights the config implies before any tensor data
 * is read, so a missing shard, a missing or unexpected weight or a wrong shape fails fast, in one
 * error that lists every problem. bf16 and f16 weights are widened to float32, because tfjs has
 * no half-precision tensors.
 */
import * as tf from '@tensorflow/tfjs';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import { FileFormatError, ShapeError } from '../errors.js';
import { openSafetensors, type SafetensorsEntry, type SafetensorsFile } from '../io/safetensors.js';
import type { ModelConfig } from './types.js';

/** A linear projection of a decoder layer. */
type DecoderProjection = 'q_proj' | 'k_proj' | 'v_proj' | 'o_proj' | 'gate_proj' | 'up_proj' | 'down_proj';

/** File name of a single-file checkpoint. */
export const SINGLE_FILE_CHECKPOINT = 'model.safetensors';

/** File name of the index that maps each weight of a sharded checkpoint to its shard. */
export const SHARDED_CHECKPOINT_INDEX = 'model.safetensors.index.json';

/**
 * Names that a checkpoint may contain besides the expected weights and that are skipped: the
 * rotary `inv_freq` buffer that older `transformers` versions saved, which is recomputed from
 * `rope_theta`.
 */
const SKIPPED_WEIGHT = /^model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq$/;

const FLOAT_DTYPES = new Set(['F32', 'F16', 'BF16', 'F64']);

/** Most names listed per kind of problem in an error message; `details` has them all. */
const MAX_LISTED = 10;

/**
 * Tells whether a projection has a bias. Llama follows `attention_bias` (q, k, v, o) and
 * `mlp_bias`. Qwen2 has a bias on q, k and v only.
 */
function hasBias(config: ModelConfig, projection: DecoderProjection): boolean {
  switch (projection) {
    case 'q_proj':
    case 'k_proj':
    case 'v_proj':
      return config.attentionBias;
    case 'o_proj':
      return config.attentionBias && config.modelType === 'llama';
    default:
      return config.mlpBias;
  }
}

/**
 * Lists every weight the model needs, keyed by its Hugging Face name, with its shape. Linear
 * weights are `[out, in]` as PyTorch stores them. `lm_head.weight` is absent when the embeddings
 * are tied.
 */
export function expectedWeightShapes(config: ModelConfig): Record<string, number[]> {
  const hidden = config.hiddenSize;
  const queryWidth = config.numAttentionHeads * config.headDim;
  const keyValueWidth = config.numKeyValueHeads * config.headDim;
  const inner = config.intermediateSize;

  const projections: Array<[string, DecoderProjection, number, number]> = [
    ['self_attn', 'q_proj', queryWidth, hidden],
    ['self_attn', 'k_proj', keyValueWidth, hidden],
    ['self_attn', 'v_proj', keyValueWidth, hidden],
    ['self_attn', 'o_proj', hidden, queryWidth],
    ['mlp', 'gate_proj', inner, hidden],
    ['mlp', 'up_proj', inner, hidden],
    ['mlp', 'down_proj', hidden, inner],
  ];

  const shapes: Record<string, number[]> = { 'model.embed_tokens.weight': [config.vocabSize, hidden] };
  for (let layer = 0; layer < config.numHiddenLayers; layer += 1) {
    const prefix = `model.layers.${layer}`;
    shapes[`${prefix}.input_layernorm.weight`] = [hidden];
    shapes[`${prefix}.post_attention_layernorm.weight`] = [hidden];
    for (const [block, projection, outFeatures, inFeatures] of projections) {
      shapes[`${prefix}.${block}.${projection}.weight`] = [outFeatures, inFeatures];
      if (hasBias(config, projection)) {
        shapes[`${prefix}.${block}.${projection}.bias`] = [outFeatures];
      }
    }
  }
  shapes['model.norm.weight'] = [hidden];
  if (!config.tieWordEmbeddings) {
    shapes['lm_head.weight'] = [config.vocabSize, hidden];
  }
  return shapes;
}

/**
 * Loads every weight of a Hugging Face model folder as float32 tfjs tensors keyed by Hugging Face
 * name. The caller owns the tensors and disposes them.
 *
 * Error codes: `CHECKPOINT_NOT_A_FOLDER` when the path is a file, `CHECKPOINT_NOT_FOUND` when the
 * folder has no safetensors weights, and
 * `CHECKPOINT_SHARD_MISSING` when shard files listed in the index are absent.
 * `CHECKPOINT_WEIGHTS_MISMATCH` reports missing or unexpected weights, with any wrong shapes in
 * the same message. `CHECKPOINT_SHAPE_MISMATCH` is raised when only shapes or dtypes are wrong.
 */
export async function loadCheckpointWeights(folder: string, config: ModelConfig): Promise<Record<string, tf.Tensor>> {
  const layout = await resolveCheckpointFiles(folder);
  const files = new Map<string, SafetensorsFile>();
  const weights: Record<string, tf.Tensor> = {};

  try {
    for (const fileName of layout.files) {
      files.set(fileName, await openSafetensors(path.join(folder, fileName)));
    }
    const located = locateWeights(layout, files);
    const expected = expectedWeightShapes(config);
    checkWeights(folder, config, expected, located);

    // One batched read per file, so each file's weights share a few large memory blocks.
    const namesByFile = new Map<SafetensorsFile, string[]>();
    for (const name of Object.keys(expected)) {
      const { file } = located.found.get(name) as WeightLocation;
      namesByFile.set(file, [...(namesByFile.get(file) ?? []), name]);
    }
    for (const [file, names] of namesByFile) {
      Object.assign(weights, await file.readTensors(names, { dtype: 'float32' }));
    }
    return Object.fromEntries(Object.keys(expected).map((name) => [name, weights[name] as tf.Tensor]));
  } catch (error) {
    tf.dispose(Object.values(weights));
    throw error;
  } finally {
    for (const file of files.values()) {
      await file.close();
    }
  }
}

interface CheckpointLayout {
  /** Safetensors files to read, relative to the folder. */
  files: string[];
  /** The index's map from weight name to shard file, or undefined for a single file. */
  weightMap: Record<string, string> | undefined;
}

/** Finds the checkpoint files of a folder and checks that every shard the index lists exists. */
async function resolveCheckpointFiles(folder: string): Promise<CheckpointLayout> {
  await checkModelFolder(folder);
  const indexPath = path.join(folder, SHARDED_CHECKPOINT_INDEX);
  if (await fileExists(indexPath)) {
    const weightMap = await readWeightMap(indexPath);
    const files = [...new Set(Object.values(weightMap))].sort();

    const missing: string[] = [];
    for (const file of files) {
      if (!(await fileExists(path.join(folder, file)))) missing.push(file);
    }
    if (missing.length > 0) {
      const counts = missing.map((file) => `${file} (${Object.values(weightMap).filter((shard) => shard === file).length} weights)`);
      throw new FileFormatError(
        'CHECKPOINT_SHARD_MISSING',
        `Checkpoint ${folder} is incomplete: ${missing.length} of ${files.length} shard files listed in ` +
          `${SHARDED_CHECKPOINT_INDEX} are missing: ${counts.join(', ')}. Download the missing shards into the folder.`,
        { details: { folder, missing, shards: files } },
      );
    }
    return { files, weightMap };
  }

  if (await fileExists(path.join(folder, SINGLE_FILE_CHECKPOINT))) {
    return { files: [SINGLE_FILE_CHECKPOINT], weightMap: undefined };
  }

  const hasPytorchWeights = (await fileExists(path.join(folder, 'pytorch_model.bin'))) || (await fileExists(path.join(folder, 'pytorch_model.bin.index.json')));
  throw new FileFormatError(
    'CHECKPOINT_NOT_FOUND',
    `No safetensors weights in ${folder}: expected ${SINGLE_FILE_CHECKPOINT} or ${SHARDED_CHECKPOINT_INDEX}.` +
      (hasPytorchWeights
        ? ' The folder has PyTorch .bin weights, which are not read; convert them to safetensors (for example with transformers save_pretrained(safe_serialization=True)).'
        : ' Pass the folder of a Hugging Face model.'),
    { details: { folder } },
  );
}

async function readWeightMap(indexPath: string): Promise<Record<string, string>> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(await fs.readFile(indexPath, 'utf8'));
  } catch (error) {
    throw new FileFormatError('CHECKPOINT_INDEX_INVALID', `Invalid checkpoint index ${indexPath}: ${(error as Error).message}.`, {
      cause: error,
      details: { path: indexPath },
    });
  }

  const weightMap = (parsed as { weight_map?: unknown } | null)?.weight_map;
  if (typeof weightMap !== 'object' || weightMap === null || Array.isArray(weightMap)) {
    throw new FileFormatError('CHECKPOINT_INDEX_INVALID', `Invalid checkpoint index ${indexPath}: "weight_map" must be an object.`, {
      details: { path: indexPath },
    });
  }
  for (const [name, file] of Object.entries(weightMap)) {
    // Shard names are plain file names in the model folder; anything else could point outside it.
    if (typeof file !== 'string' || file === '' || path.basename(file) !== file || file === '.' || file === '..') {
      throw new FileFormatError(
        'CHECKPOINT_INDEX_INVALID',
        `Invalid checkpoint index ${indexPath}: weight "${name}" maps to ${JSON.stringify(file)}, which is not a file name in the model folder.`,
        { details: { path: indexPath, weight: name, file } },
      );
    }
  }
  return weightMap as Record<string, string>;
}

interface WeightLocation {
  file: SafetensorsFile;
  fileName: string;
  entry: SafetensorsEntry;
}

interface LocatedWeights {
  found: Map<string, WeightLocation>;
  /** Weights the index lists in a shard whose header lacks them, with that shard's name. */
  listedButAbsent: Map<string, string>;
}

function locateWeights(layout: CheckpointLayout, files: Map<string, SafetensorsFile>): LocatedWeights {
  const found = new Map<string, WeightLocation>();
  const listedButAbsent = new Map<string, string>();

  for (const [fileName, file] of files) {
    for (const entry of file.entries) {
      // A name stored in two shards is taken from the shard the index names.
      const preferred = layout.weightMap?.[entry.name];
      if (!found.has(entry.name) || preferred === fileName) {
        found.set(entry.name, { file, fileName, entry });
      }
    }
  }

  for (const [name, fileName] of Object.entries(layout.weightMap ?? {})) {
    if (!files.get(fileName)?.has(name)) {
      listedButAbsent.set(name, fileName);
    }
  }
  return { found, listedButAbsent };
}

function checkWeights(folder: string, config: ModelConfig, expected: Record<string, number[]>, located: LocatedWeights): void {
  const missing: string[] = [];
  const wrongShape: string[] = [];

  for (const [name, shape] of Object.entries(expected)) {
    const location = located.found.get(name);
    if (location === undefined) {
      const shard = located.listedButAbsent.get(name);
      missing.push(shard === undefined ? name : `${name} (listed in ${SHARDED_CHECKPOINT_INDEX} but absent from ${shard})`);
      continue;
    }
    const { entry, fileName } = location;
    if (!sameShape(entry.shape, shape)) {
      wrongShape.push(`${name} is [${entry.shape.join(', ')}] in ${fileName}, expected [${shape.join(', ')}]`);
    } else if (!FLOAT_DTYPES.has(entry.dtype)) {
      wrongShape.push(`${name} has dtype ${entry.dtype} in ${fileName}, expected F32, F16, BF16 or F64`);
    }
  }

  const unexpected = [...located.found.keys()]
    .filter((name) => !(name in expected) && !SKIPPED_WEIGHT.test(name) && !(config.tieWordEmbeddings && name === 'lm_head.weight'))
    .sort();

  if (missing.length === 0 && unexpected.length === 0 && wrongShape.length === 0) {
    return;
  }

  const parts: string[] = [];
  if (missing.length > 0) parts.push(`${missing.length} missing: ${listSome(missing)}`);
  if (unexpected.length > 0) parts.push(`${unexpected.length} unexpected: ${listSome(unexpected)}`);
  if (wrongShape.length > 0) parts.push(`${wrongShape.length} with the wrong shape or dtype: ${listSome(wrongShape)}`);

  const summary =
    `Checkpoint ${folder} does not match its config (${config.modelType}, ${config.numHiddenLayers} layers, ` +
    `hidden ${config.hiddenSize}, tie_word_embeddings ${config.tieWordEmbeddings}). Weights ${parts.join('; ')}. ` +
    'Check that config.json belongs to these weights and that the download is complete.';
  const details = { folder, missing, unexpected, wrongShape };

  if (missing.length > 0 || unexpected.length > 0) {
    throw new FileFormatError('CHECKPOINT_WEIGHTS_MISMATCH', summary, { details });
  }
  throw new ShapeError('CHECKPOINT_SHAPE_MISMATCH', summary, { details });
}

function listSome(items: string[]): string {
  const listed = items.slice(0, MAX_LISTED).join(', ');
  return items.length > MAX_LISTED ? `${listed}, and ${items.length - MAX_LISTED} more` : listed;
}

function sameShape(actual: readonly number[], expected: readonly number[]): boolean {
  return actual.length === expected.length && actual.every((dimension, index) => dimension === expected[index]);
}

/** Checks that a model path is a readable folder; a missing folder is left to the CHECKPOINT_NOT_FOUND report. */
async function checkModelFolder(folder: string): Promise<void> {
  let isDirectory: boolean;
  try {
    isDirectory = (await fs.stat(folder)).isDirectory();
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return;
    throw new FileFormatError('CHECKPOINT_READ_FAILED', `Failed to read model folder ${folder}: ${(error as Error).message}.`, {
      cause: error,
      details: { folder, errno: code },
    });
  }
  if (!isDirectory) {
    throw new FileFormatError(
      'CHECKPOINT_NOT_A_FOLDER',
      `Model path ${folder} is a file, not a folder. Pass the folder of a Hugging Face model, which contains config.json and the safetensors weights.`,
      { details: { folder } },
    );
  }
}

async function fileExists(filePath: string): Promise<boolean> {
  try {
    return (await fs.stat(filePath)).isFile();
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw error;
  }
}
