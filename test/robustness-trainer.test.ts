import { cp, mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import * as tf from '@tensorflow/tfjs';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';

import { ConfigError, FileFormatError, NestedLearningError } from '../src/errors.js';
import { readSafetensors, writeSafetensors } from '../src/io/index.js';
import { NestedLoRATrainer } from '../src/trainer/index.js';
import { tinyConfig, writeTinyExperimentInputs, type TinyInputs } from './fixtures/trainer/tiny-model.js';

let root: string;
let outputDir: string;
let inputs: TinyInputs;
let tensorsBefore: number;

/** The finished run that resume tests copy: checkpoints at steps 2 and 4, and final/ at step 4. */
const BASE = 'base';

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'nl-robust-trainer-'));
  outputDir = join(root, 'out');
  inputs = await writeTinyExperimentInputs(root, { numHiddenLayers: 2 });

  const trainer = new NestedLoRATrainer(config(BASE, { numSteps: 4, checkpointEvery: 2 }));
  await trainer.setup();
  await trainer.train();
  trainer.dispose();
  tensorsBefore = tf.memory().numTensors;
});

afterEach(() => {
  expect(tf.memory().numTensors).toBe(tensorsBefore);
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

function config(experimentName: string, overrides: Record<string, unknown> = {}): ReturnType<typeof tinyConfig> {
  return tinyConfig(inputs, outputDir, { experimentName, numSteps: 2, ...overrides });
}

/** Copies the base run to a new experiment folder and returns its path. */
async function copyBaseRun(experimentName: string): Promise<string> {
  const folder = join(outputDir, experimentName);
  await cp(join(outputDir, BASE), folder, { recursive: true });
  return folder;
}

/** Runs setup() of a new trainer, expecting it to fail, and returns the error after disposing the trainer. */
async function setupFailure(trainer: NestedLoRATrainer): Promise<NestedLearningError> {
  try {
    await trainer.setup();
  } catch (error) {
    trainer.dispose();
    expect(NestedLearningError.isInstance(error)).toBe(true);
    return error as NestedLearningError;
  }
  trainer.dispose();
  throw new Error('expected setup() to fail');
}

describe('trainer robustness', () => {
  it('rejects outputDir that is a file', async () => {
    // Guards against a bare ENOTDIR from readdir when outputDir names a file.
    const file = join(root, 'not-a-folder');
    await writeFile(file, 'keep me');

    const error = await setupFailure(new NestedLoRATrainer(config('run', { outputDir: file })));

    expect(error).toBeInstanceOf(ConfigError);
    expect(error.code).toBe('EXPERIMENT_FOLDER_INVALID');
    expect(error.message).toBe(
      `Cannot create the experiment folder ${join(file, 'run')}: ${file}, a parent of the experiment folder ` +
        `(outputDir ${JSON.stringify(file)}), is a file. Set outputDir and experimentName to a folder path.`,
    );
    expect(await readFile(file, 'utf8')).toBe('keep me');
  });
  it('rejects dispose during setup', async () => {
    // Guards against dispose() during setup() marking the trainer disposed while setup() went on
    // to load a model that nothing disposed afterwards.
    const trainer = new NestedLoRATrainer(config('dispose-in-setup'));
    const setup = trainer.setup();

    expect(() => trainer.dispose()).toThrow('Cannot dispose the trainer while setup() runs. Await setup() first, then call dispose().');
    await setup;
    trainer.dispose();
  });
});
