import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { ConfigError } from '../src/errors.js';
import { NestedLearningConfig, type ConfigIssue } from '../src/config/index.js';

const FIXTURES = fileURLToPath(new URL('./fixtures/config/', import.meta.url));
const fixture = (name: string): string => join(FIXTURES, name);

/** Runs `fromFile` expecting a ConfigError and returns it. */
async function fileFailure(path: string, overrides?: Record<string, unknown>): Promise<ConfigError> {
  try {
    await NestedLearningConfig.fromFile(path, overrides === undefined ? {} : { overrides });
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return error as ConfigError;
  }
  throw new Error(`expected ${path} to be rejected`);
}

let scratch: string;

beforeAll(async () => {
  scratch = await mkdtemp(join(tmpdir(), 'nl-config-'));
});

afterAll(async () => {
  await rm(scratch, { recursive: true, force: true });
});

describe('NestedLearningConfig.fromFile', () => {
  it('reads a config.json of the Python original', async () => {
    const config = await NestedLearningConfig.fromFile(fixture('python-original.json'));

    expect(config.baseModelPath).toBe('./models/Qwen2.5-7B-Instruct');
    expect(config.adapterPath).toBeUndefined();
    expect(config.trainDataPath).toBe('./data/nested.jsonl');
    expect(config.valDataPath).toBe('./data/valid.jsonl');
    expect(config.tierUpdateFrequencies).toEqual([1, 2, 4]);
    expect(config.learningRate).toBe(1e-5);
    expect(config.batchSize).toBe(1);
    expect(config.maxSeqLength).toBe(128);
    expect(config.warmupSteps).toBe(100);
    expect(config.gradientAccumulationSteps).toBe(2);
    expect(config.earlyStop).toBe(true);
    expect(config.minDelta).toBe(0.0001);
    expect(config.outputDir).toBe('./nested_learning/checkpoints');
    expect(config.experimentName).toBe('cli_test9');
    expect(config.seed).toBe(42);
  });

  it('reads camelCase YAML', async () => {
    const config = await NestedLearningConfig.fromFile(fixture('camel.yaml'));

    expect(config.numTiers).toBe(4);
    expect(config.tierUpdateFrequencies).toEqual([1, 2, 4, 8]);
    expect(config.tierLearningRateScales).toEqual([1, 1, 0.5, 0.25]);
    // YAML 1.2 reads 2e-4 and 1e-6 as numbers.
    expect(config.learningRate).toBe(2e-4);
    expect(config.minLearningRate).toBe(1e-6);
    expect(config.loraTargetModules).toEqual(['q_proj', 'v_proj']);
    expect(config.loraLayers).toBe(16);
    expect(config.backend).toBe('cpu');
  });

  it('reads manual rules in order', async () => {
    const config = await NestedLearningConfig.fromFile(fixture('manual.yml'));

    expect(config.tierAssignmentStrategy).toBe('manual');
    expect(config.defaultTier).toBe(2);
    expect(Object.entries(config.tierMap ?? {})).toEqual([
      ['model.layers.0.self_attn.q_proj.lora_a', 0],
      ['model.layers.*.mlp.**', 1],
      ['/layers\\.(1[0-9])\\./', 2],
    ]);
  });

  it('applies overrides over the file', async () => {
    const config = await NestedLearningConfig.fromFile(fixture('python-original.json'), {
      overrides: { learningRate: 3e-4, experiment_name: 'override' },
    });

    expect(config.learningRate).toBe(3e-4);
    expect(config.experimentName).toBe('override');
  });

  it('reports each problem with its line', async () => {
    const error = await fileFailure(fixture('invalid.yaml'));
    const path = fixture('invalid.yaml');

    expect(error.code).toBe('CONFIG_INVALID');
    expect(error.message).toBe(
      [
        `Invalid configuration in ${path} (4 problems):`,
        '- lora_rnak (line 9): is not a known option. Did you mean lora_rank?',
        '- learning_rate (line 3): must be a number greater than 0, got -0.001.',
        '- batch_size (line 10): must be an integer of at least 1, got "" (an empty string).',
        '- tier_update_frequencies[2] (line 8): is 2, less than the 4 of tier 1. Frequencies must not decrease, because tier 0 is the fastest tier.',
      ].join('\n'),
    );
    const issues = error.details.issues as ConfigIssue[];
    expect(issues.map((issue) => issue.line)).toEqual([9, 3, 10, 8]);
    expect(issues.every((issue) => issue.file === path)).toBe(true);
    expect(error.details.file).toBe(path);
  });

  it('reports rule problems of a Python config', async () => {
    const path = join(scratch, 'no-validation.json');
    await writeFile(path, JSON.stringify({ base_model_path: './m', train_data_path: './t.jsonl', val_data_path: null, early_stop: true }, null, 2));

    const error = await fileFailure(path);

    expect(error.message.split('\n').slice(1)).toEqual([
      '- early_stop (line 5): is true but val_data_path is missing, and early_stop compares validation losses. Set val_data_path or set early_stop to false.',
    ]);
  });

  it('marks override problems without a line', async () => {
    const error = await fileFailure(fixture('python-original.json'), { loraRank: 0 });

    expect(error.message.split('\n').slice(1)).toEqual(['- loraRank: must be an integer of at least 1, got 0.']);
  });

  it('rejects a missing file', async () => {
    const path = join(scratch, 'missing.yaml');
    const error = await fileFailure(path);

    expect(error.code).toBe('CONFIG_FILE_INVALID');
    expect(error.details.reason).toBe('not_found');
    expect(error.message).toBe(`Config file not found: ${path}. Check the path and the working directory.`);
  });

  it('rejects a folder', async () => {
    const folder = join(scratch, 'config.json');
    await mkdir(folder);

    const error = await fileFailure(folder);

    expect(error.code).toBe('CONFIG_FILE_INVALID');
    expect(error.details.reason).toBe('read_failed');
    expect(error.message).toMatch(/^Failed to read config file .*config\.json: EISDIR/);
  });

  it('rejects YAML syntax errors with the line', async () => {
    const path = fixture('syntax-error.yaml');
    const error = await fileFailure(path);

    expect(error.code).toBe('CONFIG_FILE_INVALID');
    expect(error.details.reason).toBe('syntax');
    expect(error.details.line).toBe(3);
    expect(error.message).toMatch(new RegExp(`^Config file ${escape(path)} is not valid YAML: .*at line 3, column 1`));
  });

  it('rejects duplicate YAML keys', async () => {
    const error = await fileFailure(fixture('duplicate-key.yaml'));

    expect(error.details.reason).toBe('syntax');
    expect(error.details.line).toBe(4);
    expect(error.message).toContain('Map keys must be unique at line 4, column 1');
  });

  it('rejects JSON syntax errors with the line', async () => {
    const path = fixture('syntax-error.json');
    const error = await fileFailure(path);

    expect(error.code).toBe('CONFIG_FILE_INVALID');
    expect(error.details.reason).toBe('syntax');
    // Line 3 is `  "train_data_path" "./data/train.jsonl"`; the parser stops at the second string, column 21.
    expect(error.details.line).toBe(3);
    expect(error.details.column).toBe(21);
    expect(error.message).toMatch(new RegExp(`^Config file ${escape(path)} is not valid JSON at line 3, column 21: `));
  });

  it('rejects a file that is not an object', async () => {
    const error = await fileFailure(fixture('list.yaml'));

    expect(error.code).toBe('CONFIG_FILE_INVALID');
    expect(error.details.reason).toBe('not_an_object');
    expect(error.message).toContain('must contain an object of options at the top level, but it contains [{"base_model_path": "./models/tiny-llama"}]');
  });

  it('rejects an empty file', async () => {
    const path = join(scratch, 'empty.yaml');
    await writeFile(path, '# nothing here\n');

    const error = await fileFailure(path);

    expect(error.details.reason).toBe('not_an_object');
    expect(error.message).toContain('but it contains null');
  });

  it('rejects other extensions', async () => {
    const error = await fileFailure(fixture('config.toml'));

    expect(error.code).toBe('CONFIG_FILE_INVALID');
    expect(error.details.reason).toBe('unsupported_extension');
    expect(error.message).toContain('has the extension ".toml", which is not supported. Use .json, .yaml or .yml.');
  });

  it('reads a file with a byte order mark', async () => {
    const path = join(scratch, 'bom.json');
    await writeFile(path, `\uFEFF${JSON.stringify({ base_model_path: './m', train_data_path: './t.jsonl' })}`);

    expect((await NestedLearningConfig.fromFile(path)).baseModelPath).toBe('./m');
  });

  it('rejects NaN written in YAML', async () => {
    const path = join(scratch, 'nan.yaml');
    await writeFile(path, 'base_model_path: ./m\ntrain_data_path: ./t.jsonl\nlearning_rate: .nan\nbatch_size:\n');

    const error = await fileFailure(path);

    expect(error.message.split('\n').slice(1)).toEqual([
      '- learning_rate (line 3): must be a number greater than 0, got NaN.',
      '- batch_size (line 4): must be an integer of at least 1, got null. Remove the key to use the default, 4.',
    ]);
  });
});

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
