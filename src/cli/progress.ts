/**
 * Training progress on the terminal: a bar redrawn in place when stdout is a TTY, and one plain
 * line per report otherwise (`Step 100/1000 | Loss: 2.3456 | Active tiers: [0] | ETA: 15.2m`).
 */
import type { EvalMetricsRecord, TrainMetricsRecord } from '../index.js';

/** Output stream of the progress display, such as `process.stdout`. */
export interface ProgressStream {
  write(text: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

/** Options of {@link ProgressDisplay}. */
export interface ProgressDisplayOptions {
  stream: ProgressStream;
  totalSteps: number;
  /** Steps between plain lines; the first and the last step always get one. */
  logEvery: number;
  /** Step the run starts from (non-zero when it resumes), for the ETA. */
  startStep?: number;
  /** Draw the in-place bar; defaults to `stream.isTTY`. */
  interactive?: boolean;
  /** Prefix of every line, for example `[nested seed 0] `. */
  label?: string;
}

const BAR_WIDTH = 24;

/** Shows step records as a progress bar or as plain lines, and evaluation records as lines. */
export class ProgressDisplay {
  private readonly stream: ProgressStream;
  private readonly totalSteps: number;
  private readonly logEvery: number;
  private readonly interactive: boolean;
  private readonly label: string;
  private startStep: number;
  private startTime: number | undefined;
  private barVisible = false;

  constructor(options: ProgressDisplayOptions) {
    this.stream = options.stream;
    this.totalSteps = options.totalSteps;
    this.logEvery = Math.max(1, options.logEvery);
    this.interactive = options.interactive ?? options.stream.isTTY === true;
    this.label = options.label ?? '';
    this.startStep = options.startStep ?? 0;
  }

  /** Shows one training step. */
  step(record: TrainMetricsRecord): void {
    const now = performance.now();
    if (this.startTime === undefined) {
      // The ETA is measured from the end of the first step of this session, so setup time is not counted.
      this.startTime = now;
      this.startStep = record.step;
    }
    const eta = this.etaSeconds(record.step, now);

    if (this.interactive) {
      this.drawBar(record, eta);
      return;
    }
    if (record.step === 1 || record.step % this.logEvery === 0 || record.step === this.totalSteps || record.step === this.startStep) {
      this.stream.write(`${this.label}${formatStepLine(record, this.totalSteps, eta)}\n`);
    }
  }

  /** Shows one evaluation as a line (above the bar on a TTY). */
  evaluation(record: EvalMetricsRecord): void {
    this.line(formatEvalLine(record));
  }

  /** Writes a line of text, keeping the bar below it on a TTY. */
  line(text: string): void {
    this.clearBar();
    this.stream.write(`${this.label}${text}\n`);
  }

  /** Ends the bar's line so that later output starts on a fresh line. */
  finish(): void {
    if (this.barVisible) {
      this.stream.write('\n');
      this.barVisible = false;
    }
  }

  private etaSeconds(step: number, now: number): number | undefined {
    const done = step - this.startStep;
    if (this.startTime === undefined || done <= 0) {
      return undefined;
    }
    const secondsPerStep = (now - this.startTime) / 1000 / done;
    return secondsPerStep * Math.max(0, this.totalSteps - step);
  }

  private drawBar(record: TrainMetricsRecord, eta: number | undefined): void {
    const fraction = Math.min(1, record.step / this.totalSteps);
    const filled = Math.round(fraction * BAR_WIDTH);
    const bar = `${'#'.repeat(filled)}${'-'.repeat(BAR_WIDTH - filled)}`;
    let text =
      `${this.label}[${bar}] ${(fraction * 100).toFixed(0).padStart(3)}% Step ${record.step}/${this.totalSteps}` +
      ` | Loss: ${formatNumber(record.loss)} | Active tiers: [${record.activeTiers.join(', ')}]` +
      ` | ${Math.round(record.tokensPerSecond)} tok/s | ETA: ${formatDuration(eta)}`;
    const columns = this.stream.columns;
    if (columns !== undefined && columns > 10 && text.length > columns - 1) {
      text = text.slice(0, columns - 1);
    }
    this.stream.write(`\r\x1b[2K${text}`);
    this.barVisible = true;
  }

  private clearBar(): void {
    if (this.barVisible) {
      this.stream.write('\r\x1b[2K');
      this.barVisible = false;
    }
  }
}

/** Formats the plain line of a step: `Step 100/1000 | Loss: 2.3456 | Active tiers: [0] | ETA: 15.2m`. */
export function formatStepLine(record: TrainMetricsRecord, totalSteps: number, etaSeconds: number | undefined): string {
  const skipped = record.skipped ? ' (skipped: non-finite loss or gradient)' : '';
  return (
    `Step ${record.step}/${totalSteps} | Loss: ${formatNumber(record.loss)} | Active tiers: [${record.activeTiers.join(', ')}]` +
    ` | ETA: ${formatDuration(etaSeconds)}${skipped}`
  );
}

/** Formats an evaluation: `Eval at step 50 | Val loss: 3.1234 | Retain loss: 3.5 | Forgetting: +0.0123`. */
export function formatEvalLine(record: EvalMetricsRecord): string {
  const parts = [`Eval at step ${record.step}`];
  if (record.valLoss !== undefined) {
    parts.push(`Val loss: ${formatNumber(record.valLoss)}`);
  }
  if (record.retainLoss !== undefined) {
    parts.push(`Retain loss: ${formatNumber(record.retainLoss)}`);
  }
  if (record.forgetting !== undefined) {
    parts.push(`Forgetting: ${formatSigned(record.forgetting)}`);
  }
  return parts.join(' | ');
}

/** Formats a loss with four decimals; non-finite values as `NaN` or `Infinity`. */
export function formatNumber(value: number): string {
  return Number.isFinite(value) ? value.toFixed(4) : String(value);
}

/** Formats a difference with its sign: `+0.0123`, `-0.0040`. */
export function formatSigned(value: number): string {
  return Number.isFinite(value) && value >= 0 ? `+${value.toFixed(4)}` : formatNumber(value);
}

/** Formats seconds as `42s`, `15.2m` or `1.3h`; `?` when unknown. */
export function formatDuration(seconds: number | undefined): string {
  if (seconds === undefined || !Number.isFinite(seconds)) {
    return '?';
  }
  if (seconds < 60) {
    return `${Math.round(seconds)}s`;
  }
  if (seconds < 3600) {
    return `${(seconds / 60).toFixed(1)}m`;
  }
  return `${(seconds / 3600).toFixed(1)}h`;
}
