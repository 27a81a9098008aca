import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import * as tf from '@tensorflow/tfjs';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';

import type { NestedLearningConfigInput } from '../src/config/index.js';
import { ArgumentError, ConfigError, FileFormatError, ShapeError } from '../src/errors.js';
import { readSafetensors, writeSafetensors } from '../src/io/index.js';
import { NestedLoRATrainer, type TrainerEvent } from '../src/trainer/index.js';
import { tinyConfig, writeTinyExperimentInputs, type TinyInputs } from './fixtures/trainer/tiny-model.js';

let root: string;
let inputs: TinyInputs;
let tensorsBefore: number;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'nl-trainer-api-'));
  inputs = await writeTinyExperimentInputs(root);
  tensorsBefore = tf.memory().numTensors;
});

afterEach(() => {
  // Every trainer below is disposed, so no test leaves tensors behind.
  expect(tf.memory().numTensors).toBe(tensorsBefore);
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

function config(experimentName: string, overrides: Record<string, unknown> = {}): NestedLearningConfigInput {
  return tinyConfig(inputs, join(root, 'out'), { experimentName, ...overrides });
}

async function readJson(path: string): Promise<Record<string, unknown>> {
  return JSON.parse(await readFile(path, 'utf8')) as Record<string, unknown>;
}

describe('NestedLoRATrainer', () => {
  it('rejects an invalid configuration', () => {
    expect(() => new NestedLoRATrainer(config('bad', { tierUpdateFrequencies: [1, 2], numTiers: 3 }))).toThrow(ConfigError);
    expect(() => new NestedLoRATrainer(config('bad', { resume: true, overwrite: true }))).toThrow(/resume/);
  });

  it('methods need setup first', async () => {
    const trainer = new NestedLoRATrainer(config('early'));
    expect(() => trainer.parameterTierMap).toThrow(/Cannot read parameterTierMap while the trainer is created\. Call setup\(\) first\./);
    expect(() => trainer.evaluate()).toThrow(ArgumentError);
    expect(() => trainer.tierStats()).toThrow(/Cannot read tierStats while the trainer is created/);
    await expect(trainer.train()).rejects.toThrow(/Cannot train while the trainer is created/);
  });

  it('new run rejects an existing experiment', async () => {
    const first = new NestedLoRATrainer(config('taken', { numSteps: 1 }));
    await first.setup();
    first.dispose();
    const second = new NestedLoRATrainer(config('taken', { numSteps: 1 }));
    await expect(second.setup()).rejects.toThrow(/already contains config\.json, checkpoints, metrics/);
  });

  it('tier map can be replaced before training', async () => {
    const trainer = new NestedLoRATrainer(config('tier-map', { numSteps: 4 }));
    await trainer.setup();
    const names = Object.keys(trainer.parameterTierMap.assignments);
    expect(names).toHaveLength(12);

    // Invalid replacements name the problem.
    expect(() => {
      trainer.parameterTierMap = { [names[0]!]: 0 };
    }).toThrow(/11 parameter\(s\) have no tier/);
    expect(() => {
      trainer.parameterTierMap = { ...Object.fromEntries(names.map((name) => [name, 0])), 'model.layers.9.mlp.up_proj.lora_a': 0 };
    }).toThrow(/1 assigned name\(s\) are not parameters/);
    expect(() => {
      trainer.parameterTierMap = Object.fromEntries(names.map((name) => [name, 3]));
    }).toThrow(/not integers from 0 to 2/);

    // Everything in the slowest tier: no parameter changes before step 4.
    trainer.parameterTierMap = Object.fromEntries(names.map((name) => [name, 2]));
    expect(trainer.parameterTierMap.tiers.map((tier) => tier.parameterCount)).toEqual([0, 0, 12]);
    const activeTiers: number[][] = [];
    trainer.on('step', (record) => activeTiers.push(record.activeTiers));
    const done = await trainer.train();
    expect(done.step).toBe(4);
    expect(activeTiers).toEqual([[0], [0, 1], [0], [0, 1, 2]]);

    const metadata = await readJson(join(root, 'out', 'tier-map', 'checkpoints', 'final', 'metadata.json'));
    expect(metadata.tierStats).toEqual([
      { tier: 0, frequency: 1, updateCount: 4, parameterCount: 0, elementCount: 0 },
      { tier: 1, frequency: 2, updateCount: 2, parameterCount: 0, elementCount: 0 },
      { tier: 2, frequency: 4, updateCount: 1, parameterCount: 12, elementCount: 672 },
    ]);
    // The trainer reports the same per-tier records as the checkpoint metadata.
    expect(trainer.tierStats()).toEqual(metadata.tierStats);
    expect(() => {
      trainer.parameterTierMap = Object.fromEntries(names.map((name) => [name, 0]));
    }).toThrow(/Cannot replace parameterTierMap while the trainer is finished/);
    trainer.dispose();
  });

  it('abort signal stops after the current step', async () => {
    const trainer = new NestedLoRATrainer(config('abort', { numSteps: 10, checkpointEvery: 2 }));
    await trainer.setup();
    const controller = new AbortController();
    trainer.on('step', (record) => {
      if (record.step === 3) {
        controller.abort();
        // A second signal while the run stops does no harm.
        controller.abort();
        trainer.stop();
      }
    });

    const done = await trainer.train({ signal: controller.signal });
    trainer.dispose();

    expect(done).toMatchObject({ step: 3, reason: 'stopped' });
    const finalDir = join(root, 'out', 'abort', 'checkpoints', 'final');
    expect(await readJson(join(finalDir, 'metadata.json'))).toMatchObject({ step: 3, stopped: true, stopReason: 'stopped' });
    expect(await readJson(join(finalDir, 'trainer_state.json'))).toMatchObject({ step: 3, optimizerStep: 3 });
    expect((await readdir(join(root, 'out', 'abort', 'checkpoints'))).sort()).toEqual(['checkpoint_0000002', 'final']);
  });

  it('aborted signal before train runs no step', async () => {
    const trainer = new NestedLoRATrainer(config('pre-aborted', { numSteps: 5 }));
    await trainer.setup();
    const done = await trainer.train({ signal: AbortSignal.abort() });
    trainer.dispose();
    expect(done).toMatchObject({ step: 0, reason: 'stopped' });
  });

  it('events iterator yields the run', async () => {
    const trainer = new NestedLoRATrainer(
      config('events', { numSteps: 4, evalEvery: 2, checkpointEvery: 4, valDataPath: inputs.validPath }),
    );
    await trainer.setup();
    const collected = (async () => {
      const events: TrainerEvent[] = [];
      for await (const event of trainer.events()) {
        events.push(event);
      }
      return events;
    })();
    const done = await trainer.train();
    trainer.dispose();

    const events = await collected;
    const summary = events.map((event) =>
      event.type === 'checkpoint' ? `checkpoint:${event.data.name}` : `${event.type}:${'step' in event.data ? event.data.step : ''}`,
    );
    // best/ is written whenever the validation loss improves, so it may follow the evaluations at 2 and 4.
    const withoutBest = summary.filter((entry) => entry !== 'checkpoint:best');
    expect(withoutBest).toEqual([
      'eval:0',
      'step:1',
      'step:2',
      'eval:2',
      'step:3',
      'step:4',
      'eval:4',
      'checkpoint:checkpoint_0000004',
      'checkpoint:final',
      'done:4',
    ]);
    expect(summary).toContain('checkpoint:best');
    expect(events.at(-1)?.data).toBe(done);
  });

  it('early stopping and saveBestOnly', async () => {
    // With minDelta 1e9 only the first evaluation counts as an improvement, so patience 1 stops at step 2.
    const trainer = new NestedLoRATrainer(
      config('early-stop', {
        numSteps: 10,
        evalEvery: 1,
        checkpointEvery: 1,
        saveBestOnly: true,
        earlyStop: true,
        patience: 1,
        minDelta: 1e9,
        valDataPath: inputs.validPath,
      }),
    );
    await trainer.setup();
    const done = await trainer.train();
    trainer.dispose();

    expect(done.reason).toBe('early_stopped');
    expect(done.step).toBe(2);
    const checkpoints = join(root, 'out', 'early-stop', 'checkpoints');
    expect((await readdir(checkpoints)).sort()).toEqual(['best', 'final']);
    expect(await readJson(join(checkpoints, 'best', 'metadata.json'))).toMatchObject({ step: 1, isBest: true, bestStep: 1 });
    expect(await readJson(join(checkpoints, 'final', 'metadata.json'))).toMatchObject({
      step: 2,
      stopped: false,
      stopReason: 'early_stopped',
    });
  });

  it('keeps the last N periodic checkpoints', async () => {
    const trainer = new NestedLoRATrainer(config('keep', { numSteps: 5, checkpointEvery: 1, keepLastNCheckpoints: 2 }));
    await trainer.setup();
    await trainer.train();
    trainer.dispose();
    expect((await readdir(join(root, 'out', 'keep', 'checkpoints'))).sort()).toEqual(['checkpoint_0000004', 'checkpoint_0000005', 'final']);
  });

  it('parameter_importance runs its calibration', async () => {
    const trainer = new NestedLoRATrainer(
      config('importance', { numSteps: 2, tierAssignmentStrategy: 'parameter_importance', importanceCalibrationBatches: 3 }),
    );
    await trainer.setup();
    const calibration = trainer.calibrationStatistics;
    expect(calibration?.batches).toBe(3);
    expect(Object.keys(calibration?.statistics ?? {})).toHaveLength(12);
    for (const statistic of Object.values(calibration?.statistics ?? {})) {
      expect(statistic.count).toBe(3);
      expect(statistic.gradSquaredSum).toBeGreaterThanOrEqual(0);
    }
    // lora_b starts at zero, so the gradient of every lora_a is zero in the calibration pass.
    expect(calibration?.statistics['model.layers.0.self_attn.q_proj.lora_a']?.gradSquaredSum).toBe(0);
    expect(calibration?.statistics['model.layers.0.self_attn.q_proj.lora_b']?.gradSquaredSum).toBeGreaterThan(0);
    // A module's lora_a and lora_b share a tier.
    const assignments = trainer.parameterTierMap.assignments;
    expect(assignments['model.layers.1.self_attn.v_proj.lora_a']).toBe(assignments['model.layers.1.self_attn.v_proj.lora_b']);

    await trainer.train();
    trainer.dispose();
    const finalDir = join(root, 'out', 'importance', 'checkpoints', 'final');
    expect((await readJson(join(finalDir, 'trainer_state.json'))).calibration).toEqual(calibration);
    expect((await readJson(join(finalDir, 'metadata.json'))).calibration).toEqual(calibration);

    // A resumed run takes the tier map and statistics from the checkpoint instead of calibrating again.
    const resumed = new NestedLoRATrainer(
      config('importance', { numSteps: 4, tierAssignmentStrategy: 'parameter_importance', importanceCalibrationBatches: 3, resume: true }),
    );
    await resumed.setup();
    expect(resumed.resumedFromCheckpoint).toBe(finalDir);
    expect(resumed.parameterTierMap.assignments).toEqual(assignments);
    expect(resumed.calibrationStatistics).toEqual(calibration);
    resumed.dispose();
  });

  it('exports a checkpoint as PEFT', async () => {
    const trainer = new NestedLoRATrainer(config('peft', { numSteps: 2 }));
    await trainer.setup();
    const done = await trainer.train();
    const peftDir = join(root, 'peft-export');
    await trainer.exportPeft(done.finalCheckpointPath, peftDir);
    trainer.dispose();

    expect(await readJson(join(peftDir, 'adapter_config.json'))).toMatchObject({
      peft_type: 'LORA',
      r: 4,
      lora_alpha: 8,
      base_model_name_or_path: inputs.modelDir,
    });
    const peft = await readSafetensors(join(peftDir, 'adapter_model.safetensors'));
    const mlx = await readSafetensors(join(done.finalCheckpointPath, 'adapters.safetensors'));
    const peftB = peft.tensors['base_model.model.model.layers.2.self_attn.v_proj.lora_B.weight'] as tf.Tensor;
    const mlxB = mlx.tensors['model.layers.2.self_attn.v_proj.lora_b'] as tf.Tensor;
    // PEFT stores lora_B as [out, rank], the transpose of mlx_lm's [rank, out].
    expect(peftB.shape).toEqual([8, 4]);
    const transposed = tf.transpose(mlxB);
    expect(Array.from(transposed.dataSync())).toEqual(Array.from(peftB.dataSync()));
    tf.dispose([transposed, ...Object.values(peft.tensors), ...Object.values(mlx.tensors)]);
  });

  it('missing optimizer slot rejected', async () => {
    const source = new NestedLoRATrainer(config('slots', { numSteps: 2 }));
    await source.setup();
    const done = await source.train();
    source.dispose();

    // Drop one moment from optimizer.safetensors.
    const optimizerPath = join(done.finalCheckpointPath, 'optimizer.safetensors');
    const { tensors, metadata } = await readSafetensors(optimizerPath);
    const dropped = 'model.layers.0.self_attn.q_proj.lora_a/v';
    const kept = Object.fromEntries(Object.entries(tensors).filter(([name]) => name !== dropped));
    await writeSafetensors(optimizerPath, kept, { metadata });
    tf.dispose(Object.values(tensors));

    const target = new NestedLoRATrainer(config('slots-target', { numSteps: 4 }));
    await target.setup();
    const load = target.loadCheckpoint(done.finalCheckpointPath);
    await expect(load).rejects.toThrow(ShapeError);
    await expect(load).rejects.toThrow(/model\.layers\.0\.self_attn\.q_proj\.lora_a/);
    target.dispose();
  });

  it('checkpoint of another rank rejected', async () => {
    const source = new NestedLoRATrainer(config('rank-4', { numSteps: 1 }));
    await source.setup();
    const done = await source.train();
    source.dispose();

    const target = new NestedLoRATrainer(config('rank-2', { numSteps: 2, loraRank: 2, loraAlpha: 4 }));
    await target.setup();
    await expect(target.loadCheckpoint(done.finalCheckpointPath)).rejects.toThrow(ShapeError);
    await expect(target.loadCheckpoint(join(root, 'missing'))).rejects.toThrow(FileFormatError);

    // A rejected checkpoint leaves the trainer as it was: it trains from step 0.
    expect(target.resumedFromCheckpoint).toBeUndefined();
    const trained = await target.train();
    expect(trained.step).toBe(2);
    target.dispose();
  });
});
