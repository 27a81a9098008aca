/** Reading `adapter_config.json` and checking the structure of adapter weights, for both formats. */
import type * as tf from '@tensorflow/tfjs';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import { ArgumentError, FileFormatError } from '../errors.js';
import { parseLayerAdapterKey } from './keys.js';

/** File name of the adapter configuration, in both formats. */
export const ADAPTER_CONFIG_FILE = 'adapter_config.json';

/** Reads and parses `adapter_config.json` of an adapter folder. */
export async function readAdapterConfig(folder: string): Promise<Record<string, unknown>> {
  const filePath = path.join(folder, ADAPTER_CONFIG_FILE);
  let text: string;
  try {
    text = await fs.readFile(filePath, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new FileFormatError(
      code === 'ENOENT' ? 'ADAPTER_CONFIG_NOT_FOUND' : 'ADAPTER_READ_FAILED',
      code === 'ENOENT'
        ? `Adapter config not found: ${filePath}. An adapter folder needs ${ADAPTER_CONFIG_FILE} next to its weights.`
        : `Failed to read ${filePath}: ${(error as Error).message}.`,
      { cause: error, details: { path: filePath, errno: code } },
    );
  }

  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new FileFormatError('ADAPTER_CONFIG_INVALID', `Invalid JSON in ${filePath}: ${(error as Error).message}.`, {
      cause: error,
      details: { path: filePath },
    });
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new FileFormatError('ADAPTER_CONFIG_INVALID', `Invalid ${filePath}: expected a JSON object.`, { details: { path: filePath } });
  }
  return parsed as Record<string, unknown>;
}

/**
 * Checks that an adapter path is a readable folder. A missing folder passes, so that the caller
 * reports which adapter files it expected there.
 */
export async function checkAdapterFolder(folder: string): Promise<void> {
  let isDirectory: boolean;
  try {
    isDirectory = (await fs.stat(folder)).isDirectory();
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return;
    throw new FileFormatError('ADAPTER_READ_FAILED', `Failed to read adapter folder ${folder}: ${(error as Error).message}.`, {
      cause: error,
      details: { folder, errno: code },
    });
  }
  if (!isDirectory) {
    throw new FileFormatError(
      'ADAPTER_NOT_A_FOLDER',
      `Adapter path ${folder} is a file, not a folder. Pass the folder that contains ${ADAPTER_CONFIG_FILE} and the weights file.`,
      { details: { folder } },
    );
  }
}

/** Creates the folder an adapter is written to, with an ArgumentError when the path or a parent is a file. */
export async function createAdapterFolder(folder: string): Promise<void> {
  try {
    await fs.mkdir(folder, { recursive: true });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const reason = code === 'EEXIST' || code === 'ENOTDIR' ? 'the path or one of its parents is a file' : (error as Error).message;
    throw new ArgumentError('ADAPTER_WRITE_FAILED', `Cannot write the adapter to ${folder}: ${reason}. Pass the path of a folder.`, {
      cause: error,
      details: { folder, errno: code },
    });
  }
}

/**
 * Rejects adapter weights that contain NaN or infinite values, which a diverged training run
 * saves. Training from them would only produce non-finite losses.
 */
export function checkFiniteWeights(weights: Record<string, tf.Tensor>, source: string, fileKey: (key: string) => string = (key) => key): void {
  const nonFinite: string[] = [];
  for (const [key, tensor] of Object.entries(weights)) {
    const values = tensor.dataSync();
    let count = 0;
    for (const value of values) {
      if (!Number.isFinite(value)) count += 1;
    }
    if (count > 0) nonFinite.push(`${fileKey(key)} (${count} of ${values.length} values)`);
  }
  if (nonFinite.length > 0) {
    throw new FileFormatError(
      'ADAPTER_WEIGHTS_NON_FINITE',
      `Invalid adapter weights in ${source}: ${nonFinite.length} tensor(s) contain NaN or infinite values: ${nonFinite.slice(0, 5).join(', ')}` +
        `${nonFinite.length > 5 ? `, and ${nonFinite.length - 5} more` : ''}. The adapter was saved from a diverged run; use an earlier checkpoint or train it again.`,
      { details: { source, tensors: nonFinite } },
    );
  }
}

/** Tells whether a file exists (and is a file). */
export async function fileExists(filePath: string): Promise<boolean> {
  try {
    return (await fs.stat(filePath)).isFile();
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw error;
  }
}

/** The layers, module paths and rank that a set of mlx-layout adapter weights covers. */
export interface AdapterLayout {
  layers: number[];
  targetModules: string[];
  rank: number;
}

/**
 * Checks that every weight is a decoder-layer `lora_a` or `lora_b` in the mlx layout, that each
 * projection has both, and that all share one rank (`lora_a` `[in, r]`, `lora_b` `[r, out]`).
 * `originalKey` maps a key back to the name in the file, for error messages.
 */
export function describeAdapterLayout(
  weights: Record<string, tf.Tensor>,
  source: string,
  originalKey: (key: string) => string = (key) => key,
): AdapterLayout {
  const unsupported: string[] = [];
  const modules = new Map<string, { a?: tf.Tensor; b?: tf.Tensor; layer: number; modulePath: string }>();

  for (const [key, tensor] of Object.entries(weights)) {
    const parsed = parseLayerAdapterKey(key);
    if (parsed === undefined) {
      unsupported.push(originalKey(key));
      continue;
    }
    const prefix = key.slice(0, -'.lora_a'.length);
    const module = modules.get(prefix) ?? { layer: parsed.layer, modulePath: parsed.modulePath };
    if (parsed.matrix === 'lora_a') module.a = tensor;
    else module.b = tensor;
    modules.set(prefix, module);
  }

  if (unsupported.length > 0) {
    throw new FileFormatError(
      'ADAPTER_KEY_UNSUPPORTED',
      `Adapter ${source} has ${unsupported.length} weights that are not LoRA matrices of a decoder layer projection: ` +
        `${unsupported.slice(0, 10).join(', ')}${unsupported.length > 10 ? ', ...' : ''}. Only LoRA on ` +
        'model.layers.{i}.* linear layers is supported (no DoRA, biases, embeddings or modules_to_save).',
      { details: { source, keys: unsupported } },
    );
  }
  if (modules.size === 0) {
    throw new FileFormatError('ADAPTER_EMPTY', `Adapter ${source} has no LoRA weights.`, { details: { source } });
  }

  const problems: string[] = [];
  const ranks = new Set<number>();
  for (const [prefix, { a, b }] of modules) {
    if (a === undefined || b === undefined) {
      problems.push(`${originalKey(prefix + (a === undefined ? '.lora_a' : '.lora_b'))} is missing`);
      continue;
    }
    if (a.rank !== 2 || b.rank !== 2) {
      problems.push(`${prefix} has matrices of rank ${a.rank} and ${b.rank}, expected 2-D`);
      continue;
    }
    const [, rankA] = a.shape as [number, number];
    const [rankB] = b.shape as [number, number];
    if (rankA !== rankB) {
      problems.push(`${prefix} has lora_a [${a.shape.join(', ')}] and lora_b [${b.shape.join(', ')}], whose ranks differ`);
      continue;
    }
    ranks.add(rankA);
  }
  if (problems.length === 0 && ranks.size > 1) {
    problems.push(`projections use different ranks (${[...ranks].sort((x, y) => x - y).join(', ')}), but one adapter has one rank`);
  }
  if (problems.length > 0) {
    throw new FileFormatError('ADAPTER_WEIGHTS_INVALID', `Invalid adapter weights in ${source}: ${problems.join('; ')}.`, {
      details: { source, problems },
    });
  }

  const entries = [...modules.values()];
  return {
    layers: [...new Set(entries.map((entry) => entry.layer))].sort((x, y) => x - y),
    targetModules: [...new Set(entries.map((entry) => entry.modulePath))].sort(),
    rank: [...ranks][0] as number,
  };
}

/** Returns `value` when it is a finite number, `fallback` when absent, and raises otherwise. */
export function numberField(config: Record<string, unknown>, key: string, fallback: number | undefined, source: string): number {
  const value = config[key] ?? fallback;
  if (typeof value !== 'number' || !Number.isFinite(value)) {
    throw new FileFormatError(
      'ADAPTER_CONFIG_INVALID',
      `Invalid ${source}: "${key}" must be a number, got ${JSON.stringify(config[key]) ?? 'nothing'}.`,
      { details: { source, key, value: config[key] } },
    );
  }
  return value;
}
