/**
 * The report of `nested-learning compare`: statistics over seeds, the Markdown table and the SVG
 * chart of the validation-loss and forgetting curves of both methods.
 */
import type { EvalMetricsRecord } from '../index.js';

/** The two methods a comparison runs. */
export type MethodName = 'lora' | 'nested';

/** The measured outcome of one run. */
export interface ComparisonRun {
  method: MethodName;
  seed: number;
  tierUpdateFrequencies: number[];
  steps: number;
  /** Validation loss on the new domain at the last evaluation. */
  valLoss: number;
  /** Retain loss minus its value before training, at the last evaluation. */
  forgetting: number;
  /** Training wall time in seconds. */
  trainingSeconds: number;
  experimentFolder: string;
  /** Evaluations in step order, the one before training first. */
  curve: Pick<EvalMetricsRecord, 'step' | 'valLoss' | 'forgetting'>[];
}

/** Mean and sample standard deviation of some values. */
export interface Spread {
  mean: number;
  /** Sample standard deviation (n - 1 in the denominator); 0 for a single value. */
  std: number;
  min: number;
  max: number;
  count: number;
}

/** Computes mean, sample standard deviation, minimum and maximum. */
export function spread(values: readonly number[]): Spread {
  const count = values.length;
  const mean = values.reduce((sum, value) => sum + value, 0) / count;
  const variance = count > 1 ? values.reduce((sum, value) => sum + (value - mean) ** 2, 0) / (count - 1) : 0;
  return { mean, std: Math.sqrt(variance), min: Math.min(...values), max: Math.max(...values), count };
}

/** Everything the report states, computed from the runs. */
export interface ComparisonSummary {
  seeds: number[];
  numSteps: number;
  lora: { valLoss: Spread; forgetting: Spread; seconds: Spread; frequencies: number[] };
  nested: { valLoss: Spread; forgetting: Spread; seconds: Spread; frequencies: number[] };
  /** Per-seed differences nested minus LoRA. */
  difference: { valLoss: Spread; forgetting: Spread };
  /** Seeds in which nested learning forgot less than plain LoRA. */
  nestedForgotLessIn: number;
  /** Seeds in which nested learning reached a lower new-domain validation loss. */
  nestedLearnedMoreIn: number;
}

/** Pairs the runs by seed and computes the statistics of both methods and of their differences. */
export function summarizeComparison(runs: readonly ComparisonRun[], numSteps: number): ComparisonSummary {
  const seeds = [...new Set(runs.map((run) => run.seed))].sort((a, b) => a - b);
  const find = (method: MethodName, seed: number): ComparisonRun => {
    const run = runs.find((candidate) => candidate.method === method && candidate.seed === seed);
    if (run === undefined) {
      throw new Error(`No ${method} run for seed ${seed}.`);
    }
    return run;
  };
  const lora = seeds.map((seed) => find('lora', seed));
  const nested = seeds.map((seed) => find('nested', seed));
  const method = (list: ComparisonRun[]) => ({
    valLoss: spread(list.map((run) => run.valLoss)),
    forgetting: spread(list.map((run) => run.forgetting)),
    seconds: spread(list.map((run) => run.trainingSeconds)),
    frequencies: list[0]?.tierUpdateFrequencies ?? [],
  });
  return {
    seeds,
    numSteps,
    lora: method(lora),
    nested: method(nested),
    difference: {
      valLoss: spread(seeds.map((_, i) => (nested[i] as ComparisonRun).valLoss - (lora[i] as ComparisonRun).valLoss)),
      forgetting: spread(seeds.map((_, i) => (nested[i] as ComparisonRun).forgetting - (lora[i] as ComparisonRun).forgetting)),
    },
    nestedForgotLessIn: seeds.filter((_, i) => (nested[i] as ComparisonRun).forgetting < (lora[i] as ComparisonRun).forgetting).length,
    nestedLearnedMoreIn: seeds.filter((_, i) => (nested[i] as ComparisonRun).valLoss < (lora[i] as ComparisonRun).valLoss).length,
  };
}

const format = (value: number, digits = 4): string => (Number.isFinite(value) ? value.toFixed(digits) : String(value));
const signed = (value: number): string => (value >= 0 ? `+${format(value)}` : format(value));
const meanStd = (value: Spread, digits = 4, withSign = false): string =>
  `${withSign ? signed(value.mean) : format(value.mean, digits)} ± ${format(value.std, digits)}`;

/**
 * States the result as measured: which method forgot less and learned more, in how many seeds, and
 * whether the mean difference exceeds its spread over seeds.
 */
export function describeResult(summary: ComparisonSummary): string[] {
  const count = summary.seeds.length;
  const nestedName = `nested [${summary.nested.frequencies.join(', ')}]`;
  const clear = (difference: Spread): boolean => Math.abs(difference.mean) > difference.std;

  const forgetting = summary.difference.forgetting;
  const forgettingSentence =
    `Forgetting: ${nestedName} ${forgetting.mean < 0 ? 'forgot less' : 'forgot more'} than plain LoRA on average ` +
    `(difference ${signed(forgetting.mean)} ± ${format(forgetting.std)} in retain loss) and forgot less in ` +
    `${summary.nestedForgotLessIn} of ${count} seeds. ` +
    (clear(forgetting)
      ? 'The mean difference is larger than its standard deviation over seeds.'
      : 'The mean difference is within one standard deviation over seeds, so these runs do not separate the methods.');

  const valLoss = summary.difference.valLoss;
  const valSentence =
    `New-domain validation loss: ${nestedName} ended ${valLoss.mean < 0 ? 'lower' : 'higher'} than plain LoRA on average ` +
    `(difference ${signed(valLoss.mean)} ± ${format(valLoss.std)}) and lower in ${summary.nestedLearnedMoreIn} of ${count} seeds. ` +
    (clear(valLoss)
      ? 'The mean difference is larger than its standard deviation over seeds.'
      : 'The mean difference is within one standard deviation over seeds.');

  const slowest = Math.max(...summary.nested.frequencies);
  const context =
    `With the same step budget, the slowest nested tier takes 1/${slowest} of the optimizer updates that every plain-LoRA ` +
    'parameter takes, so less forgetting and less new-domain learning can both follow from fewer updates.';
  return [forgettingSentence, valSentence, context];
}

/** Renders `report.md`: the setup, the table over seeds, the per-seed rows, the result and the chart. */
export function renderMarkdown(summary: ComparisonSummary, runs: readonly ComparisonRun[], setup: readonly string[], chartFile: string): string {
  const count = summary.seeds.length;
  const loraName = `plain LoRA [${summary.lora.frequencies.join(', ')}]`;
  const nestedName = `nested [${summary.nested.frequencies.join(', ')}]`;
  const lines = [
    '# Plain LoRA vs nested learning',
    '',
    ...setup.map((line) => `- ${line}`),
    '',
    `## Result (mean ± sample standard deviation over ${count} seeds: ${summary.seeds.join(', ')})`,
    '',
    '| method | new-domain validation loss | old-domain forgetting | training time (s) |',
    '| --- | ---: | ---: | ---: |',
    `| ${loraName} | ${meanStd(summary.lora.valLoss)} | ${meanStd(summary.lora.forgetting, 4, true)} | ${meanStd(summary.lora.seconds, 1)} |`,
    `| ${nestedName} | ${meanStd(summary.nested.valLoss)} | ${meanStd(summary.nested.forgetting, 4, true)} | ${meanStd(summary.nested.seconds, 1)} |`,
    `| nested − LoRA, paired by seed | ${meanStd(summary.difference.valLoss, 4, true)} | ${meanStd(summary.difference.forgetting, 4, true)} | |`,
    '',
    'Forgetting is the retain loss on the old domain minus its value before training; positive means the old domain got worse. ' +
      'Lower is better in both loss columns. Training time is the wall time of the training loop, periodic evaluations included.',
    '',
    ...describeResult(summary),
    '',
    '## Runs',
    '',
    '| method | seed | validation loss | forgetting | training time (s) | experiment folder |',
    '| --- | ---: | ---: | ---: | ---: | --- |',
    ...[...runs]
      .sort((a, b) => a.seed - b.seed || a.method.localeCompare(b.method))
      .map(
        (run) =>
          `| ${run.method === 'lora' ? loraName : nestedName} | ${run.seed} | ${format(run.valLoss)} | ${signed(run.forgetting)} | ` +
          `${format(run.trainingSeconds, 1)} | ${run.experimentFolder} |`,
      ),
    '',
    '## Curves',
    '',
    `![Validation loss and forgetting over training steps](${chartFile})`,
    '',
    'Thick lines are the means over seeds, thin lines the single runs.',
    '',
  ];
  return lines.join('\n');
}

const COLORS: Record<MethodName, string> = { lora: '#d95f02', nested: '#1b9e77' };
const PANEL = { width: 420, height: 300, left: 64, right: 16, top: 36, bottom: 44 };

/** Renders `report.svg`: validation loss (left) and forgetting (right) against the step, per method. */
export function renderSvg(runs: readonly ComparisonRun[], summary: ComparisonSummary): string {
  const width = PANEL.width * 2;
  const height = PANEL.height + 30;
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="#ffffff"/>`,
    panel(runs, 'valLoss', 'New-domain validation loss', 0),
    panel(runs, 'forgetting', 'Old-domain forgetting (retain loss − before)', PANEL.width),
  ];

  const legendY = PANEL.height + 16;
  const entries: [MethodName, string][] = [
    ['lora', `plain LoRA [${summary.lora.frequencies.join(', ')}]`],
    ['nested', `nested [${summary.nested.frequencies.join(', ')}]`],
  ];
  entries.forEach(([method, label], index) => {
    const x = PANEL.left + index * 240;
    parts.push(
      `<line x1="${x}" y1="${legendY}" x2="${x + 24}" y2="${legendY}" stroke="${COLORS[method]}" stroke-width="3"/>`,
      `<text x="${x + 30}" y="${legendY + 4}">${escapeXml(label)}, mean of ${summary.seeds.length} seeds</text>`,
    );
  });
  parts.push('</svg>', '');
  return parts.join('\n');
}

type CurveField = 'valLoss' | 'forgetting';

function panel(runs: readonly ComparisonRun[], field: CurveField, title: string, offsetX: number): string {
  const points = runs.flatMap((run) => run.curve.filter((point) => Number.isFinite(point[field])).map((point) => ({ x: point.step, y: point[field] as number })));
  if (points.length === 0) {
    return `<text x="${offsetX + PANEL.left}" y="${PANEL.top}">${escapeXml(title)}: no data</text>`;
  }
  const xMax = Math.max(1, ...points.map((point) => point.x));
  const [yMin, yMax] = paddedRange(points.map((point) => point.y));
  const plotWidth = PANEL.width - PANEL.left - PANEL.right;
  const plotHeight = PANEL.height - PANEL.top - PANEL.bottom;
  const sx = (x: number): number => offsetX + PANEL.left + (x / xMax) * plotWidth;
  const sy = (y: number): number => PANEL.top + (1 - (y - yMin) / (yMax - yMin)) * plotHeight;

  const parts = [
    `<text x="${offsetX + PANEL.width / 2}" y="20" text-anchor="middle" font-weight="bold">${escapeXml(title)}</text>`,
    `<rect x="${sx(0)}" y="${PANEL.top}" width="${plotWidth}" height="${plotHeight}" fill="none" stroke="#888888"/>`,
  ];
  for (const tick of ticks(yMin, yMax)) {
    parts.push(
      `<line x1="${sx(0)}" y1="${sy(tick).toFixed(1)}" x2="${sx(xMax)}" y2="${sy(tick).toFixed(1)}" stroke="#e5e5e5"/>`,
      `<text x="${sx(0) - 6}" y="${(sy(tick) + 4).toFixed(1)}" text-anchor="end">${tickLabel(tick)}</text>`,
    );
  }
  for (const tick of ticks(0, xMax)) {
    parts.push(`<text x="${sx(tick).toFixed(1)}" y="${PANEL.top + plotHeight + 16}" text-anchor="middle">${tickLabel(tick)}</text>`);
  }
  parts.push(`<text x="${offsetX + PANEL.left + plotWidth / 2}" y="${PANEL.top + plotHeight + 34}" text-anchor="middle">step</text>`);

  for (const method of ['lora', 'nested'] as const) {
    const methodRuns = runs.filter((run) => run.method === method);
    for (const run of methodRuns) {
      parts.push(polyline(run.curve.map((point) => ({ x: point.step, y: point[field] })), sx, sy, COLORS[method], 1, 0.35));
    }
    parts.push(polyline(meanCurve(methodRuns, field), sx, sy, COLORS[method], 2.5, 1));
  }
  return parts.join('\n');
}

/** Averages the runs' values at the steps every run evaluated. */
function meanCurve(runs: readonly ComparisonRun[], field: CurveField): { x: number; y: number | undefined }[] {
  const first = runs[0];
  if (first === undefined) {
    return [];
  }
  return first.curve
    .map((point) => point.step)
    .filter((step) => runs.every((run) => run.curve.some((point) => point.step === step && Number.isFinite(point[field]))))
    .map((step) => {
      const values = runs.map((run) => run.curve.find((point) => point.step === step)?.[field] as number);
      return { x: step, y: values.reduce((sum, value) => sum + value, 0) / values.length };
    });
}

function polyline(
  points: { x: number; y: number | undefined }[],
  sx: (x: number) => number,
  sy: (y: number) => number,
  color: string,
  width: number,
  opacity: number,
): string {
  const coordinates = points
    .filter((point): point is { x: number; y: number } => point.y !== undefined && Number.isFinite(point.y))
    .map((point) => `${sx(point.x).toFixed(1)},${sy(point.y).toFixed(1)}`)
    .join(' ');
  return `<polyline points="${coordinates}" fill="none" stroke="${color}" stroke-width="${width}" stroke-opacity="${opacity}"/>`;
}

function paddedRange(values: number[]): [number, number] {
  let low = Math.min(...values);
  let high = Math.max(...values);
  if (high - low < 1e-9) {
    low -= 0.5;
    high += 0.5;
  }
  const margin = (high - low) * 0.05;
  return [low - margin, high + margin];
}

/** Returns about five round tick values covering [low, high]. */
function ticks(low: number, high: number): number[] {
  const rough = (high - low) / 5;
  const magnitude = 10 ** Math.floor(Math.log10(rough));
  const step = [1, 2, 5, 10].map((factor) => factor * magnitude).find((candidate) => candidate >= rough) ?? rough;
  const result: number[] = [];
  for (let value = Math.ceil(low / step) * step; value <= high + step * 1e-9; value += step) {
    result.push(Number(value.toPrecision(12)));
  }
  return result;
}

function tickLabel(value: number): string {
  return Number.isInteger(value) ? String(value) : String(Number(value.toPrecision(3)));
}

function escapeXml(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}
