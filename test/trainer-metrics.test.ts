import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import { FileFormatError } from '../src/errors.js';
import {
  EvalMetricsRecordSchema,
  MetricsFileWriter,
  TrainMetricsRecordSchema,
  encodeMetricsLine,
  readMetricsFile,
  truncateMetricsFile,
  type TrainMetricsRecord,
} from '../src/trainer/metrics.js';

let dir: string;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'nl-metrics-'));
});

afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

function trainRecord(step: number, loss: number): TrainMetricsRecord {
  return {
    step,
    loss,
    learningRate: 1e-3,
    gradNorm: loss,
    activeTiers: [0],
    tokens: 12,
    trainedTokens: 12 * step,
    tokensPerSecond: 120,
    stepTime: 0.1,
    elapsedTime: 0.1 * step,
    tierStats: [{ tier: 0, frequency: 1, updateCount: step, parameterCount: 2, elementCount: 64 }],
    skipped: !Number.isFinite(loss),
    skippedSteps: 0,
    timestamp: '2026-01-01T00:00:00.000Z',
  };
}

describe('metrics files', () => {
  it('writes non-finite numbers as strings', () => {
    const line = encodeMetricsLine({ step: 1, a: Number.NaN, b: Number.POSITIVE_INFINITY, c: Number.NEGATIVE_INFINITY, d: 0.5 });
    expect(line).toBe('{"step":1,"a":"NaN","b":"Infinity","c":"-Infinity","d":0.5}\n');
    expect(line).not.toContain('null');
  });

  it('round trips through the schema', async () => {
    const path = join(dir, 'train_metrics.jsonl');
    const writer = await MetricsFileWriter.open(path);
    await writer.append(trainRecord(1, 2.5));
    await writer.append(trainRecord(2, Number.NaN));
    await writer.append(trainRecord(3, Number.POSITIVE_INFINITY));
    await writer.close();

    const records = await readMetricsFile(path, TrainMetricsRecordSchema);
    expect(records.map((record) => record.step)).toEqual([1, 2, 3]);
    expect(records[0]).toEqual(trainRecord(1, 2.5));
    expect(records[1]?.loss).toBeNaN();
    expect(records[2]?.loss).toBe(Number.POSITIVE_INFINITY);
  });

  it('appends keep call order', async () => {
    const path = join(dir, 'eval_metrics.jsonl');
    const writer = await MetricsFileWriter.open(path);
    const writes = [1, 2, 3, 4, 5].map((step) => writer.append({ step, tierStats: [], timestamp: 't', valLoss: step / 10 }));
    await Promise.all(writes);
    await writer.close();

    const records = await readMetricsFile(path, EvalMetricsRecordSchema);
    expect(records.map((record) => record.step)).toEqual([1, 2, 3, 4, 5]);
  });

  it('closed writer rejects appends', async () => {
    const writer = await MetricsFileWriter.open(join(dir, 'x.jsonl'));
    await writer.close();
    await expect(writer.append({ step: 1 })).rejects.toThrow(FileFormatError);
  });

  it('invalid lines raise or are skipped', async () => {
    const path = join(dir, 'train_metrics.jsonl');
    await writeFile(path, `${encodeMetricsLine(trainRecord(1, 1))}{"step":2,"loss":nu`);

    await expect(readMetricsFile(path, TrainMetricsRecordSchema)).rejects.toThrow(/Invalid metrics line 2/);
    const records = await readMetricsFile(path, TrainMetricsRecordSchema, { onInvalidLine: 'skip' });
    expect(records.map((record) => record.step)).toEqual([1]);
  });

  it('null in place of a number is invalid', async () => {
    const path = join(dir, 'train_metrics.jsonl');
    await writeFile(path, `${JSON.stringify({ ...trainRecord(1, 1), loss: null })}\n`);
    await expect(readMetricsFile(path, TrainMetricsRecordSchema)).rejects.toThrow(/loss/);
  });

  it('truncation keeps steps up to the limit', async () => {
    const path = join(dir, 'train_metrics.jsonl');
    const lines = [1, 2, 3, 4].map((step) => encodeMetricsLine(trainRecord(step, step))).join('');
    // The last line was cut short by a killed process.
    await writeFile(path, `${lines}{"step":5,"lo`);

    const kept = await truncateMetricsFile(path, 2);

    expect(kept).toBe(2);
    const text = await readFile(path, 'utf8');
    expect(text).toBe([1, 2].map((step) => encodeMetricsLine(trainRecord(step, step))).join(''));
  });

  it('truncation of a missing file does nothing', async () => {
    expect(await truncateMetricsFile(join(dir, 'missing.jsonl'), 3)).toBe(0);
  });

  it('missing file reads as empty', async () => {
    expect(await readMetricsFile(join(dir, 'missing.jsonl'), TrainMetricsRecordSchema)).toEqual([]);
  });
});
