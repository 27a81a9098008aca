/**
 * Metrics records of a training run and the JSONL files that hold them.
 *
 * `metrics/train_metrics.jsonl` gets one line per training step and `metrics/eval_metrics.jsonl`
 * one line per evaluation. Non-finite numbers are written as the strings `"NaN"`, `"Infinity"` and
 * `"-Infinity"`, because JSON has no literal for them and `JSON.stringify` would write `null`. The
 * schemas below turn them back into numbers.
 */
import { open, readFile } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { z } from 'zod';

import { FileFormatError } from '../errors.js';
import { writeFileAtomic } from '../io/index.js';

/** A number as written in a metrics file: a JSON number, or one of the strings for non-finite values. */
export const MetricNumberSchema = z
  .union([z.number(), z.enum(['NaN', 'Infinity', '-Infinity'])])
  .transform((value) => (typeof value === 'number' ? value : Number(value)))
  .describe('A number; NaN and the infinities are written as the strings "NaN", "Infinity" and "-Infinity".');

/** Statistics of one tier at the time a record was written. */
export const TierStatsRecordSchema = z.object({
  tier: z.number().int().min(0).describe('Tier index; tier 0 is the fastest.'),
  frequency: z.number().int().min(1).describe('Update frequency: the tier is active at steps that are multiples of it.'),
  updateCount: z.number().int().min(0).describe('Number of optimizer updates this tier has taken.'),
  parameterCount: z.number().int().min(0).describe('Number of parameter tensors in the tier.'),
  elementCount: z.number().int().min(0).describe('Number of scalar elements over the tier\'s parameters.'),
});

/** One line of `train_metrics.jsonl`: one optimizer step. */
export const TrainMetricsRecordSchema = z.object({
  step: z.number().int().min(1).describe('Optimizer step, counted from 1.'),
  loss: MetricNumberSchema.describe('Token-weighted mean loss over the step\'s micro-batches.'),
  learningRate: MetricNumberSchema.describe('Learning rate applied at this step (before per-tier scales).'),
  gradNorm: MetricNumberSchema.describe('Global L2 norm of the LoRA gradients before clipping.'),
  activeTiers: z.array(z.number().int().min(0)).describe('Tiers whose parameters were updated at this step.'),
  tokens: z.number().int().min(0).describe('Target tokens over the step\'s micro-batches.'),
  trainedTokens: z.number().int().min(0).describe('Target tokens over all steps so far, skipped steps included.'),
  tokensPerSecond: MetricNumberSchema.describe('Target tokens of this step divided by its wall time.'),
  stepTime: MetricNumberSchema.describe('Wall time of the step in seconds.'),
  elapsedTime: MetricNumberSchema.describe('Training wall time so far in seconds, summed over resumed sessions.'),
  tierStats: z.array(TierStatsRecordSchema).describe('Per-tier statistics after the step.'),
  skipped: z.boolean().describe('True when the loss or gradient norm was non-finite and the step was not applied.'),
  skippedSteps: z.number().int().min(0).describe('Number of skipped steps so far.'),
  timestamp: z.string().describe('Time the record was written, ISO 8601.'),
});

/** One line of `eval_metrics.jsonl`: one evaluation. */
export const EvalMetricsRecordSchema = z.object({
  step: z.number().int().min(0).describe('Optimizer step after which the evaluation ran (0: before training).'),
  valLoss: MetricNumberSchema.optional().describe('Token-weighted mean loss on the validation batches.'),
  valPerplexity: MetricNumberSchema.optional().describe('exp(valLoss).'),
  valTokens: z.number().int().min(0).optional().describe('Target tokens in the validation batches.'),
  retainLoss: MetricNumberSchema.optional().describe('Token-weighted mean loss on the retain set.'),
  retainBaseline: MetricNumberSchema.optional().describe('Retain loss measured once before training.'),
  forgetting: MetricNumberSchema.optional().describe('retainLoss minus retainBaseline; positive means the old domain got worse.'),
  tierStats: z.array(TierStatsRecordSchema).describe('Per-tier statistics at the evaluation.'),
  timestamp: z.string().describe('Time the record was written, ISO 8601.'),
});

/** Statistics of one tier in a metrics record; fields in {@link TierStatsRecordSchema}. */
export type TierStatsRecord = z.output<typeof TierStatsRecordSchema>;
/** One line of `train_metrics.jsonl` and the record of a `step` event; fields in {@link TrainMetricsRecordSchema}. */
export type TrainMetricsRecord = z.output<typeof TrainMetricsRecordSchema>;
/** One line of `eval_metrics.jsonl` and the record of an `eval` event; fields in {@link EvalMetricsRecordSchema}. */
export type EvalMetricsRecord = z.output<typeof EvalMetricsRecordSchema>;

/** Serialises a record as one JSON line (with the trailing newline), writing non-finite numbers as strings. */
export function encodeMetricsLine(record: object): string {
  return `${JSON.stringify(record, encodeNonFinite)}\n`;
}

/** Serialises a value as indented JSON (with a final newline), writing non-finite numbers as strings. */
export function stringifyWithNonFinite(value: unknown): string {
  return `${JSON.stringify(value, encodeNonFinite, 2)}\n`;
}

/**
 * An append-only JSONL file. Each {@link MetricsFileWriter.append} hands its line to the operating
 * system in one `write` call before it resolves, so a line survives the process being killed; only a
 * machine crash can lose lines that were not yet synced to disk (see `fsync`).
 */
export class MetricsFileWriter {
  private pending: Promise<void> = Promise.resolve();

  private constructor(
    /** Path of the file. */
    readonly path: string,
    private handle: FileHandle | undefined,
    private readonly fsync: boolean,
  ) {}

  /** Opens `path` for appending, creating it when missing. With `fsync`, every line is synced to disk. */
  static async open(path: string, options: { fsync?: boolean } = {}): Promise<MetricsFileWriter> {
    const handle = await open(path, 'a');
    return new MetricsFileWriter(path, handle, options.fsync ?? false);
  }

  /** Appends one record as a line. Appends are written in call order. */
  append(record: object): Promise<void> {
    const line = encodeMetricsLine(record);
    const write = this.pending.then(async () => {
      if (this.handle === undefined) {
        throw new FileFormatError('METRICS_FILE_CLOSED', `Cannot append to ${this.path}: the metrics writer is closed.`, {
          details: { path: this.path },
        });
      }
      await this.handle.write(line);
      if (this.fsync) {
        await this.handle.datasync();
      }
    });
    // A failed write must not block later ones; the caller still sees the failure through `write`.
    this.pending = write.catch(() => undefined);
    return write;
  }

  /** Waits for pending appends and closes the file. Closing twice does nothing. */
  async close(): Promise<void> {
    await this.pending;
    const handle = this.handle;
    this.handle = undefined;
    await handle?.close();
  }
}

/** Options of {@link readMetricsFile}. */
export interface ReadMetricsOptions {
  /**
   * Handling of a line that is not valid JSON or does not match the schema: `error` throws, `skip`
   * leaves it out. A line cut short by a killed process is the usual case for `skip`.
   * @default 'error'
   */
  onInvalidLine?: 'error' | 'skip';
}

/** Reads a metrics file and validates every line against `schema`. A missing file reads as no records. */
export async function readMetricsFile<Schema extends z.ZodType>(
  path: string,
  schema: Schema,
  options: ReadMetricsOptions = {},
): Promise<z.output<Schema>[]> {
  const text = await readTextIfExists(path);
  if (text === undefined) {
    return [];
  }

  const records: z.output<Schema>[] = [];
  const lines = text.split('\n');
  for (let index = 0; index < lines.length; index += 1) {
    const line = lines[index] ?? '';
    if (line.trim() === '') {
      continue;
    }

    const parsed = parseMetricsLine(line, schema);
    if (parsed.ok) {
      records.push(parsed.value);
    } else if ((options.onInvalidLine ?? 'error') === 'error') {
      throw new FileFormatError(
        'METRICS_INVALID_LINE',
        `Invalid metrics line ${index + 1} in ${path}: ${parsed.reason}. Line starts with: ${line.slice(0, 80)}`,
        { details: { path, lineNumber: index + 1 } },
      );
    }
  }
  return records;
}

/**
 * Rewrites a metrics file atomically, keeping only the lines whose `step` is at most `maxStep`.
 * Lines that are not valid JSON objects with a numeric `step` (such as a last line cut short by a
 * killed process) are dropped. Returns the number of lines kept; a missing file is left missing.
 */
export async function truncateMetricsFile(path: string, maxStep: number): Promise<number> {
  const text = await readTextIfExists(path);
  if (text === undefined) {
    return 0;
  }

  const kept: string[] = [];
  for (const line of text.split('\n')) {
    const step = readStep(line);
    if (step !== undefined && step <= maxStep) {
      kept.push(`${line}\n`);
    }
  }

  await writeFileAtomic(path, kept.join(''));
  return kept.length;
}

function encodeNonFinite(_key: string, value: unknown): unknown {
  if (typeof value === 'number' && !Number.isFinite(value)) {
    return String(value);
  }
  return value;
}

function parseMetricsLine<Schema extends z.ZodType>(
  line: string,
  schema: Schema,
): { ok: true; value: z.output<Schema> } | { ok: false; reason: string } {
  let json: unknown;
  try {
    json = JSON.parse(line);
  } catch (error) {
    return { ok: false, reason: `not valid JSON (${(error as Error).message})` };
  }

  const result = schema.safeParse(json);
  if (!result.success) {
    const issues = result.error.issues.map((issue) => `${issue.path.join('.') || '(root)'}: ${issue.message}`);
    return { ok: false, reason: issues.join('; ') };
  }
  return { ok: true, value: result.data };
}

function readStep(line: string): number | undefined {
  if (line.trim() === '') {
    return undefined;
  }
  try {
    const value: unknown = JSON.parse(line);
    if (typeof value === 'object' && value !== null && typeof (value as { step?: unknown }).step === 'number') {
      return (value as { step: number }).step;
    }
  } catch {
    // A line that does not parse is dropped by the caller.
  }
  return undefined;
}

async function readTextIfExists(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      return undefined;
    }
    throw error;
  }
}
