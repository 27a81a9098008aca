/**
 * Reading and writing the five files of a checkpoint folder:
 *
 * - `adapters.safetensors` and `adapter_config.json`: the LoRA adapter in mlx_lm format;
 * - `optimizer.safetensors`: the NestedAdam state, tensors keyed `{name}/m`, `{name}/v`,
 *   `{name}/accum`, with the counters and hyperparameters in the safetensors metadata;
 * - `trainer_state.json`: the loop position (see `state.ts`);
 * - `metadata.json`: a description of the checkpoint, written last.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

import * as tf from '@tensorflow/tfjs';
import type { z } from 'zod';

import type { LoraAdapter } from '../adapters/index.js';
import { readMlxAdapter, writeMlxAdapter } from '../adapters/index.js';
import { FileFormatError, NestedLearningError } from '../errors.js';
import { readSafetensors, writeFileAtomic, writeSafetensors } from '../io/index.js';
import type { NestedAdamState } from '../optimizer/index.js';
import { stateFromTensors, stateToTensors } from '../optimizer/index.js';
import { stringifyWithNonFinite } from './metrics.js';
import type { CheckpointMetadata, TrainerState } from './state.js';
import { CheckpointMetadataSchema, TrainerStateSchema } from './state.js';

/** Everything a checkpoint folder holds, in memory. The tensors belong to the snapshot. */
export interface CheckpointSnapshot {
  adapter: LoraAdapter;
  /** Number of decoder layers of the base model, from which `num_layers` of `adapter_config.json` follows. */
  numHiddenLayers: number;
  optimizerState: NestedAdamState;
  trainerState: TrainerState;
  metadata: CheckpointMetadata;
}

/** A checkpoint read from disk. The caller disposes the tensors with {@link disposeCheckpoint}. */
export interface LoadedCheckpoint {
  path: string;
  adapter: LoraAdapter;
  optimizerState: NestedAdamState;
  trainerState: TrainerState;
  metadata: CheckpointMetadata;
}

/** Called after each file of a checkpoint is complete in the temporary folder. */
export type CheckpointFileListener = (file: string, temporaryDir: string) => void | Promise<void>;

/** Writes the files of `snapshot` into `dir` (a temporary folder), `metadata.json` last. */
export async function writeCheckpointFiles(
  dir: string,
  snapshot: CheckpointSnapshot,
  onFileWritten: CheckpointFileListener = () => undefined,
): Promise<void> {
  await writeMlxAdapter(dir, snapshot.adapter, { numHiddenLayers: snapshot.numHiddenLayers });
  await onFileWritten('adapters.safetensors', dir);
  await onFileWritten('adapter_config.json', dir);

  const { tensors, metadata } = stateToTensors(snapshot.optimizerState);
  await writeSafetensors(join(dir, 'optimizer.safetensors'), tensors, { metadata });
  await onFileWritten('optimizer.safetensors', dir);

  await writeFileAtomic(join(dir, 'trainer_state.json'), stringifyWithNonFinite(snapshot.trainerState));
  await onFileWritten('trainer_state.json', dir);

  await writeFileAtomic(join(dir, 'metadata.json'), stringifyWithNonFinite(snapshot.metadata));
  await onFileWritten('metadata.json', dir);
}

/**
 * Reads and validates a checkpoint folder. Raises a `FileFormatError` with code
 * `CHECKPOINT_INVALID` that names the file when one is missing or malformed.
 */
export async function readCheckpointFiles(path: string): Promise<LoadedCheckpoint> {
  const metadata = await readJsonFile(path, 'metadata.json', CheckpointMetadataSchema);
  const trainerState = await readJsonFile(path, 'trainer_state.json', TrainerStateSchema);

  const adapter = await wrapReadError(path, 'adapters.safetensors', () => readMlxAdapter(path));
  try {
    const optimizerFile = await wrapReadError(path, 'optimizer.safetensors', () => readSafetensors(join(path, 'optimizer.safetensors')));
    try {
      const optimizerState = wrapSyncReadError(path, 'optimizer.safetensors', () =>
        stateFromTensors(optimizerFile.tensors, optimizerFile.metadata),
      );
      return { path, adapter, optimizerState, trainerState, metadata };
    } catch (error) {
      tf.dispose(Object.values(optimizerFile.tensors));
      throw error;
    }
  } catch (error) {
    tf.dispose(Object.values(adapter.weights));
    throw error;
  }
}

/** Disposes the tensors of a loaded checkpoint or a snapshot. */
export function disposeCheckpoint(checkpoint: { adapter: LoraAdapter; optimizerState: NestedAdamState }): void {
  tf.dispose(Object.values(checkpoint.adapter.weights));
  tf.dispose(Object.values(checkpoint.optimizerState.tensors));
}

/** Reads only `metadata.json` of a checkpoint folder. */
export function readCheckpointMetadata(path: string): Promise<CheckpointMetadata> {
  return readJsonFile(path, 'metadata.json', CheckpointMetadataSchema);
}

/** Reads only `trainer_state.json` of a checkpoint folder. */
export function readTrainerState(path: string): Promise<TrainerState> {
  return readJsonFile(path, 'trainer_state.json', TrainerStateSchema);
}

async function readJsonFile<Schema extends z.ZodType>(dir: string, file: string, schema: Schema): Promise<z.output<Schema>> {
  const filePath = join(dir, file);
  let text: string;
  try {
    text = await readFile(filePath, 'utf8');
  } catch (error) {
    throw invalidCheckpoint(dir, file, (error as NodeJS.ErrnoException).code === 'ENOENT' ? 'the file is missing' : (error as Error).message, error);
  }

  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw invalidCheckpoint(dir, file, `the file is not valid JSON (${(error as Error).message})`, error);
  }

  const result = schema.safeParse(json);
  if (!result.success) {
    const issues = result.error.issues.map((issue) => `${issue.path.join('.') || '(root)'}: ${issue.message}`);
    throw invalidCheckpoint(dir, file, issues.join('; '));
  }
  return result.data;
}

async function wrapReadError<T>(dir: string, file: string, read: () => Promise<T>): Promise<T> {
  try {
    return await read();
  } catch (error) {
    throw invalidCheckpoint(dir, file, (error as Error).message, error);
  }
}

function wrapSyncReadError<T>(dir: string, file: string, read: () => T): T {
  try {
    return read();
  } catch (error) {
    throw invalidCheckpoint(dir, file, (error as Error).message, error);
  }
}

function invalidCheckpoint(dir: string, file: string, reason: string, cause?: unknown): FileFormatError {
  const code = NestedLearningError.isInstance(cause) ? cause.code : undefined;
  return new FileFormatError(
    'CHECKPOINT_INVALID',
    `Failed to read checkpoint ${dir}: ${file}: ${reason.replace(/\.$/, '')}. Resume from another checkpoint folder, or start a new run.`,
    { cause, details: { path: dir, file, causeCode: code } },
  );
}
