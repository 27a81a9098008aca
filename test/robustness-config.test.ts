import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { NestedLearningConfig } from '../src/config/index.js';
import { ConfigError } from '../src/errors.js';

let scratch: string;

beforeAll(async () => {
  scratch = await mkdtemp(join(tmpdir(), 'nl-robust-config-'));
});

afterAll(async () => {
  await rm(scratch, { recursive: true, force: true });
});

async function writeScratch(name: string, data: string | Uint8Array): Promise<string> {
  const path = join(scratch, name);
  await writeFile(path, data);
  return path;
}

/** Runs `fromFile` expecting a ConfigError and returns it. */
async function fileFailure(path: string): Promise<ConfigError> {
  try {
    await NestedLearningConfig.fromFile(path);
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return error as ConfigError;
  }
  throw new Error(`expected ${path} to be rejected`);
}

const REQUIRED = 'baseModelPath: /models/base\ntrainDataPath: /data/train.jsonl\n';

describe('config file robustness', () => {
  it('rejects a YAML alias bomb', async () => {
    // Guards against a file whose nested aliases expand to 9^9 strings escaping as a bare
    // ReferenceError from the yaml package instead of a ConfigError.
    const levels = ['a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]'];
    for (let level = 1; level < 10; level += 1) {
      const previous = String.fromCharCode(96 + level);
      const name = String.fromCharCode(97 + level);
      levels.push(`${name}: &${name} [${Array.from({ length: 9 }, () => `*${previous}`).join(', ')}]`);
    }
    const path = await writeScratch('bomb.yaml', `${REQUIRED}${levels.join('\n')}\n`);

    const error = await fileFailure(path);

    expect(error.code).toBe('CONFIG_FILE_INVALID');
    expect(error.details.reason).toBe('syntax');
    expect(error.message).toContain(`Config file ${path} is not valid YAML: its aliases expand to too many values`);
    expect(error.message).toContain('Write the values out instead of nesting aliases.');
  });

  it('keeps a few YAML aliases working', async () => {
    const path = await writeScratch('alias.yaml', `baseModelPath: &data /data\ntrainDataPath: *data\n`);

    const config = await NestedLearningConfig.fromFile(path);

    expect(config.trainDataPath).toBe('/data');
  });

  it('rejects duplicate JSON keys', async () => {
    // Guards against JSON.parse silently keeping the second of two equal keys, so a file that
    // sets numSteps twice trained with whichever came last.
    const path = await writeScratch('duplicate.json', '{"baseModelPath": "/m", "trainDataPath": "/t", "numSteps": 5, "numSteps": 7}');

    const error = await fileFailure(path);

    expect(error.code).toBe('CONFIG_FILE_INVALID');
    expect(error.details.reason).toBe('syntax');
    expect(error.message).toBe(`Config file ${path} sets the key "numSteps" twice at the top level. Keep only one of them.`);
  });

  it('rejects duplicate nested JSON keys', async () => {
    const path = await writeScratch(
      'nested-duplicate.json',
      '{"baseModelPath": "/m", "trainDataPath": "/t", "tierAssignmentStrategy": "manual", "tierMap": {"a": 0, "a": 1}}',
    );

    const error = await fileFailure(path);

    expect(error.message).toContain('sets the key "a" twice inside "tierMap"');
  });

  it('rejects a file that is not UTF-8', async () => {
    // Guards against Latin-1 bytes being decoded to U+FFFD and the mangled path being accepted.
    const bytes = new Uint8Array([...Buffer.from('baseModelPath: /m\ntrainDataPath: /caf'), 0xe9, ...Buffer.from('.jsonl\n')]);
    const path = await writeScratch('latin1.yaml', bytes);

    const error = await fileFailure(path);

    expect(error.code).toBe('CONFIG_FILE_INVALID');
    expect(error.details.reason).toBe('encoding');
    expect(error.details.line).toBe(2);
    // "baseModelPath: /m\n" is 18 bytes and "trainDataPath: /caf" 19 more, so 0xe9 is at offset 37.
    expect(error.message).toBe(`Config file ${path} is not valid UTF-8: byte 0xe9 at offset 37 (line 2). Save the file as UTF-8.`);
  });

  it('rejects UTF-16 JSON', async () => {
    const text = `{"baseModelPath": "/m", "trainDataPath": "/t"}`;
    const path = await writeScratch('utf16.json', Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from(text, 'utf16le')]));

    const error = await fileFailure(path);

    expect(error.details.reason).toBe('encoding');
    expect(error.message).toContain('byte 0xff at offset 0 (line 1)');
  });

  it('locates the invalid byte after accents', async () => {
    // "baseModelPath: /" is 16 bytes and "é" two more (0xc3 0xa9), so the lone 0xff is at offset 18.
    const bytes = new Uint8Array([...Buffer.from('baseModelPath: /é'), 0xff, ...Buffer.from('\ntrainDataPath: /t\n')]);
    const path = await writeScratch('accent-then-invalid.yaml', bytes);

    const error = await fileFailure(path);

    expect(error.message).toContain('byte 0xff at offset 18 (line 1)');
  });

  it('reads a UTF-8 file with accents', async () => {
    const path = await writeScratch('accents.yaml', 'baseModelPath: /modèles/base\ntrainDataPath: /données/train.jsonl\n');

    const config = await NestedLearningConfig.fromFile(path);

    expect(config.baseModelPath).toBe('/modèles/base');
  });
});

describe('config keys robustness', () => {
  it('rejects Object.prototype names', () => {
    // Guards against keys such as "constructor" or "__proto__" passing silently as ignored keys,
    // because the check used the `in` operator, which is also true for inherited names.
    for (const key of ['constructor', 'toString', 'hasOwnProperty', '__proto__']) {
      const input = JSON.parse(`{"baseModelPath": "/m", "trainDataPath": "/t", ${JSON.stringify(key)}: 1}`) as Record<string, unknown>;

      const result = NestedLearningConfig.safeParse(input);

      expect(result.success).toBe(false);
      expect(result.success ? '' : result.error.message).toContain(`- ${key}: is not a known option`);
    }
  });
});
