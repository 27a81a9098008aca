/**
 * Custom tier maps: rules by exact name, glob and regular expression, then a trainer whose tier
 * map is replaced after `setup()`.
 *
 * 1. `ParameterTierScheduler` with the `manual` strategy turns ordered rules into a tier map over
 *    the LoRA parameters of the embedded tiny model (the first rule that matches a name wins).
 * 2. `trainer.parameterTierMap` is replaced with that map (as a plain name-to-tier record) between
 *    `setup()` and `train()`, and the trainer runs 8 steps with frequencies [1, 2, 4].
 *
 * The example checks its own results and exits with status 1 when a check fails:
 * - every parameter lands in the tier its rule gives;
 * - the trainer's per-tier counts (`tierStats`) match the map, with update counts [8, 4, 2];
 * - at every step the parameters of the active tiers changed, and no others.
 *
 * Run after `npm run build` (it imports the built package by name):
 *   npx tsx examples/custom-tier-map.ts
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { activeTiers, NestedLoRATrainer, ParameterTierScheduler, type TierMap } from 'nested-learning';
import { captureWeights, weightChanges, type WeightSnapshot } from 'nested-learning/testing';

const MODEL_DIR = fileURLToPath(new URL('./models/tiny-qwen2', import.meta.url));
const TRAIN_DATA = fileURLToPath(new URL('./data/fiction/train.jsonl', import.meta.url));
const FREQUENCIES = [1, 2, 4];
const STEPS = 8;

const failures: string[] = [];

function check(condition: boolean, description: string): void {
  console.log(`${condition ? 'ok  ' : 'FAIL'} ${description}`);
  if (!condition) {
    failures.push(description);
  }
}

/**
 * The rules, tried in order; the first match decides. A string between slashes is a regular
 * expression, a string with `*` or `?` is a glob (`*` stops at dots, `**` does not), and any other
 * string is an exact name.
 */
const RULES = {
  // Exact names: the query projection of the last layer trains every step.
  'model.layers.3.self_attn.q_proj.lora_a': 0,
  'model.layers.3.self_attn.q_proj.lora_b': 0,
  // A regular expression: everything in layers 0 and 1 trains every step.
  '/^model\\.layers\\.[01]\\./': 0,
  // A glob: the MLP adapters of the other layers train every 4th step.
  'model.layers.*.mlp.**': 2,
  // A catch-all glob: the rest trains every 2nd step.
  '**': 1,
};

/** Returns the tier the rules above give a name, written out by hand for the check. */
function expectedTier(name: string): number {
  const layer = Number(name.split('.')[2]);
  if (layer === 3 && name.includes('.q_proj.')) return 0;
  if (layer <= 1) return 0;
  if (name.includes('.mlp.')) return 2;
  return 1;
}

function printTierMap(title: string, tierMap: TierMap): void {
  console.log(title);
  for (const tier of tierMap.tiers) {
    console.log(
      `  tier ${tier.tier} (every ${tier.frequency} step(s)): ${tier.parameterCount} parameters, ` +
        `${tier.elementCount} elements, layers [${tier.layers.join(', ')}]`,
    );
  }
}

async function main(): Promise<void> {
  const outputDir = await mkdtemp(join(tmpdir(), 'nested-learning-custom-tier-map-'));
  const trainer = new NestedLoRATrainer({
    baseModelPath: MODEL_DIR,
    trainDataPath: TRAIN_DATA,
    outputDir,
    experimentName: 'custom-tier-map',
    backend: 'wasm',
    tierUpdateFrequencies: FREQUENCIES,
    loraRank: 4,
    loraAlpha: 8,
    loraTargetModules: ['q_proj', 'v_proj', 'down_proj'],
    learningRate: 1e-3,
    batchSize: 2,
    maxSeqLength: 48,
    numSteps: STEPS,
    evalEvery: 0,
    checkpointEvery: 0,
    seed: 1,
  });

  try {
    await trainer.setup();
    printTierMap('Tier map of the default layer_depth strategy:', trainer.parameterTierMap);

    // 1. Build a tier map from the rules over the trainer's LoRA parameters.
    const parameters = [...trainer.model.loraParameters].map(([name, variable]) => ({ name, shape: variable.shape }));
    const scheduler = new ParameterTierScheduler({ strategy: 'manual', tierMap: RULES, tierUpdateFrequencies: FREQUENCIES });
    const custom = scheduler.assign(parameters);
    printTierMap('Tier map of the rules:', custom);

    const misplaced = parameters.filter(({ name }) => custom.assignments[name] !== expectedTier(name)).map(({ name }) => name);
    check(misplaced.length === 0, `all ${parameters.length} parameters are in the tier their rule gives (misplaced: ${misplaced.join(', ') || 'none'})`);
    check(custom.unassigned.length === 0, 'the catch-all rule leaves no parameter unassigned');

    // 2. Replace the trainer's map. A TierMap, a Map or a plain record are all accepted.
    trainer.parameterTierMap = { ...custom.assignments };
    check(JSON.stringify(trainer.parameterTierMap.assignments) === JSON.stringify(custom.assignments), 'the trainer uses the replaced map');

    // Record which parameters each step changed, from the `step` event, which runs after the update.
    const changedByStep: string[][] = [];
    let previous: WeightSnapshot = captureWeights(Object.fromEntries(trainer.model.loraParameters));
    trainer.on('step', () => {
      const current = captureWeights(Object.fromEntries(trainer.model.loraParameters));
      changedByStep.push(weightChanges(previous, current).filter((change) => change.changed).map((change) => change.name));
      previous = current;
    });

    let lastTierStats: { tier: number; frequency: number; updateCount: number; parameterCount: number }[] = [];
    trainer.on('step', (record) => {
      lastTierStats = record.tierStats;
      console.log(`step ${record.step}: loss ${record.loss.toFixed(4)}, active tiers [${record.activeTiers.join(', ')}]`);
    });

    const done = await trainer.train();
    console.log(`training ${done.reason} at step ${done.step}`);

    console.log('tierStats after training:');
    for (const stats of lastTierStats) {
      console.log(`  tier ${stats.tier}: frequency ${stats.frequency}, ${stats.updateCount} updates, ${stats.parameterCount} parameters`);
    }
    check(
      JSON.stringify(lastTierStats.map((stats) => stats.updateCount)) === JSON.stringify([8, 4, 2]),
      `tier update counts are [8, 4, 2] (got [${lastTierStats.map((stats) => stats.updateCount).join(', ')}])`,
    );
    check(
      JSON.stringify(lastTierStats.map((stats) => stats.parameterCount)) === JSON.stringify(custom.tiers.map((tier) => tier.parameterCount)),
      'per-tier parameter counts match the replaced map',
    );

    check(changedByStep.length === STEPS, `a snapshot was taken after each of the ${STEPS} steps`);
    // A fresh adapter starts with lora_b = 0, which makes the gradient of lora_a zero, so at a
    // tier's first update only its lora_b matrices move; from its second update on, both do.
    for (const [index, changed] of changedByStep.entries()) {
      const step = index + 1;
      const active = activeTiers(step, FREQUENCIES);
      const firstUpdate = new Set(active.filter((tier) => step === FREQUENCIES[tier]));
      const expected = parameters
        .map(({ name }) => name)
        .filter((name) => {
          const tier = custom.assignments[name] as number;
          return active.includes(tier) && !(firstUpdate.has(tier) && name.endsWith('.lora_a'));
        });
      check(
        JSON.stringify([...changed].sort()) === JSON.stringify([...expected].sort()),
        `step ${step}: ${expected.length} parameters of tiers [${active.join(', ')}] changed, and no others`,
      );
    }
  } finally {
    trainer.dispose();
    await rm(outputDir, { recursive: true, force: true });
  }

  if (failures.length > 0) {
    console.error(`${failures.length} check(s) failed: ${failures.join('; ')}`);
    process.exit(1);
  }
  console.log('all checks passed');
}

await main();
