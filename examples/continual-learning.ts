/**
 * Continual learning with a retain set: train the embedded tiny model (pretrained on press
 * reportage) on fiction, and measure how much of the press domain it forgets. The same run is made
 * twice, with nested tiers [1, 2, 4] and with plain LoRA (one tier, every step), on the same data,
 * seed and step budget.
 *
 * The run's events are read with the async iterator `trainer.events()` while `train()` runs.
 * Forgetting is `retainLoss - retainBaseline`, where the baseline is the retain loss before the
 * first step.
 *
 * The example checks its own results and exits with status 1 when a check fails:
 * - each run evaluates before training and every `evalEvery` steps, and ends with `completed`;
 * - forgetting is 0 at step 0 and equals retainLoss - retainBaseline at every evaluation;
 * - the validation loss on fiction falls;
 * - the events carry the same evaluations as `metrics/eval_metrics.jsonl`;
 * - the nested run's slowest tier took numSteps / 4 updates.
 * Which method forgets less is printed, not checked: two short runs on one seed decide nothing.
 * `nested-learning compare` measures it over several seeds.
 *
 * Run after `npm run build` (it imports the built package by name):
 *   npx tsx examples/continual-learning.ts
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { EvalMetricsRecordSchema, NestedLoRATrainer, type EvalMetricsRecord, type NestedLearningConfigInput } from 'nested-learning';

const MODEL_DIR = fileURLToPath(new URL('./models/tiny-qwen2', import.meta.url));
const FICTION = fileURLToPath(new URL('./data/fiction/', import.meta.url));
const PRESS = fileURLToPath(new URL('./data/press/', import.meta.url));
const NUM_STEPS = 24;
const EVAL_EVERY = 8;

const failures: string[] = [];

function check(condition: boolean, description: string): void {
  console.log(`${condition ? 'ok  ' : 'FAIL'} ${description}`);
  if (!condition) {
    failures.push(description);
  }
}

interface RunSummary {
  method: string;
  evaluations: EvalMetricsRecord[];
  seconds: number;
}

async function runMethod(method: string, tiers: Partial<NestedLearningConfigInput>, outputDir: string): Promise<RunSummary> {
  const trainer = new NestedLoRATrainer({
    baseModelPath: MODEL_DIR,
    trainDataPath: join(FICTION, 'train.jsonl'),
    valDataPath: join(FICTION, 'valid.jsonl'),
    retainDataPath: join(PRESS, 'valid.jsonl'),
    outputDir,
    experimentName: method,
    backend: 'wasm',
    ...tiers,
    loraRank: 8,
    loraAlpha: 16,
    learningRate: 2e-3,
    batchSize: 4,
    maxSeqLength: 64,
    numSteps: NUM_STEPS,
    evalEvery: EVAL_EVERY,
    evalBatches: 4,
    checkpointEvery: 0,
    seed: 0,
  });

  try {
    await trainer.setup();

    // Open the iterator before train() starts, so that it receives every event of the run.
    const events = trainer.events();
    const training = trainer.train();
    const evaluations: EvalMetricsRecord[] = [];
    let slowestTierUpdates = 0;
    for await (const event of events) {
      if (event.type === 'eval') {
        evaluations.push(event.data);
        const { step, valLoss, retainLoss, forgetting } = event.data;
        console.log(`[${method}] step ${step}: val loss ${valLoss?.toFixed(4)}, retain loss ${retainLoss?.toFixed(4)}, forgetting ${forgetting?.toFixed(4)}`);
      } else if (event.type === 'step') {
        slowestTierUpdates = event.data.tierStats.at(-1)?.updateCount ?? 0;
      } else if (event.type === 'done') {
        console.log(`[${method}] ${event.data.reason} at step ${event.data.step} in ${event.data.elapsedTime.toFixed(1)} s`);
      }
    }
    const done = await training;

    check(done.reason === 'completed', `${method}: the run completed`);
    const steps = evaluations.map((record) => record.step);
    check(JSON.stringify(steps) === JSON.stringify([0, 8, 16, 24]), `${method}: evaluations at steps [0, 8, 16, 24] (got [${steps.join(', ')}])`);
    check(evaluations[0]?.forgetting === 0, `${method}: forgetting is 0 before training`);
    const consistent = evaluations.every(
      (record) => record.retainLoss !== undefined && record.retainBaseline !== undefined && record.forgetting === record.retainLoss - record.retainBaseline,
    );
    check(consistent, `${method}: forgetting = retainLoss - retainBaseline at every evaluation`);
    const firstValLoss = evaluations[0]?.valLoss ?? Number.NaN;
    const lastValLoss = evaluations.at(-1)?.valLoss ?? Number.NaN;
    check(lastValLoss < firstValLoss, `${method}: validation loss on fiction fell (${firstValLoss.toFixed(4)} -> ${lastValLoss.toFixed(4)})`);

    // The same records are in the experiment folder; the schema turns "NaN" strings back into numbers.
    const lines = (await readFile(trainer.experimentFolder.evalMetricsPath, 'utf8')).trim().split('\n');
    const fromFile = lines.map((line) => EvalMetricsRecordSchema.parse(JSON.parse(line)));
    check(JSON.stringify(fromFile) === JSON.stringify(evaluations), `${method}: eval_metrics.jsonl contains the same ${fromFile.length} evaluations as the events`);

    if (tiers.tierUpdateFrequencies?.length === 3) {
      check(slowestTierUpdates === NUM_STEPS / 4, `${method}: the slowest tier took ${NUM_STEPS / 4} updates (took ${slowestTierUpdates})`);
    }
    return { method, evaluations, seconds: done.elapsedTime };
  } finally {
    trainer.dispose();
  }
}

async function main(): Promise<void> {
  const outputDir = await mkdtemp(join(tmpdir(), 'nested-learning-continual-'));
  try {
    // One trainer at a time: each one's LoRA variables have the same names, so the first is
    // disposed (in runMethod's finally) before the second loads the model.
    const nested = await runMethod('nested', { tierUpdateFrequencies: [1, 2, 4] }, outputDir);
    const plain = await runMethod('plain-lora', { tierUpdateFrequencies: [1] }, outputDir);

    console.log('\n| method | val loss (fiction) | forgetting (press) | time |');
    console.log('| --- | ---: | ---: | ---: |');
    for (const run of [nested, plain]) {
      const last = run.evaluations.at(-1);
      console.log(`| ${run.method} | ${last?.valLoss?.toFixed(4)} | ${last?.forgetting?.toFixed(4)} | ${run.seconds.toFixed(1)} s |`);
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
