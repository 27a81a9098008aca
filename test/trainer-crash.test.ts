import { fork } from 'node:child_process';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import type { NestedLearningConfigInput } from '../src/config/index.js';
import { readSafetensors } from '../src/io/index.js';
import { NestedLoRATrainer, readMetricsFile, TrainMetricsRecordSchema } from '../src/trainer/index.js';
import { tinyConfig, writeTinyExperimentInputs, type TinyInputs } from './fixtures/trainer/tiny-model.js';

const CHILD_SCRIPT = join(import.meta.dirname, 'fixtures', 'trainer', 'crash-child.ts');

let root: string;
let inputs: TinyInputs;
let referenceLosses: number[];
let referenceAdapter: Record<string, number[]>;

function crashConfig(experimentName: string, overrides: Record<string, unknown> = {}): NestedLearningConfigInput {
  return tinyConfig(inputs, join(root, 'out'), {
    experimentName,
    numSteps: 6,
    evalEvery: 2,
    checkpointEvery: 2,
    keepLastNCheckpoints: -1,
    valDataPath: inputs.validPath,
    ...overrides,
  });
}

async function readAdapter(experimentName: string): Promise<Record<string, number[]>> {
  const { tensors } = await readSafetensors(join(root, 'out', experimentName, 'checkpoints', 'final', 'adapters.safetensors'));
  const arrays = Object.fromEntries(Object.entries(tensors).map(([name, tensor]) => [name, Array.from(tensor.dataSync())]));
  tf.dispose(Object.values(tensors));
  return arrays;
}

async function readLosses(experimentName: string): Promise<number[]> {
  const records = await readMetricsFile(join(root, 'out', experimentName, 'metrics', 'train_metrics.jsonl'), TrainMetricsRecordSchema);
  expect(records.map((record) => record.step)).toEqual([1, 2, 3, 4, 5, 6]);
  return records.map((record) => record.loss);
}

/** Runs the child script and resolves with how it ended. */
function runChild(
  config: Record<string, unknown>,
  killPoint: string,
): Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }> {
  const child = fork(CHILD_SCRIPT, [JSON.stringify(config), killPoint], {
    execArgv: ['--import', 'tsx'],
    stdio: 'pipe',
  });
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('exit', (code, signal) => resolve({ code, signal, stderr }));
  });
}

/** Resumes a killed run to the end and checks that it matches the uninterrupted reference run. */
async function resumeAndCompare(experimentName: string, overrides: Record<string, unknown> = {}): Promise<string | undefined> {
  const before = tf.memory().numTensors;
  const trainer = new NestedLoRATrainer(crashConfig(experimentName, { ...overrides, resume: true }));
  await trainer.setup();
  const resumedFrom = trainer.resumedFromCheckpoint;
  const done = await trainer.train();
  trainer.dispose();
  expect(tf.memory().numTensors).toBe(before);

  expect(done.step).toBe(6);
  const losses = await readLosses(experimentName);
  losses.forEach((loss, index) => expect(Math.abs(loss - referenceLosses[index]!)).toBeLessThanOrEqual(1e-6));
  expect(await readAdapter(experimentName)).toEqual(referenceAdapter);
  const leftovers = (await readdir(join(root, 'out', experimentName, 'checkpoints'))).filter((name) => name.startsWith('.'));
  expect(leftovers).toEqual([]);
  return resumedFrom;
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'nl-trainer-crash-'));
  inputs = await writeTinyExperimentInputs(root);

  const reference = new NestedLoRATrainer(crashConfig('reference'));
  await reference.setup();
  await reference.train();
  reference.dispose();
  referenceLosses = await readLosses('reference');
  referenceAdapter = await readAdapter('reference');
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('killed while writing a checkpoint', () => {
  // Each case: where the process dies, and the checkpoint the next run must resume from. Without
  // validation data there is no best/ folder, so the periodic checkpoints are the only candidates.
  const withoutValidation = { valDataPath: undefined };
  const cases = [
    { killPoint: 'file:checkpoint_0000004:adapters.safetensors', overrides: withoutValidation, resumedFrom: 'checkpoint_0000002' },
    { killPoint: 'file:checkpoint_0000004:optimizer.safetensors', overrides: withoutValidation, resumedFrom: 'checkpoint_0000002' },
    { killPoint: 'file:checkpoint_0000004:metadata.json', overrides: withoutValidation, resumedFrom: 'checkpoint_0000002' },
    // best/ is written at step 2 before checkpoint_0000002, so nothing is complete yet: the run starts over.
    { killPoint: 'file:best:metadata.json', overrides: {}, resumedFrom: undefined },
    { killPoint: 'file:final:trainer_state.json', overrides: {}, resumedFrom: 'checkpoint_0000006' },
  ];

  it.each(cases)('resumes after a kill at $killPoint', async ({ killPoint, overrides, resumedFrom }) => {
    const name = killPoint.replace(/[^A-Za-z0-9]/g, '_');
    const child = await runChild(crashConfig(name, overrides), killPoint);
    expect(child.signal, child.stderr).toBe('SIGKILL');

    const resumed = await resumeAndCompare(name, overrides);
    expect(resumed).toBe(resumedFrom === undefined ? undefined : join(root, 'out', name, 'checkpoints', resumedFrom));
  });

  it('resumes after kills at random moments', async () => {
    // Delays within the training phase of the child, which took 0.3 to 0.6 s after setup on a 2-CPU machine,
    // so that the kills land at different points; a run that ends first (exit code 0) is resumed too.
    for (const delay of [90, 260]) {
      const name = `delay_${delay}`;
      const child = await runChild(crashConfig(name), `delay:${delay}`);
      expect(child.signal === 'SIGKILL' || child.code === 0, child.stderr).toBe(true);
      await resumeAndCompare(name);
    }
  });
});
