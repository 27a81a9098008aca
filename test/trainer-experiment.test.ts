import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import { ArgumentError, ConfigError } from '../src/errors.js';
import { CHECKPOINT_FILES, ExperimentFolder, periodicCheckpointName } from '../src/trainer/experiment.js';

let outputDir: string;

beforeEach(async () => {
  outputDir = await mkdtemp(join(tmpdir(), 'nl-experiment-'));
});

afterEach(async () => {
  await rm(outputDir, { recursive: true, force: true });
});

async function fillCheckpoint(dir: string, step: number, stopped = false): Promise<void> {
  for (const file of CHECKPOINT_FILES) {
    const content = file === 'metadata.json' ? JSON.stringify({ step, stopped }) : 'x';
    await writeFile(join(dir, file), content);
  }
}

describe('ExperimentFolder', () => {
  it('names periodic checkpoints with seven digits', () => {
    expect(periodicCheckpointName(100)).toBe('checkpoint_0000100');
    expect(periodicCheckpointName(12345678)).toBe('checkpoint_12345678');
  });

  it('creates the layout', async () => {
    const folder = await ExperimentFolder.prepare({ outputDir, experimentName: 'run', mode: 'new' });
    await folder.writeConfig({ learning_rate: 1e-5 });

    expect(folder.root).toBe(join(outputDir, 'run'));
    expect((await readdir(folder.root)).sort()).toEqual(['checkpoints', 'config.json', 'metrics']);
    expect(folder.trainMetricsPath).toBe(join(outputDir, 'run', 'metrics', 'train_metrics.jsonl'));
    expect(folder.evalMetricsPath).toBe(join(outputDir, 'run', 'metrics', 'eval_metrics.jsonl'));
  });

  it('new run rejects an existing experiment', async () => {
    const first = await ExperimentFolder.prepare({ outputDir, experimentName: 'run', mode: 'new' });
    await first.writeConfig({});

    const attempt = ExperimentFolder.prepare({ outputDir, experimentName: 'run', mode: 'new' });
    await expect(attempt).rejects.toThrow(ConfigError);
    await expect(attempt).rejects.toThrow(/already contains config\.json, checkpoints, metrics\. Set resume: true/);
  });

  it('new run accepts an empty folder', async () => {
    await mkdir(join(outputDir, 'run'));
    await expect(ExperimentFolder.prepare({ outputDir, experimentName: 'run', mode: 'new' })).resolves.toBeInstanceOf(ExperimentFolder);
  });

  it('overwrite deletes only run files', async () => {
    const first = await ExperimentFolder.prepare({ outputDir, experimentName: 'run', mode: 'new' });
    await first.writeConfig({});
    await writeFile(first.trainMetricsPath, '{"step":1}\n');
    await writeFile(join(first.root, 'notes.txt'), 'kept');

    const second = await ExperimentFolder.prepare({ outputDir, experimentName: 'run', mode: 'overwrite' });

    expect((await readdir(second.root)).sort()).toEqual(['checkpoints', 'metrics', 'notes.txt']);
    expect(await readdir(second.metricsDir)).toEqual([]);
  });

  it('lists complete checkpoints only', async () => {
    const folder = await ExperimentFolder.prepare({ outputDir, experimentName: 'run', mode: 'new' });
    await folder.writeCheckpoint(periodicCheckpointName(2), (dir) => fillCheckpoint(dir, 2));
    await folder.writeCheckpoint(periodicCheckpointName(4), (dir) => fillCheckpoint(dir, 4));
    await folder.writeCheckpoint('best', (dir) => fillCheckpoint(dir, 4));
    // A folder without optimizer.safetensors, as a hand copy might leave it.
    const partial = join(folder.checkpointsDir, periodicCheckpointName(6));
    await mkdir(partial);
    await fillCheckpoint(partial, 6);
    await rm(join(partial, 'optimizer.safetensors'));

    const names = (await folder.listCheckpoints()).map((entry) => entry.name);
    expect(names).toEqual(['checkpoint_0000002', 'best', 'checkpoint_0000004']);

    const latest = await folder.latestCheckpoint();
    expect(latest?.name).toBe('checkpoint_0000004');
    expect(latest?.step).toBe(4);
  });

  it('latest checkpoint may be a stopped final', async () => {
    const folder = await ExperimentFolder.prepare({ outputDir, experimentName: 'run', mode: 'new' });
    await folder.writeCheckpoint(periodicCheckpointName(5), (dir) => fillCheckpoint(dir, 5));
    await folder.writeCheckpoint('final', (dir) => fillCheckpoint(dir, 8, true));

    const latest = await folder.latestCheckpoint();
    expect(latest).toMatchObject({ name: 'final', step: 8, stopped: true });
  });

  it('failed write leaves no folder', async () => {
    const folder = await ExperimentFolder.prepare({ outputDir, experimentName: 'run', mode: 'new' });
    const write = folder.writeCheckpoint(periodicCheckpointName(3), async (dir) => {
      await writeFile(join(dir, 'adapters.safetensors'), 'x');
      throw new Error('disk full');
    });
    await expect(write).rejects.toThrow('disk full');
    expect(await readdir(folder.checkpointsDir)).toEqual([]);
  });

  it('prune keeps the newest periodic checkpoints', async () => {
    const folder = await ExperimentFolder.prepare({ outputDir, experimentName: 'run', mode: 'new' });
    for (const step of [2, 4, 6, 8]) {
      await folder.writeCheckpoint(periodicCheckpointName(step), (dir) => fillCheckpoint(dir, step));
    }
    await folder.writeCheckpoint('best', (dir) => fillCheckpoint(dir, 2));

    const removed = await folder.pruneCheckpoints(2);

    expect(removed).toEqual(['checkpoint_0000002', 'checkpoint_0000004']);
    expect((await readdir(folder.checkpointsDir)).sort()).toEqual(['best', 'checkpoint_0000006', 'checkpoint_0000008']);
    await expect(folder.pruneCheckpoints(0)).rejects.toThrow(ArgumentError);
  });

  it('resume restores an interrupted replacement', async () => {
    const folder = await ExperimentFolder.prepare({ outputDir, experimentName: 'run', mode: 'new' });
    // A process killed between moving best/ aside and renaming the new folder in leaves both copies hidden.
    const old = join(folder.checkpointsDir, '.best.old-1-aa');
    const fresh = join(folder.checkpointsDir, '.best.tmp-1-bb');
    await mkdir(old);
    await fillCheckpoint(old, 4);
    await mkdir(fresh);
    await fillCheckpoint(fresh, 6);
    await mkdir(join(folder.checkpointsDir, '.deleting-checkpoint_0000002-cc'));

    const resumed = await ExperimentFolder.prepare({ outputDir, experimentName: 'run', mode: 'resume' });

    expect(await readdir(resumed.checkpointsDir)).toEqual(['best']);
    expect((await resumed.latestCheckpoint())?.step).toBe(4);
  });

  it('rejects names that leave the folder', async () => {
    await expect(ExperimentFolder.prepare({ outputDir, experimentName: '../x', mode: 'new' })).rejects.toThrow(ArgumentError);
    const folder = await ExperimentFolder.prepare({ outputDir, experimentName: 'run', mode: 'new' });
    expect(() => folder.checkpointPath('../best')).toThrow(/checkpoint name "..\/best" is invalid/);
  });
});
