/**
 * Converting a LoRA adapter from Hugging Face PEFT to mlx_lm and back.
 *
 * The example first writes a PEFT adapter for the embedded tiny model (rank 4, lora_alpha 16, on
 * q_proj and v_proj of layers 2 and 3, with seeded random weights), as a PEFT training run would
 * leave it. It then converts it to mlx_lm with `convertAdapter` and back to PEFT.
 *
 * The example checks its own results and exits with status 1 when a check fails:
 * - the PEFT file stores `lora_A` as [r, in] under `base_model.model.` keys, and the mlx_lm file
 *   stores its transpose `lora_a` [in, r] under the bare module path;
 * - the mlx_lm config has scale = lora_alpha / r = 4 and num_layers = 2 (layers 2 and 3 of 4);
 * - the round trip gives back lora_alpha 16, r 4 and bit-identical weights;
 * - the model gives the same logits with the PEFT and the mlx_lm adapter, and different logits
 *   without an adapter.
 *
 * Run after `npm run build` (it imports the built package by name):
 *   npx tsx examples/convert-adapters.ts
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import * as tf from '@tensorflow/tfjs';
import {
  convertAdapter,
  detectAdapterFormat,
  initBackend,
  loadCausalLM,
  loadTokenizer,
  readAdapter,
  readSafetensors,
  writePeftAdapter,
  type LoraAdapter,
} from 'nested-learning';
import { checkTensorLeaks, compareTensors } from 'nested-learning/testing';

const MODEL_DIR = fileURLToPath(new URL('./models/tiny-qwen2', import.meta.url));
const RANK = 4;
const ALPHA = 16;
const LAYERS = [2, 3];
const MODULES = ['self_attn.q_proj', 'self_attn.v_proj'];

const failures: string[] = [];

function check(condition: boolean, description: string): void {
  console.log(`${condition ? 'ok  ' : 'FAIL'} ${description}`);
  if (!condition) {
    failures.push(description);
  }
}

/**
 * Builds an adapter in the library's layout (mlx_lm's: `lora_a` [in, r], `lora_b` [r, out]) with seeded
 * random weights. q_proj maps 128 -> 128 and v_proj 128 -> 64 in the tiny model (2 key-value heads
 * of 32).
 */
function makeAdapter(): LoraAdapter {
  const outFeatures: Record<string, number> = { 'self_attn.q_proj': 128, 'self_attn.v_proj': 64 };
  const weights: Record<string, tf.Tensor> = {};
  let seed = 1;
  for (const layer of LAYERS) {
    for (const module of MODULES) {
      const prefix = `model.layers.${layer}.${module}`;
      weights[`${prefix}.lora_a`] = tf.randomUniform([128, RANK], -0.1, 0.1, 'float32', seed++);
      weights[`${prefix}.lora_b`] = tf.randomUniform([RANK, outFeatures[module] as number], -0.1, 0.1, 'float32', seed++);
    }
  }
  return { format: 'mlx', rank: RANK, scale: ALPHA / RANK, dropout: 0, targetModules: MODULES, layers: LAYERS, weights, config: {} };
}

/** Logits of the tiny model for one sentence, with the adapter in `adapterDir` or none. */
async function logitsWith(adapterDir: string | undefined, inputIds: number[]): Promise<tf.Tensor> {
  const adapter = adapterDir === undefined ? undefined : await readAdapter(adapterDir);
  const model = await loadCausalLM(MODEL_DIR, adapter === undefined ? {} : { adapter });
  try {
    return tf.tidy(() => model.forward(tf.tensor2d([inputIds], [1, inputIds.length], 'int32')));
  } finally {
    model.dispose();
    Object.values(adapter?.weights ?? {}).forEach((tensor) => tensor.dispose());
  }
}

async function main(): Promise<void> {
  await initBackend({ backend: 'wasm' });
  const root = await mkdtemp(join(tmpdir(), 'nested-learning-convert-'));
  const peftDir = join(root, 'peft');
  const mlxDir = join(root, 'mlx');
  const roundTripDir = join(root, 'peft-again');

  try {
    const leaks = await checkTensorLeaks(async () => {
      // A PEFT adapter folder, as PEFT's save_pretrained(safe_serialization=True) writes it.
      const original = makeAdapter();
      await writePeftAdapter(peftDir, original, { alpha: ALPHA, baseModelNameOrPath: MODEL_DIR });

      // PEFT -> mlx_lm. numHiddenLayers lets the writer set num_layers to cover layers 2 and 3.
      await convertAdapter(peftDir, mlxDir, { to: 'mlx', numHiddenLayers: 4 });
      // mlx_lm -> PEFT.
      await convertAdapter(mlxDir, roundTripDir, { to: 'peft' });

      check((await detectAdapterFormat(peftDir)) === 'peft' && (await detectAdapterFormat(mlxDir)) === 'mlx', 'formats are detected from the weights file names');

      // The files as other tools see them.
      const peftFile = await readSafetensors(join(peftDir, 'adapter_model.safetensors'));
      const mlxFile = await readSafetensors(join(mlxDir, 'adapters.safetensors'));
      const peftA = peftFile.tensors['base_model.model.model.layers.2.self_attn.q_proj.lora_A.weight'];
      const mlxA = mlxFile.tensors['model.layers.2.self_attn.q_proj.lora_a'];
      console.log(`PEFT lora_A.weight: [${peftA?.shape.join(', ')}], mlx_lm lora_a: [${mlxA?.shape.join(', ')}]`);
      check(peftA?.shape.join(',') === `${RANK},128` && mlxA?.shape.join(',') === `128,${RANK}`, 'PEFT stores lora_A as [r, in], mlx_lm stores lora_a as [in, r]');
      if (peftA !== undefined && mlxA !== undefined) {
        const transposed = tf.transpose(peftA);
        check(compareTensors(mlxA, transposed, { rtol: 0, atol: 0 }).pass, 'mlx_lm lora_a is exactly the transpose of PEFT lora_A');
        transposed.dispose();
      }
      tf.dispose([...Object.values(peftFile.tensors), ...Object.values(mlxFile.tensors)]);

      const mlxConfig = JSON.parse(await readFile(join(mlxDir, 'adapter_config.json'), 'utf8')) as {
        num_layers: number;
        lora_parameters: { rank: number; scale: number; keys: string[] };
      };
      console.log(`mlx_lm adapter_config.json: ${JSON.stringify(mlxConfig)}`);
      check(mlxConfig.lora_parameters.scale === ALPHA / RANK, `mlx_lm scale is lora_alpha / r = ${ALPHA / RANK}`);
      check(mlxConfig.lora_parameters.rank === RANK && mlxConfig.num_layers === 2, 'mlx_lm rank is 4 and num_layers 2 (the last two of four layers)');

      const peftConfig = JSON.parse(await readFile(join(roundTripDir, 'adapter_config.json'), 'utf8')) as {
        r: number;
        lora_alpha: number;
        target_modules: string[];
        layers_to_transform: number[];
      };
      console.log(`PEFT adapter_config.json after the round trip: r ${peftConfig.r}, lora_alpha ${peftConfig.lora_alpha}, ` +
        `target_modules ${JSON.stringify(peftConfig.target_modules)}, layers_to_transform ${JSON.stringify(peftConfig.layers_to_transform)}`);
      check(peftConfig.r === RANK && peftConfig.lora_alpha === ALPHA, `the round trip gives back r ${RANK} and lora_alpha ${ALPHA}`);

      const back = await readAdapter(roundTripDir);
      const differing = Object.entries(original.weights).filter(([name, tensor]) => {
        const returned = back.weights[name];
        return returned === undefined || !compareTensors(returned, tensor, { rtol: 0, atol: 0 }).pass;
      });
      check(differing.length === 0, `all ${Object.keys(original.weights).length} matrices are bit-identical after PEFT -> mlx_lm -> PEFT`);
      tf.dispose([...Object.values(original.weights), ...Object.values(back.weights)]);

      // Both formats give the model the same adapter.
      const tokenizer = await loadTokenizer(MODEL_DIR);
      const inputIds = tokenizer.encode('The committee said the city would vote on the bond issue.');
      const withPeft = await logitsWith(peftDir, inputIds);
      const withMlx = await logitsWith(mlxDir, inputIds);
      const withoutAdapter = await logitsWith(undefined, inputIds);
      const same = compareTensors(withMlx, withPeft, { rtol: 1e-5, atol: 1e-6 });
      console.log(`logits, PEFT vs mlx_lm adapter: ${same.message}`);
      check(same.pass, 'the model gives the same logits with the PEFT and the mlx_lm adapter');
      const changed = compareTensors(withoutAdapter, withPeft, { rtol: 1e-5, atol: 1e-6 });
      check(!changed.pass, `the adapter changes the logits (max absolute difference ${changed.maxAbsoluteError.toExponential(2)})`);
      tf.dispose([withPeft, withMlx, withoutAdapter]);
    });
    check(leaks.leakedTensors === 0, `no tensors leaked (tf.memory().numTensors ${leaks.before.numTensors} before, ${leaks.after.numTensors} after)`);
  } finally {
    await rm(root, { recursive: true, force: true });
  }

  if (failures.length > 0) {
    console.error(`${failures.length} check(s) failed: ${failures.join('; ')}`);
    process.exit(1);
  }
  console.log('all checks passed');
}

await main();
