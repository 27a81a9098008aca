/**
 * The experiment folder of a training run:
 *
 * ```
 * {outputDir}/{experimentName}/
 *   config.json
 *   checkpoints/best/ final/ checkpoint_0000100/
 *     adapters.safetensors  adapter_config.json  metadata.json  optimizer.safetensors  trainer_state.json
 *   metrics/train_metrics.jsonl  eval_metrics.jsonl
 * ```
 *
 * Checkpoint folders are written with `writeDirectoryAtomic`, so a folder under its final name is
 * always complete. A folder that lacks one of the five files, such as a copy made by hand, is not
 * listed.
 */
import { mkdir, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';

import { ArgumentError, ConfigError } from '../errors.js';
import { recoverDirectoryAtomic, writeDirectoryAtomic, writeJsonAtomic } from '../io/index.js';
import { truncateMetricsFile } from './metrics.js';

/** The files every checkpoint folder contains. */
export const CHECKPOINT_FILES = [
  'adapters.safetensors',
  'adapter_config.json',
  'metadata.json',
  'optimizer.safetensors',
  'trainer_state.json',
] as const;

/** Treatment of an experiment folder that already has content. */
export type ExperimentFolderMode = 'new' | 'resume' | 'overwrite';

/** Options of {@link ExperimentFolder.prepare}. */
export interface PrepareExperimentOptions {
  /** Folder that contains the experiment folders. */
  outputDir: string;
  /** Name of this experiment's folder under `outputDir`. */
  experimentName: string;
  /**
   * `new` rejects a folder that already has a config, checkpoints or metrics; `resume` keeps them;
   * `overwrite` deletes them (and nothing else in the folder) first.
   */
  mode: ExperimentFolderMode;
}

/** A complete checkpoint folder found on disk. */
export interface CheckpointEntry {
  /** Folder name under `checkpoints/`. */
  name: string;
  /** Absolute path of the folder. */
  path: string;
  /** Optimizer step, from `metadata.json`. */
  step: number;
  /** `stopped` from `metadata.json`. */
  stopped: boolean;
}

const PERIODIC_NAME = /^checkpoint_(\d{7,})$/;
const CHECKPOINT_NAME = /^[A-Za-z0-9_-]+$/;
const DELETING_PREFIX = '.deleting-';

/** Returns the folder name of the periodic checkpoint at `step`, e.g. `checkpoint_0000100`. */
export function periodicCheckpointName(step: number): string {
  return `checkpoint_${String(step).padStart(7, '0')}`;
}

/** Paths inside one experiment folder, and the operations on its checkpoints and metrics. */
export class ExperimentFolder {
  /** Absolute path of `{outputDir}/{experimentName}`. */
  readonly root: string;
  readonly configPath: string;
  readonly checkpointsDir: string;
  readonly metricsDir: string;
  readonly trainMetricsPath: string;
  readonly evalMetricsPath: string;

  private constructor(root: string) {
    this.root = root;
    this.configPath = join(root, 'config.json');
    this.checkpointsDir = join(root, 'checkpoints');
    this.metricsDir = join(root, 'metrics');
    this.trainMetricsPath = join(this.metricsDir, 'train_metrics.jsonl');
    this.evalMetricsPath = join(this.metricsDir, 'eval_metrics.jsonl');
  }

  /** Returns the folder object for a path without touching the disk. */
  static at(root: string): ExperimentFolder {
    return new ExperimentFolder(resolve(root));
  }

  /** Creates (or, per `mode`, reuses or clears) the experiment folder and its subfolders. */
  static async prepare(options: PrepareExperimentOptions): Promise<ExperimentFolder> {
    validateExperimentName(options.experimentName);
    const folder = new ExperimentFolder(resolve(options.outputDir, options.experimentName));
    await checkNotAFile(folder.root, options.outputDir);

    const existing = await folder.existingRunEntries();
    if (existing.length > 0 && options.mode === 'new') {
      throw new ConfigError(
        'EXPERIMENT_EXISTS',
        `Experiment folder ${folder.root} already contains ${existing.join(', ')}. ` +
          'Set resume: true to continue that run, overwrite: true to delete it and start again, or choose another experimentName.',
        { details: { path: folder.root, existing } },
      );
    }
    if (existing.length > 0 && options.mode === 'overwrite') {
      for (const entry of existing) {
        await rm(join(folder.root, entry), { recursive: true, force: true });
      }
    }

    for (const subfolder of [folder.checkpointsDir, folder.metricsDir]) {
      await createSubfolder(subfolder);
    }
    await folder.recoverInterruptedWrites();
    return folder;
  }

  /** Writes `config.json` atomically. */
  async writeConfig(config: unknown): Promise<void> {
    await writeJsonAtomic(this.configPath, config);
  }

  /** Absolute path of the checkpoint folder `name`. */
  checkpointPath(name: string): string {
    validateFolderName('checkpoint name', name);
    return join(this.checkpointsDir, name);
  }

  /**
   * Writes the checkpoint folder `name`: `write` fills a temporary folder, which then replaces the
   * folder of that name in one rename, so readers see the old complete folder or the new one.
   */
  async writeCheckpoint(name: string, write: (temporaryDir: string) => Promise<void>): Promise<string> {
    const path = this.checkpointPath(name);
    await writeDirectoryAtomic(path, write);
    return path;
  }

  /** Lists the complete checkpoint folders, by ascending step, then name. */
  async listCheckpoints(): Promise<CheckpointEntry[]> {
    const entries: CheckpointEntry[] = [];
    for (const path of await this.checkpointFolders()) {
      const entry = await readCheckpointEntry(path);
      if (entry !== undefined) {
        entries.push(entry);
      }
    }

    entries.sort((a, b) => a.step - b.step || a.name.localeCompare(b.name));
    return entries;
  }

  /**
   * Returns the paths of folders under `checkpoints/` that have a checkpoint name but are not
   * complete (a file missing, or metadata.json unreadable). Resume logs them as skipped.
   */
  async incompleteCheckpoints(): Promise<string[]> {
    const incomplete: string[] = [];
    for (const path of await this.checkpointFolders()) {
      if ((await readCheckpointEntry(path)) === undefined) {
        incomplete.push(path);
      }
    }
    return incomplete;
  }

  /** Returns the paths under `checkpoints/` whose names are checkpoint names, sorted by name. */
  private async checkpointFolders(): Promise<string[]> {
    let names: string[];
    try {
      names = await readdir(this.checkpointsDir);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
        return [];
      }
      throw error;
    }

    return names
      .filter((name) => CHECKPOINT_NAME.test(name))
      .sort()
      .map((name) => join(this.checkpointsDir, name));
  }

  /**
   * Returns the complete checkpoint with the highest step, or `undefined` when there is none.
   * Among folders of equal step a periodic or `final` folder is preferred over `best`, though all
   * of them hold the same state.
   */
  async latestCheckpoint(): Promise<CheckpointEntry | undefined> {
    const entries = await this.listCheckpoints();
    const last = entries.at(-1);
    if (last === undefined) {
      return undefined;
    }
    const sameStep = entries.filter((entry) => entry.step === last.step);
    return sameStep.find((entry) => entry.name !== 'best') ?? last;
  }

  /**
   * Deletes the oldest periodic checkpoints (`checkpoint_NNNNNNN`, which includes those that
   * `saveCheckpoint()` writes under its default name) beyond the newest `keep`. `best/`, `final/`
   * and checkpoints saved under other names are never deleted. A folder is renamed to a
   * hidden name before it is deleted, so a crash mid-deletion never leaves a partial folder under a
   * checkpoint name.
   */
  async pruneCheckpoints(keep: number): Promise<string[]> {
    if (!Number.isInteger(keep) || keep < 1) {
      throw new ArgumentError('CHECKPOINT_KEEP_INVALID', `keepLastNCheckpoints is ${keep}; expected an integer >= 1.`, {
        details: { keep },
      });
    }

    const periodic = (await readdir(this.checkpointsDir))
      .map((name) => ({ name, match: PERIODIC_NAME.exec(name) }))
      .filter((item): item is { name: string; match: RegExpExecArray } => item.match !== null)
      .sort((a, b) => Number(a.match[1]) - Number(b.match[1]));

    const removed: string[] = [];
    for (const { name } of periodic.slice(0, Math.max(0, periodic.length - keep))) {
      const hidden = join(this.checkpointsDir, `${DELETING_PREFIX}${name}-${randomBytes(4).toString('hex')}`);
      await rename(join(this.checkpointsDir, name), hidden);
      await rm(hidden, { recursive: true, force: true });
      removed.push(name);
    }
    return removed;
  }

  /** Drops metrics lines of steps after `step` from both metrics files, so a resumed run continues them. */
  async truncateMetrics(step: number): Promise<void> {
    await truncateMetricsFile(this.trainMetricsPath, step);
    await truncateMetricsFile(this.evalMetricsPath, step);
  }

  private async existingRunEntries(): Promise<string[]> {
    let names: string[];
    try {
      names = await readdir(this.root);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
        return [];
      }
      throw error;
    }
    return ['config.json', 'checkpoints', 'metrics'].filter((name) => names.includes(name));
  }

  /**
   * Repairs what a killed process left in `checkpoints/`. A folder that `writeDirectoryAtomic` was
   * replacing (hidden `.{name}.tmp-*` and `.{name}.old-*` siblings) gets its complete old copy back
   * when the new one was not yet in place. A folder that was being pruned is deleted.
   */
  private async recoverInterruptedWrites(): Promise<void> {
    const names = await readdir(this.checkpointsDir);
    const interrupted = new Set<string>();
    for (const name of names) {
      const match = /^\.(.+)\.(?:tmp|old)-/.exec(name);
      if (name.startsWith(DELETING_PREFIX)) {
        await rm(join(this.checkpointsDir, name), { recursive: true, force: true });
      } else if (match !== null) {
        interrupted.add(match[1] as string);
      }
    }
    for (const name of interrupted) {
      await recoverDirectoryAtomic(join(this.checkpointsDir, name));
    }
  }
}

/** Reads `metadata.json` of a checkpoint folder; returns `undefined` when a file is missing or the metadata is unreadable. */
async function readCheckpointEntry(path: string): Promise<CheckpointEntry | undefined> {
  try {
    if (!(await stat(path)).isDirectory()) {
      return undefined;
    }
    for (const file of CHECKPOINT_FILES) {
      if (!(await stat(join(path, file))).isFile()) {
        return undefined;
      }
    }
    const metadata = JSON.parse(await readFile(join(path, 'metadata.json'), 'utf8')) as { step?: unknown; stopped?: unknown };
    if (typeof metadata.step !== 'number' || !Number.isInteger(metadata.step)) {
      return undefined;
    }
    return { name: basename(path), path, step: metadata.step, stopped: metadata.stopped === true };
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || error instanceof SyntaxError) {
      return undefined;
    }
    throw error;
  }
}

/**
 * Raises a ConfigError with code `EXPERIMENT_FOLDER_INVALID` when the experiment folder or one
 * of its parents is a file, so that no folder can be created there.
 */
async function checkNotAFile(root: string, outputDir: string): Promise<void> {
  // The walk goes up to the first path that exists: a folder ends it, and a file is the problem.
  for (let path = root; ; path = dirname(path)) {
    try {
      if ((await stat(path)).isDirectory()) {
        return;
      }
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if ((code === 'ENOENT' || code === 'ENOTDIR') && dirname(path) !== path) {
        continue;
      }
      throw error;
    }

    const which = path === root ? 'the experiment folder' : `a parent of the experiment folder (outputDir ${JSON.stringify(outputDir)})`;
    throw new ConfigError(
      'EXPERIMENT_FOLDER_INVALID',
      `Cannot create the experiment folder ${root}: ${path}, ${which}, is a file. Set outputDir and experimentName to a folder path.`,
      { details: { path: root, file: path } },
    );
  }
}

/** Creates `checkpoints/` or `metrics/`, with a ConfigError when a file already has that name. */
async function createSubfolder(path: string): Promise<void> {
  try {
    await mkdir(path, { recursive: true });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') {
      throw error;
    }
    throw new ConfigError(
      'EXPERIMENT_FOLDER_INVALID',
      `Cannot use the experiment folder ${dirname(path)}: ${path} is a file, not a folder. Move the file away, or set overwrite: true to delete it.`,
      { cause: error, details: { path: dirname(path), file: path } },
    );
  }
}

function validateFolderName(field: string, name: string): void {
  if (!CHECKPOINT_NAME.test(name)) {
    throw new ArgumentError(
      'INVALID_FOLDER_NAME',
      `${field} ${JSON.stringify(name)} is invalid: use letters, digits, "_" and "-" only.`,
      { details: { field, name } },
    );
  }
}

function validateExperimentName(name: string): void {
  if (name === '' || name === '.' || name === '..' || /[/\\\0]/.test(name)) {
    throw new ArgumentError(
      'INVALID_FOLDER_NAME',
      `experimentName ${JSON.stringify(name)} is invalid: it must be one folder name, without "/" or "\\".`,
      { details: { field: 'experimentName', name } },
    );
  }
}
