import { cp, mkdir, mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
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

  it('rejects checkpoints that is a file', async () => {
    // Guards against a bare EEXIST from mkdir when a resumed experiment folder has a file named checkpoints.
    const folder = join(outputDir, 'checkpoints-file');
    await mkdir(folder, { recursive: true });
    await writeFile(join(folder, 'checkpoints'), 'keep me');

    const error = await setupFailure(new NestedLoRATrainer(config('checkpoints-file', { resume: true })));

    expect(error).toBeInstanceOf(ConfigError);
    expect(error.code).toBe('EXPERIMENT_FOLDER_INVALID');
    expect(error.message).toBe(
      `Cannot use the experiment folder ${folder}: ${join(folder, 'checkpoints')} is a file, not a folder. ` +
        'Move the file away, or set overwrite: true to delete it.',
    );
    expect(await readFile(join(folder, 'checkpoints'), 'utf8')).toBe('keep me');
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

  it('rejects resume with another rank', async () => {
    // Guards against a resume with a different loraRank failing deep in the optimizer state, after
    // config.json of the run had already been replaced with the new, incompatible options.
    const folder = await copyBaseRun('other-rank');
    const configBefore = await readFile(join(folder, 'config.json'), 'utf8');

    const error = await setupFailure(new NestedLoRATrainer(config('other-rank', { resume: true, loraRank: 2, numSteps: 6 })));

    expect(error).toBeInstanceOf(ConfigError);
    expect(error.code).toBe('RESUME_CONFIG_MISMATCH');
    expect(error.message).toBe(
      `Cannot resume from ${join(folder, 'checkpoints', 'checkpoint_0000004')}: loraRank is 4 in the checkpoint but 2 in the ` +
        "configuration. Resume with the checkpoint's values, or start a new run with another experimentName or with overwrite: true.",
    );
    expect(await readFile(join(folder, 'config.json'), 'utf8')).toBe(configBefore);
  });

  it('lists every mismatched tier option', async () => {
    await copyBaseRun('other-tiers');

    const error = await setupFailure(
      new NestedLoRATrainer(config('other-tiers', { resume: true, numTiers: 2, tierUpdateFrequencies: [1, 3], numSteps: 6 })),
    );

    expect(error.code).toBe('RESUME_CONFIG_MISMATCH');
    expect(error.details.differences).toEqual([
      'numTiers is 3 in the checkpoint but 2 in the configuration',
      'tierUpdateFrequencies is [1,2,4] in the checkpoint but [1,3] in the configuration',
    ]);
  });

  it('names another checkpoint when the latest is damaged', async () => {
    // Guards against a damaged trainer_state.json in the newest checkpoint ending the resume with
    // no pointer to the intact checkpoint that could be used instead.
    const folder = await copyBaseRun('damaged-state');
    const checkpoints = join(folder, 'checkpoints');
    await writeFile(join(checkpoints, 'checkpoint_0000004', 'trainer_state.json'), '{"step": ');
    // final/ contains the same step as checkpoint_0000004, so it is removed to leave step 2 as the other one.
    await rm(join(checkpoints, 'final'), { recursive: true });

    const error = await setupFailure(new NestedLoRATrainer(config('damaged-state', { resume: true, numSteps: 6 })));

    expect(error).toBeInstanceOf(FileFormatError);
    expect(error.code).toBe('CHECKPOINT_INVALID');
    expect(error.message).toContain(`${join(checkpoints, 'checkpoint_0000004')}: trainer_state.json: the file is not valid JSON`);
    expect(error.message).toContain(
      `The newest other complete checkpoint is ${join(checkpoints, 'checkpoint_0000002')} (step 2). ` +
        `Move ${join(checkpoints, 'checkpoint_0000004')} out of ${checkpoints} to resume from it.`,
    );

    // Following the advice resumes from step 2.
    await rename(join(checkpoints, 'checkpoint_0000004'), join(root, 'damaged-checkpoint'));
    const trainer = new NestedLoRATrainer(config('damaged-state', { resume: true, numSteps: 3 }));
    await trainer.setup();
    expect(trainer.step).toBe(2);
    trainer.dispose();
  });

  it('warns when resume reaches numSteps', async () => {
    // Guards against a resume whose numSteps is not above the checkpoint's step finishing at once
    // with no word that no step was trained.
    await copyBaseRun('no-steps-left');
    const warnings: string[] = [];
    const logger = { debug() {}, info() {}, warn: (message: string) => warnings.push(message), error() {} };
    const trainer = new NestedLoRATrainer(config('no-steps-left', { resume: true, numSteps: 3 }), { logger });
    await trainer.setup();

    expect(trainer.step).toBe(4);
    expect(warnings.some((message) => message.includes('is at step 4, which reaches numSteps 3, so train() runs no step'))).toBe(true);
    trainer.dispose();
  });

  it('warns about an incomplete checkpoint on resume', async () => {
    // Guards against a resume that fell back to an older checkpoint without saying that a newer
    // folder was skipped because a file was missing.
    const folder = await copyBaseRun('missing-file');
    const checkpoints = join(folder, 'checkpoints');
    await rm(join(checkpoints, 'checkpoint_0000004', 'optimizer.safetensors'));
    await rm(join(checkpoints, 'final'), { recursive: true });
    await rm(join(checkpoints, 'best'), { recursive: true, force: true });
    const warnings: string[] = [];
    const logger = { debug() {}, info() {}, warn: (message: string) => warnings.push(message), error() {} };
    const trainer = new NestedLoRATrainer(config('missing-file', { resume: true, numSteps: 6 }), { logger });
    await trainer.setup();

    expect(trainer.step).toBe(2);
    expect(warnings).toContain(
      `Skipping the incomplete checkpoint ${join(checkpoints, 'checkpoint_0000004')}: a file is missing or metadata.json cannot be read.`,
    );
    trainer.dispose();
  });

  it('rejects a NaN adapter in the latest checkpoint', async () => {
    // Guards against a resume that loaded NaN adapter weights and then wrote them into every new
    // checkpoint while each step was skipped as non-finite.
    const folder = await copyBaseRun('nan-adapter');
    const adapterPath = join(folder, 'checkpoints', 'checkpoint_0000004', 'adapters.safetensors');
    const { tensors, metadata } = await readSafetensors(adapterPath);
    const key = 'model.layers.1.self_attn.v_proj.lora_b';
    const original = tensors[key] as tf.Tensor;
    tensors[key] = tf.fill(original.shape, Number.NaN);
    original.dispose();
    await writeSafetensors(adapterPath, tensors, { metadata });
    tf.dispose(Object.values(tensors));

    const error = await setupFailure(new NestedLoRATrainer(config('nan-adapter', { resume: true, numSteps: 6 })));

    expect(error.code).toBe('CHECKPOINT_INVALID');
    expect(error.details.causeCode).toBe('ADAPTER_WEIGHTS_NON_FINITE');
    // lora_b of a rank-4 adapter on v_proj is [4, 8]: 2 key-value heads of head size 4 give 8 outputs.
    expect(error.message).toContain(`${key} (32 of 32 values)`);
    expect(error.message).toContain('The newest other complete checkpoint is');
  });

  it('rejects training data with no usable sample', async () => {
    // Guards against every prompt being longer than maxSeqLength ending setup with "The dataset
    // has 0 sample(s), too few for one batch", which hid why the samples were gone.
    const path = join(root, 'long-prompts.jsonl');
    const record = JSON.stringify({ prompt: 'tiers update slowly '.repeat(5), completion: 'fast' });
    await writeFile(path, `${record}\n${record}\n${record}\n`);

    const error = await setupFailure(
      new NestedLoRATrainer(config('long-prompts', { trainDataPath: path, maskPrompt: true, maxSeqLength: 16 })),
    );

    expect(error).toBeInstanceOf(ConfigError);
    expect(error.code).toBe('DATASET_EMPTY');
    expect(error.message).toBe(
      `The train data ${path} has no usable sample: of 3 line(s), 0 were invalid and 3 had no target token left after ` +
        'truncation to maxSeqLength 16. Raise maxSeqLength or shorten the prompts, because with maskPrompt a prompt that ' +
        'fills maxSeqLength leaves no token to train on. Empty records have no target token either.',
    );
  });

  it('rejects an empty validation file', async () => {
    // Guards against a validation file without samples turning evaluation, the best checkpoint
    // and early stopping off without a word.
    const path = join(root, 'blank-lines.jsonl');
    await writeFile(path, '\n\n');

    const error = await setupFailure(new NestedLoRATrainer(config('blank-validation', { valDataPath: path, evalEvery: 1 })));

    expect(error.code).toBe('DATASET_EMPTY');
    expect(error.message).toContain(`The validation data ${path} has no usable sample: of 2 line(s)`);
    expect(error.message).toContain('Add samples to the file.');
  });
});
