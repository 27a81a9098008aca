/**
 * The experiment list: the experiment folders under an output folder, summarised from their
 * `config.json`, metrics files and checkpoint metadata.
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';

/** Status of an experiment folder. */
export type ExperimentStatus = 'running' | 'stopping' | 'completed' | 'stopped' | 'error' | 'incomplete';

/** One experiment folder, as `GET /nested-learning/experiments` lists it. */
export interface ExperimentSummary {
  name: string;
  path: string;
  /**
   * Status of the run. The server's active run is `running` or `stopping`, and a run of this
   * server that failed is `error`. Other folders are `completed` or `stopped` per their final
   * checkpoint, or `incomplete` without one (a run killed, or one running in another process).
   */
  status: ExperimentStatus;
  /** Reason the run ended, from `checkpoints/final/metadata.json`. */
  stopReason: string | null;
  /** Last step in `train_metrics.jsonl`, or the latest checkpoint's step when there are no metrics. */
  step: number;
  /** `num_steps` (or `numSteps`) of `config.json`. */
  totalSteps: number | null;
  /** Lowest validation loss in `eval_metrics.jsonl`, and its step. */
  bestValLoss: number | null;
  bestStep: number | null;
  /** Forgetting (retain loss minus its baseline) of the last evaluation that measured it. */
  forgetting: number | null;
  /** Highest forgetting over the evaluations. */
  maxForgetting: number | null;
  /** Names of the checkpoint folders. */
  checkpoints: string[];
  /** Last modification time of the folder's metrics or config, ISO 8601. */
  updatedAt: string | null;
}

/** The server's own current or last run, which labels a folder that the files alone cannot. */
export interface KnownRun {
  path: string;
  status: 'running' | 'stopping' | 'completed' | 'stopped' | 'error' | 'idle';
}

/** Lists the experiment folders directly under `outputDir`, newest first. A missing folder lists nothing. */
export async function listExperiments(outputDir: string, knownRun: KnownRun | null): Promise<ExperimentSummary[]> {
  let names: string[];
  try {
    names = await readdir(outputDir);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      return [];
    }
    throw error;
  }

  const summaries: ExperimentSummary[] = [];
  for (const name of names.sort()) {
    if (name.startsWith('.')) {
      continue;
    }
    const summary = await summarizeExperiment(join(outputDir, name), name, knownRun);
    if (summary !== undefined) {
      summaries.push(summary);
    }
  }
  summaries.sort((a, b) => (b.updatedAt ?? '').localeCompare(a.updatedAt ?? '') || a.name.localeCompare(b.name));
  return summaries;
}

/**
 * Summarises one folder, or returns `undefined` when it is not an experiment folder (none of
 * `config.json`, `checkpoints/` and `metrics/` in it).
 */
export async function summarizeExperiment(
  path: string,
  name: string,
  knownRun: KnownRun | null,
): Promise<ExperimentSummary | undefined> {
  const entries = await readdirIfFolder(path);
  if (entries === undefined || !['config.json', 'checkpoints', 'metrics'].some((entry) => entries.includes(entry))) {
    return undefined;
  }

  const config = await readJsonObject(join(path, 'config.json'));
  const train = await readJsonLines(join(path, 'metrics', 'train_metrics.jsonl'));
  const evaluations = await readJsonLines(join(path, 'metrics', 'eval_metrics.jsonl'));
  const checkpoints = await listCheckpointFolders(join(path, 'checkpoints'));
  const finalMetadata = checkpoints.includes('final') ? await readJsonObject(join(path, 'checkpoints', 'final', 'metadata.json')) : undefined;
  const checkpointSteps = await Promise.all(
    checkpoints.map(async (checkpoint) => numberOf((await readJsonObject(join(path, 'checkpoints', checkpoint, 'metadata.json')))?.step)),
  );

  const best = bestValidation(evaluations);
  const forgettings = evaluations.map((record) => numberOf(record.forgetting)).filter((value): value is number => value !== null);
  const lastTrainStep = numberOf(train.at(-1)?.step);
  const latestCheckpointStep = Math.max(0, ...checkpointSteps.filter((step): step is number => step !== null));

  return {
    name,
    path,
    status: experimentStatus(path, finalMetadata, knownRun),
    stopReason: typeof finalMetadata?.stopReason === 'string' ? finalMetadata.stopReason : null,
    step: lastTrainStep ?? latestCheckpointStep,
    totalSteps: numberOf(config?.num_steps ?? config?.numSteps),
    bestValLoss: best?.loss ?? null,
    bestStep: best?.step ?? null,
    forgetting: forgettings.at(-1) ?? null,
    maxForgetting: forgettings.length === 0 ? null : Math.max(...forgettings),
    checkpoints,
    updatedAt: await latestModification([
      join(path, 'metrics', 'train_metrics.jsonl'),
      join(path, 'metrics', 'eval_metrics.jsonl'),
      join(path, 'config.json'),
      path,
    ]),
  };
}

/**
 * Reads a metrics file as JSON objects, one per line. Lines that are not JSON objects (such as a
 * last line cut short by a killed process) are left out. A missing file reads as no records.
 */
export async function readJsonLines(path: string): Promise<Record<string, unknown>[]> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      return [];
    }
    throw error;
  }

  const records: Record<string, unknown>[] = [];
  for (const line of text.split('\n')) {
    if (line.trim() === '') {
      continue;
    }
    try {
      const value: unknown = JSON.parse(line);
      if (typeof value === 'object' && value !== null && !Array.isArray(value)) {
        records.push(value as Record<string, unknown>);
      }
    } catch {
      // A partial line is skipped; the complete lines before it still count.
    }
  }
  return records;
}

/**
 * Returns a metrics number: a JSON number, or one of the strings "NaN", "Infinity" and
 * "-Infinity" that the metrics files use for non-finite values. Anything else is null.
 */
export function numberOf(value: unknown): number | null {
  if (typeof value === 'number') {
    return value;
  }
  if (value === 'NaN' || value === 'Infinity' || value === '-Infinity') {
    return Number(value);
  }
  return null;
}

function experimentStatus(
  path: string,
  finalMetadata: Record<string, unknown> | undefined,
  knownRun: KnownRun | null,
): ExperimentStatus {
  if (knownRun !== null && knownRun.path === path) {
    if (knownRun.status === 'running' || knownRun.status === 'stopping' || knownRun.status === 'error') {
      return knownRun.status;
    }
  }
  if (finalMetadata === undefined) {
    return 'incomplete';
  }
  return finalMetadata.stopped === true || finalMetadata.stopReason === 'stopped' ? 'stopped' : 'completed';
}

function bestValidation(evaluations: readonly Record<string, unknown>[]): { loss: number; step: number } | undefined {
  let best: { loss: number; step: number } | undefined;
  for (const record of evaluations) {
    const loss = numberOf(record.valLoss);
    const step = numberOf(record.step);
    if (loss === null || step === null || !Number.isFinite(loss)) {
      continue;
    }
    if (best === undefined || loss < best.loss) {
      best = { loss, step };
    }
  }
  return best;
}

async function listCheckpointFolders(path: string): Promise<string[]> {
  const names = await readdirIfFolder(path);
  if (names === undefined) {
    return [];
  }
  const folders: string[] = [];
  for (const name of names.sort()) {
    // Hidden names are folders being written or deleted.
    if (!name.startsWith('.') && (await readdirIfFolder(join(path, name))) !== undefined) {
      folders.push(name);
    }
  }
  return folders;
}

async function readdirIfFolder(path: string): Promise<string[] | undefined> {
  try {
    return await readdir(path);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') {
      return undefined;
    }
    throw error;
  }
}

async function readJsonObject(path: string): Promise<Record<string, unknown> | undefined> {
  try {
    const value: unknown = JSON.parse(await readFile(path, 'utf8'));
    return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

async function latestModification(paths: readonly string[]): Promise<string | null> {
  let latest = 0;
  for (const path of paths) {
    try {
      latest = Math.max(latest, (await stat(path)).mtimeMs);
    } catch {
      // A missing file does not count.
    }
  }
  return latest === 0 ? null : new Date(latest).toISOString();
}
