/**
 * Checks made before a run resumes from its latest checkpoint. The checkpoint must have been
 * written with the options that fix the adapter and optimizer layout. When it cannot be read, the
 * error names another checkpoint of the experiment that could be used instead.
 */
import { NestedLearningConfig, snakeCaseName, type ConfigFieldName } from '../config/index.js';
import { ConfigError, NestedLearningError } from '../errors.js';
import { readCheckpointMetadata } from './checkpoint-files.js';
import type { CheckpointEntry, ExperimentFolder } from './experiment.js';

/**
 * Options that a resumed run must share with its checkpoint: they fix the adapter's parameters
 * and scale, and the tiers that the optimizer state is laid out by.
 */
const RESUME_FIXED_OPTIONS: readonly ConfigFieldName[] = [
  'loraRank',
  'loraAlpha',
  'useRslora',
  'loraTargetModules',
  'loraLayers',
  'numTiers',
  'tierUpdateFrequencies',
];

/**
 * Raises a ConfigError with code `RESUME_CONFIG_MISMATCH` that lists each option in
 * {@link RESUME_FIXED_OPTIONS} whose value differs from the one the checkpoint was written with.
 * Options missing from the checkpoint's `metadata.json` are not compared.
 */
export async function checkResumeConfig(checkpoint: CheckpointEntry, config: NestedLearningConfig): Promise<void> {
  const metadata = await readCheckpointMetadata(checkpoint.path);
  const current = NestedLearningConfig.toSnakeCase(config) as Record<string, unknown>;

  const differences: string[] = [];
  for (const field of RESUME_FIXED_OPTIONS) {
    const key = snakeCaseName(field);
    if (!(key in metadata.config)) {
      continue;
    }
    const saved = JSON.stringify(metadata.config[key]);
    const requested = JSON.stringify(current[key]);
    if (saved !== requested) {
      differences.push(`${field} is ${saved} in the checkpoint but ${requested} in the configuration`);
    }
  }

  if (differences.length > 0) {
    throw new ConfigError(
      'RESUME_CONFIG_MISMATCH',
      `Cannot resume from ${checkpoint.path}: ${differences.join('; ')}. ` +
        'Resume with the checkpoint\'s values, or start a new run with another experimentName or with overwrite: true.',
      { details: { checkpoint: checkpoint.path, differences } },
    );
  }
}

/**
 * Returns `error` with the newest other complete checkpoint named in its message when `error`
 * reports an unreadable checkpoint (`CHECKPOINT_INVALID`), and `error` itself otherwise.
 */
export async function withOtherCheckpointHint(error: unknown, damaged: CheckpointEntry, experiment: ExperimentFolder): Promise<unknown> {
  if (!NestedLearningError.isInstance(error) || error.code !== 'CHECKPOINT_INVALID') {
    return error;
  }

  const others = (await experiment.listCheckpoints()).filter((entry) => entry.path !== damaged.path);
  const newest = others.at(-1);
  const hint =
    newest === undefined
      ? ` No other complete checkpoint is in ${experiment.checkpointsDir}.`
      : ` The newest other complete checkpoint is ${newest.path} (step ${newest.step}). Move ${damaged.path} out of ` +
        `${experiment.checkpointsDir} to resume from it.`;

  const Constructor = error.constructor as new (code: string, message: string, options: object) => NestedLearningError;
  return new Constructor(error.code, `${error.message}${hint}`, {
    cause: error,
    details: { ...error.details, otherCheckpoint: newest?.path },
  });
}
