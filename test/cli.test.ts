/**
 * The built `nested-learning` command (`dist/cli.js`, built by `npm test`'s pretest step), run as a
 * child process on the embedded tiny model with a few passages of the embedded data.
 */
import { execFile, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { readAdapter } from '../src/adapters/index.js';
import { initBackend } from '../src/backend/index.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const cli = join(root, 'dist', 'cli.js');
const modelPath = join(root, 'examples', 'models', 'tiny-qwen2');
const dataPath = join(root, 'examples', 'data');
const execFileAsync = promisify(execFile);

const CHECKPOINT_FILES = ['adapter_config.json', 'adapters.safetensors', 'metadata.json', 'optimizer.safetensors', 'trainer_state.json'];

interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

let workDir: string;
/** Flags that point a run at the small data files and keep it to a few seconds. */
let smallRun: string[];

async function runCli(args: string[], cwd = workDir): Promise<CliResult> {
  try {
    const { stdout, stderr } = await execFileAsync(process.execPath, [cli, ...args], { cwd, encoding: 'utf8', timeout: 60_000 });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const failure = error as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof failure.code === 'number' ? failure.code : -1, stdout: failure.stdout ?? '', stderr: failure.stderr ?? '' };
  }
}

/** Copies the first `count` lines of an embedded data file. */
async function copyLines(source: string, target: string, count: number): Promise<string> {
  const lines = (await readFile(join(dataPath, source), 'utf8')).split('\n').filter((line) => line.trim() !== '');
  await writeFile(target, `${lines.slice(0, count).join('\n')}\n`);
  return target;
}

function readJsonLines(path: string): Record<string, unknown>[] {
  return readFileSync(path, 'utf8')
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

beforeAll(async () => {
  expect(existsSync(cli), 'dist/cli.js is missing: run `npm run build` (npm test does it in pretest)').toBe(true);
  workDir = await mkdtemp(join(tmpdir(), 'nested-learning-cli-'));
  const train = await copyLines('fiction/train.jsonl', join(workDir, 'train.jsonl'), 8);
  const valid = await copyLines('fiction/valid.jsonl', join(workDir, 'valid.jsonl'), 2);
  const retain = await copyLines('press/valid.jsonl', join(workDir, 'retain.jsonl'), 2);
  smallRun = [
    '--base-model-path', modelPath,
    '--train-data-path', train,
    '--val-data-path', valid,
    '--retain-data-path', retain,
    '--batch-size', '2',
    '--max-seq-length', '48',
    '--warmup-steps', '0',
    '--eval-batches', '1',
    '--backend', 'wasm',
  ];
});

afterAll(async () => {
  await rm(workDir, { recursive: true, force: true });
});

describe('nested-learning --help', () => {
  it('lists every command', async () => {
    const result = await runCli(['--help']);

    expect(result.code).toBe(0);
    for (const command of ['train', 'tiers', 'eval', 'generate', 'convert', 'compare', 'serve']) {
      expect(result.stdout).toMatch(new RegExp(`^  ${command} `, 'm'));
    }
  });

  it.each([
    ['train', '--num-steps <value>'],
    ['tiers', '--tier-update-frequencies <a,b,...>'],
    ['eval', '<checkpoint>'],
    ['generate', '--max-new-tokens <count>'],
    ['convert', '--to <format>'],
    ['compare', '--seeds <list>'],
    ['serve', '--port <number>'],
  ])('describes %s', async (command, expected) => {
    const result = await runCli([command, '--help']);

    expect(result.code).toBe(0);
    expect(result.stdout).toContain(`Usage: nested-learning ${command}`);
    expect(result.stdout).toContain(expected);
  });
});

describe('nested-learning train', () => {
  let experiment: string;
  let output: CliResult;

  beforeAll(async () => {
    // No --output-dir: the experiment goes to ./nested_learning/checkpoints under the working directory.
    output = await runCli(['train', ...smallRun, '--num-steps', '4', '--eval-every', '2', '--checkpoint-every', '2', '--log-every', '2', '--experiment-name', 'e2e']);
    experiment = join(workDir, 'nested_learning', 'checkpoints', 'e2e');
  });

  it('exits 0 and prints plain step lines', () => {
    expect(output.stderr).toBe('');
    expect(output.code).toBe(0);
    const stepLines = output.stdout.split('\n').filter((line) => line.startsWith('Step '));
    // Steps 1 (always), 2 and 4 (every 2nd) are reported.
    expect(stepLines).toHaveLength(3);
    for (const line of stepLines) {
      expect(line).toMatch(/^Step [124]\/4 \| Loss: \d+\.\d{4} \| Active tiers: \[[\d, ]+\] \| ETA: (\?|\d+s|\d+\.\dm)$/);
    }
    expect(stepLines[0]).toContain('Active tiers: [0]');
    expect(stepLines[2]).toContain('Active tiers: [0, 1, 2]');
  });

  it('prints the summary with the experiment folder', () => {
    expect(output.stdout).toContain('Training completed: 4/4 steps');
    expect(output.stdout).toMatch(/Validation loss at step 4: \d+\.\d{4}/);
    expect(output.stdout).toMatch(/Forgetting at step 4: [+-]\d+\.\d{4}/);
    expect(output.stdout).toContain(`Experiment folder: ${experiment}`);
  });

  it('leaves config, checkpoints, metrics and summary', async () => {
    expect(existsSync(join(experiment, 'config.json'))).toBe(true);
    expect((await readdir(join(experiment, 'checkpoints', 'final'))).sort()).toEqual(CHECKPOINT_FILES);
    expect((await readdir(join(experiment, 'checkpoints', 'checkpoint_0000004'))).sort()).toEqual(CHECKPOINT_FILES);

    const trainLines = readJsonLines(join(experiment, 'metrics', 'train_metrics.jsonl'));
    expect(trainLines.map((line) => line.step)).toEqual([1, 2, 3, 4]);
    const evalLines = readJsonLines(join(experiment, 'metrics', 'eval_metrics.jsonl'));
    expect(evalLines.map((line) => line.step)).toEqual([0, 2, 4]);

    const summary = JSON.parse(await readFile(join(experiment, 'summary.json'), 'utf8')) as Record<string, unknown>;
    const last = evalLines[2] as Record<string, unknown>;
    expect(summary.reason).toBe('completed');
    expect(summary.steps).toBe(4);
    expect(summary.valLoss).toBe(last.valLoss);
    expect(summary.forgetting).toBe(last.forgetting);
    expect(summary.retainBaseline).toBe((evalLines[0] as Record<string, unknown>).retainLoss);
  });

  it('rejects an invalid field value', async () => {
    const result = await runCli(['train', ...smallRun, '--num-steps', '0']);

    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/^Error \[CONFIG_INVALID\]: .*numSteps/s);
    expect(result.stderr).not.toContain('    at ');
  });

  it('prints the stack trace with --verbose', async () => {
    const result = await runCli(['--verbose', 'train', ...smallRun, '--num-steps', '0']);

    expect(result.code).toBe(1);
    expect(result.stderr).toContain('    at ');
  });

  it('rejects an unknown flag with a suggestion', async () => {
    const result = await runCli(['train', '--num-step', '5']);

    expect(result.code).toBe(1);
    expect(result.stderr).toContain("unknown option '--num-step'");
    expect(result.stderr).toContain('--num-steps');
  });

  it('stops on SIGINT with a final checkpoint', async () => {
    const args = [cli, 'train', ...smallRun, '--num-steps', '200', '--eval-every', '0', '--log-every', '1', '--output-dir', 'runs', '--experiment-name', 'interrupted'];
    const child = spawn(process.execPath, args, { cwd: workDir });
    let stdout = '';
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    const exitCode = await new Promise<number | null>((resolve) => {
      child.stdout.on('data', (chunk: Buffer) => {
        const first = !stdout.includes('Step 1/200');
        stdout += chunk.toString();
        if (first && stdout.includes('Step 1/200')) {
          child.kill('SIGINT');
        }
      });
      child.on('exit', (code) => resolve(code));
    });

    expect(exitCode).toBe(130);
    expect(stderr).toContain('SIGINT received');
    expect(stdout).toContain('Training stopped by signal');
    const final = join(workDir, 'runs', 'interrupted', 'checkpoints', 'final');
    expect((await readdir(final)).sort()).toEqual(CHECKPOINT_FILES);
    const metadata = JSON.parse(await readFile(join(final, 'metadata.json'), 'utf8')) as { stopped: boolean; step: number };
    expect(metadata.stopped).toBe(true);
    expect(metadata.step).toBeGreaterThanOrEqual(1);
    expect(metadata.step).toBeLessThan(200);
  });
});

describe('nested-learning tiers', () => {
  it('prints the tier map as JSON', async () => {
    const result = await runCli(['tiers', ...smallRun, '--json']);

    expect(result.code).toBe(0);
    const tierMap = JSON.parse(result.stdout) as { frequencies: number[]; tiers: { layers: number[]; elementCount: number; parameterCount: number }[] };
    expect(tierMap.frequencies).toEqual([1, 2, 4]);
    expect(tierMap.tiers.map((tier) => tier.layers)).toEqual([[0], [1], [2, 3]]);
    // Rank 8 on every projection of a layer: q and o 8 * (128 + 128), k and v 8 * (128 + 64),
    // gate, up and down 8 * (128 + 384): 2 * 2048 + 2 * 1536 + 3 * 4096 = 19,456 elements in 14 tensors.
    expect(tierMap.tiers.map((tier) => tier.elementCount)).toEqual([19_456, 19_456, 38_912]);
    expect(tierMap.tiers.map((tier) => tier.parameterCount)).toEqual([14, 14, 28]);
  });

  it('prints a table', async () => {
    const result = await runCli(['tiers', ...smallRun, '--tier-update-frequencies', '1,4']);

    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/^0\s+1\s+0-1\s+28\s+38,912\s*$/m);
    expect(result.stdout).toMatch(/^1\s+4\s+2-3\s+28\s+38,912\s*$/m);
  });

  it('rejects a list with a non-number', async () => {
    const result = await runCli(['tiers', ...smallRun, '--tier-update-frequencies', '1,x']);

    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/^Error \[CONFIG_INVALID\]: .*tierUpdateFrequencies/s);
  });
});

describe('nested-learning eval', () => {
  it('matches the losses the trainer recorded', async () => {
    const experiment = join(workDir, 'nested_learning', 'checkpoints', 'e2e');
    const result = await runCli(['eval', join(experiment, 'checkpoints', 'final'), '--json']);

    expect(result.code).toBe(0);
    const evaluation = JSON.parse(result.stdout) as Record<string, number>;
    const recorded = readJsonLines(join(experiment, 'metrics', 'eval_metrics.jsonl')).at(-1) as Record<string, number>;
    expect(evaluation.step).toBe(4);
    expect(evaluation.valLoss).toBeCloseTo(recorded.valLoss as number, 5);
    expect(evaluation.retainLoss).toBeCloseTo(recorded.retainLoss as number, 5);
    // eval's retain baseline is the base model without the adapter. The trainer's is the fresh adapter
    // before training, and its lora_b is zero, so both equal the base model's loss.
    expect(evaluation.retainBaseline).toBeCloseTo(recorded.retainBaseline as number, 5);
    expect(evaluation.forgetting).toBeCloseTo(recorded.forgetting as number, 5);
  });

  it('rejects a missing checkpoint folder', async () => {
    const result = await runCli(['eval', join(workDir, 'no-such-checkpoint')]);

    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/^Error \[CLI_CHECKPOINT_NOT_FOUND\]: Checkpoint folder .*no-such-checkpoint does not exist/);
  });
});

describe('nested-learning generate', () => {
  it('continues the prompt with an adapter', async () => {
    const adapter = join(workDir, 'nested_learning', 'checkpoints', 'e2e', 'checkpoints', 'final');
    const args = ['generate', '--adapter', adapter, '--prompt', 'The city council', '--max-new-tokens', '8'];
    const first = await runCli(args);
    const second = await runCli(args);

    expect(first.code).toBe(0);
    expect(first.stdout.startsWith('The city council')).toBe(true);
    expect(first.stdout.trim().length).toBeGreaterThan('The city council'.length);
    // Greedy decoding is deterministic.
    expect(second.stdout).toBe(first.stdout);
  });

  it('rejects a zero token budget', async () => {
    const result = await runCli(['generate', '--prompt', 'Hello', '--max-new-tokens', '0']);

    expect(result.code).toBe(1);
    expect(result.stderr).toContain('Invalid value "0" for --max-new-tokens');
  });
});

describe('nested-learning convert', () => {
  it('round-trips a checkpoint through PEFT', async () => {
    const checkpoint = join(workDir, 'nested_learning', 'checkpoints', 'e2e', 'checkpoints', 'final');
    const peft = join(workDir, 'converted-peft');
    const mlx = join(workDir, 'converted-mlx');

    const toPeft = await runCli(['convert', checkpoint, peft, '--to', 'peft', '--base-model', modelPath]);
    const toMlx = await runCli(['convert', peft, mlx, '--to', 'mlx', '--model-config', modelPath]);

    expect(toPeft.code).toBe(0);
    expect(toPeft.stdout).toContain('(mlx) to');
    expect(existsSync(join(peft, 'adapter_model.safetensors'))).toBe(true);
    expect(toMlx.code).toBe(0);

    await initBackend({ backend: 'cpu' });
    const before = tf.memory().numTensors;
    const original = await readAdapter(checkpoint);
    const roundTrip = await readAdapter(mlx);
    expect(Object.keys(roundTrip.weights).sort()).toEqual(Object.keys(original.weights).sort());
    expect(roundTrip.scale).toBeCloseTo(original.scale, 6);
    for (const [key, tensor] of Object.entries(original.weights)) {
      expect(Array.from(roundTrip.weights[key]?.dataSync() ?? []), key).toEqual(Array.from(tensor.dataSync()));
    }
    tf.dispose([...Object.values(original.weights), ...Object.values(roundTrip.weights)]);
    expect(tf.memory().numTensors).toBe(before);
  });

  it('rejects an unknown format', async () => {
    const result = await runCli(['convert', workDir, join(workDir, 'x'), '--to', 'onnx']);

    expect(result.code).toBe(1);
    expect(result.stderr).toContain("argument 'onnx' is invalid");
  });
});

describe('nested-learning compare', () => {
  it('writes the report of two seeds', async () => {
    const reportDir = join(workDir, 'report');
    const result = await runCli(['compare', ...smallRun, '--seeds', '0,1', '--num-steps', '2', '--eval-every', '2', '--report-dir', reportDir]);

    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    const report = await readFile(join(reportDir, 'report.md'), 'utf8');
    expect(report).toContain('| method | new-domain validation loss | old-domain forgetting | training time (s) |');
    expect(report).toMatch(/\| plain LoRA \[1, 1, 1\] \| \d+\.\d{4} ± \d+\.\d{4} \| [+-]\d+\.\d{4} ± \d+\.\d{4} \|/);
    expect(report).toMatch(/\| nested \[1, 2, 4\] \| \d+\.\d{4} ± \d+\.\d{4} \|/);
    expect(report).toContain('![Validation loss and forgetting over training steps](report.svg)');

    const svg = await readFile(join(reportDir, 'report.svg'), 'utf8');
    expect(svg.startsWith('<svg')).toBe(true);
    // Per panel: 2 runs per method plus 2 mean curves, in 2 panels.
    expect(svg.match(/<polyline /g)).toHaveLength(12);

    const data = JSON.parse(await readFile(join(reportDir, 'report.json'), 'utf8')) as { runs: { method: string; seed: number; valLoss: number }[] };
    expect(data.runs.map((run) => `${run.method}-${run.seed}`).sort()).toEqual(['lora-0', 'lora-1', 'nested-0', 'nested-1']);
    for (const run of data.runs) {
      const summary = JSON.parse(await readFile(join(reportDir, 'runs', `${run.method}-seed${run.seed}`, 'summary.json'), 'utf8')) as { valLoss: number };
      expect(run.valLoss).toBe(summary.valLoss);
    }
  });

  it('rejects an invalid seed list', async () => {
    const result = await runCli(['compare', '--seeds', '0,a']);

    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/^Error \[CLI_INVALID_FLAG\]: Invalid --seeds "0,a"/);
  });
});

describe('nested-learning serve', () => {
  it('serves the dashboard and stops on SIGINT', async () => {
    const outputDir = join(workDir, 'served');
    await mkdir(outputDir, { recursive: true });
    const child = spawn(process.execPath, [cli, 'serve', '--port', '0', '--quiet', '--output-dir', outputDir], { cwd: workDir });
    const url = await new Promise<string>((resolve, reject) => {
      let stdout = '';
      child.stdout.on('data', (chunk: Buffer) => {
        stdout += chunk.toString();
        const match = /Dashboard and API at (http:\/\/127\.0\.0\.1:\d+)\//.exec(stdout);
        if (match !== null) {
          resolve(match[1] as string);
        }
      });
      child.on('exit', (code) => reject(new Error(`serve exited with ${code} before listening: ${stdout}`)));
    });

    const response = await fetch(`${url}/`);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toContain('text/html');

    const exitCode = await new Promise<number | null>((resolve) => {
      child.on('exit', (code) => resolve(code));
      child.kill('SIGINT');
    });
    expect(exitCode).toBe(0);
  });

  it('rejects an invalid port', async () => {
    const result = await runCli(['serve', '--port', '99999']);

    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/^Error \[CLI_INVALID_FLAG\]: Invalid --port "99999"/);
  });
});
