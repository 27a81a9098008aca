import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { NestedLoRATrainer } from '../src/trainer/index.js';
import { tinyConfig, writeTinyExperimentInputs, type TinyInputs } from './fixtures/trainer/tiny-model.js';

let root: string;
let inputs: TinyInputs;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'nl-trainer-leaks-'));
  inputs = await writeTinyExperimentInputs(root);
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('trainer memory', () => {
  it('no tensor leaks over 50 steps', async () => {
    const before = tf.memory().numTensors;
    const trainer = new NestedLoRATrainer(
      tinyConfig(inputs, root, {
        numSteps: 50,
        gradientAccumulationSteps: 2,
        evalEvery: 10,
        checkpointEvery: 10,
        keepLastNCheckpoints: 2,
        valDataPath: inputs.validPath,
        retainDataPath: inputs.retainPath,
      }),
    );
    await trainer.setup();

    const tensorsAtStep = new Map<number, number>();
    trainer.on('step', (record) => tensorsAtStep.set(record.step, tf.memory().numTensors));
    const done = await trainer.train();

    expect(done.step).toBe(50);
    // Steps 10 and 50 both follow an evaluation and a checkpoint; 25 follows neither.
    expect(tensorsAtStep.get(50)).toBe(tensorsAtStep.get(10));
    expect(tensorsAtStep.get(25)).toBe(tensorsAtStep.get(10));
    expect((await readdir(join(root, 'run', 'checkpoints'))).sort()).toEqual(['best', 'checkpoint_0000040', 'checkpoint_0000050', 'final']);

    trainer.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });
});
