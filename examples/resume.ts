/**
 * Stopping a run with an AbortSignal and resuming it from its checkpoint.
 *
 * 1. A 12-step run is aborted from its `step` event at step 5. `train()` finishes that step, writes
 *    `checkpoints/final/` marked as stopped, and resolves with reason `stopped`.
 * 2. A new trainer with the same configuration and `resume: true` continues from that checkpoint
 *    and trains steps 6 to 12. (`trainer.loadCheckpoint(path)` after `setup()` resumes from any
 *    checkpoint folder instead.)
 * 3. For comparison, the same configuration runs 12 steps without a stop.
 *
 * The example checks its own results and exits with status 1 when a check fails:
 * - the stopped run ends at step 5 and its final checkpoint records `stopped: true` at step 5;
 * - the resumed run starts at step 5 and completes at step 12;
 * - steps 6 to 12 have the same losses and learning rates as the uninterrupted run, to 1e-6;
 * - the final adapters of both runs are equal to 1e-6, and so is the metrics file.
 *
 * Run after `npm run build` (it imports the built package by name):
 *   npx tsx examples/resume.ts
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { NestedLoRATrainer, readAdapter, type NestedLearningConfigInput, type TrainMetricsRecord } from 'nested-learning';
import { compareTensors } from 'nested-learning/testing';

const MODEL_DIR = fileURLToPath(new URL('./models/tiny-qwen2', import.meta.url));
const TRAIN_DATA = fileURLToPath(new URL('./data/fiction/train.jsonl', import.meta.url));
const NUM_STEPS = 12;
const STOP_AT = 5;

const failures: string[] = [];

function check(condition: boolean, description: string): void {
  console.log(`${condition ? 'ok  ' : 'FAIL'} ${description}`);
  if (!condition) {
    failures.push(description);
  }
}

function relativeDifference(a: number, b: number): number {
  return Math.abs(a - b) / Math.max(Math.abs(b), 1e-12);
}

/** Runs a trainer to its end (or stop) and returns the train records it emitted. */
async function train(trainer: NestedLoRATrainer, signal?: AbortSignal): Promise<{ records: TrainMetricsRecord[]; reason: string; step: number }> {
  const records: TrainMetricsRecord[] = [];
  trainer.on('step', (record) => {
    records.push(record);
    console.log(`  step ${record.step}: loss ${record.loss.toFixed(6)}, learning rate ${record.learningRate.toExponential(3)}`);
  });
  const done = await trainer.train({ signal });
  return { records, reason: done.reason, step: done.step };
}

async function main(): Promise<void> {
  const outputDir = await mkdtemp(join(tmpdir(), 'nested-learning-resume-'));
  const config = (experimentName: string, resume = false): NestedLearningConfigInput => ({
    baseModelPath: MODEL_DIR,
    trainDataPath: TRAIN_DATA,
    outputDir,
    experimentName,
    resume,
    backend: 'wasm',
    tierUpdateFrequencies: [1, 2, 4],
    loraRank: 4,
    loraAlpha: 8,
    loraTargetModules: ['q_proj', 'v_proj'],
    learningRate: 2e-3,
    lrSchedule: 'cosine',
    warmupSteps: 3,
    gradientAccumulationSteps: 2,
    batchSize: 2,
    maxSeqLength: 48,
    numSteps: NUM_STEPS,
    evalEvery: 0,
    checkpointEvery: 0,
    seed: 7,
  });

  try {
    // 1. Stop at step 5 with an AbortSignal. Aborting ends the run after the current step.
    console.log(`Run that is stopped at step ${STOP_AT}:`);
    const controller = new AbortController();
    const first = new NestedLoRATrainer(config('stopped-run'));
    let stopped: Awaited<ReturnType<typeof train>>;
    try {
      await first.setup();
      first.on('step', (record) => {
        if (record.step === STOP_AT) {
          controller.abort();
        }
      });
      stopped = await train(first, controller.signal);
    } finally {
      first.dispose();
    }
    check(stopped.reason === 'stopped' && stopped.step === STOP_AT, `the run stopped at step ${STOP_AT} (${stopped.reason} at ${stopped.step})`);

    const finalDir = join(outputDir, 'stopped-run', 'checkpoints', 'final');
    const metadata = JSON.parse(await readFile(join(finalDir, 'metadata.json'), 'utf8')) as { step: number; stopped: boolean };
    check(metadata.stopped && metadata.step === STOP_AT, `checkpoints/final/metadata.json records a stop at step ${STOP_AT}`);

    // 2. Resume: same configuration, resume: true. setup() loads the latest complete checkpoint.
    console.log('Resumed run:');
    const second = new NestedLoRATrainer(config('stopped-run', true));
    let resumed: Awaited<ReturnType<typeof train>>;
    try {
      await second.setup();
      check(second.step === STOP_AT, `the resumed trainer starts at step ${STOP_AT} (from ${second.resumedFromCheckpoint})`);
      resumed = await train(second);
    } finally {
      second.dispose();
    }
    check(resumed.reason === 'completed' && resumed.step === NUM_STEPS, `the resumed run completed at step ${NUM_STEPS}`);

    // 3. The same run without a stop.
    console.log('Uninterrupted run:');
    const third = new NestedLoRATrainer(config('straight-run'));
    let straight: Awaited<ReturnType<typeof train>>;
    try {
      await third.setup();
      straight = await train(third);
    } finally {
      third.dispose();
    }

    const straightAfterStop = straight.records.filter((record) => record.step > STOP_AT);
    const lossDifference = Math.max(...resumed.records.map((record, index) => relativeDifference(record.loss, straightAfterStop[index]?.loss ?? Number.NaN)));
    const rateDifference = Math.max(
      ...resumed.records.map((record, index) => relativeDifference(record.learningRate, straightAfterStop[index]?.learningRate ?? Number.NaN)),
    );
    check(resumed.records.length === straightAfterStop.length, `both runs took steps ${STOP_AT + 1} to ${NUM_STEPS}`);
    check(lossDifference <= 1e-6, `losses of steps ${STOP_AT + 1}-${NUM_STEPS} match the uninterrupted run (max relative difference ${lossDifference.toExponential(2)})`);
    check(rateDifference <= 1e-6, `learning rates match (max relative difference ${rateDifference.toExponential(2)})`);

    // The metrics file of the resumed experiment contains all 12 steps, as an uninterrupted run's does.
    const metricsLines = (await readFile(join(outputDir, 'stopped-run', 'metrics', 'train_metrics.jsonl'), 'utf8')).trim().split('\n');
    const metricSteps = metricsLines.map((line) => (JSON.parse(line) as { step: number }).step);
    check(JSON.stringify(metricSteps) === JSON.stringify(Array.from({ length: NUM_STEPS }, (_, index) => index + 1)), 'train_metrics.jsonl has steps 1 to 12 once each');

    const resumedAdapter = await readAdapter(finalDir);
    const straightAdapter = await readAdapter(join(outputDir, 'straight-run', 'checkpoints', 'final'));
    try {
      const mismatched = Object.entries(straightAdapter.weights).filter(([name, expected]) => {
        const actual = resumedAdapter.weights[name];
        return actual === undefined || !compareTensors(actual, expected, { rtol: 1e-6, atol: 1e-9 }).pass;
      });
      check(
        mismatched.length === 0 && Object.keys(resumedAdapter.weights).length === Object.keys(straightAdapter.weights).length,
        `the final adapters match (${Object.keys(straightAdapter.weights).length} matrices, mismatched: ${mismatched.map(([name]) => name).join(', ') || 'none'})`,
      );
    } finally {
      for (const adapter of [resumedAdapter, straightAdapter]) {
        Object.values(adapter.weights).forEach((tensor) => tensor.dispose());
      }
    }
  } finally {
    await rm(outputDir, { recursive: true, force: true });
  }

  if (failures.length > 0) {
    console.error(`${failures.length} check(s) failed: ${failures.join('; ')}`);
    process.exit(1);
  }
  console.log('all checks passed');
}

await main();
