import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { ArgumentError, FileFormatError } from '../src/errors.js';
import { lineExcerpt, readJsonl, writeDirectoryAtomic, writeFileAtomic, writeJsonAtomic, writeSafetensors } from '../src/io/index.js';

let root: string;
let file: string;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'nl-robust-io-'));
  file = join(root, 'a-file');
  await writeFile(file, 'unchanged');
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

async function rejection(promise: Promise<unknown>): Promise<FileFormatError> {
  try {
    await promise;
  } catch (error) {
    expect(error).toBeInstanceOf(FileFormatError);
    return error as FileFormatError;
  }
  throw new Error('expected a rejection');
}

describe('atomic write robustness', () => {
  it('file write under a file', async () => {
    // Guards against the cleanup of the temporary file raising a bare ENOTDIR that hid the
    // FileFormatError of the write.
    const target = join(file, 'weights.safetensors');

    const error = await rejection(writeFileAtomic(target, 'data'));

    expect(error.code).toBe('FILE_WRITE_FAILED');
    expect(error.details.errno).toBe('ENOTDIR');
    expect(error.message).toMatch(new RegExp(`^Failed to write ${target}: ENOTDIR`));
    expect(await readFile(file, 'utf8')).toBe('unchanged');
  });

  it('folder write under a file', async () => {
    // Guards against a bare EEXIST or ENOTDIR from mkdir when a parent of the folder is a file.
    const target = join(file, 'checkpoint');

    const error = await rejection(writeDirectoryAtomic(target, async () => undefined));

    expect(error.code).toBe('FILE_WRITE_FAILED');
    expect(error.message).toMatch(new RegExp(`^Failed to write ${target}: `));
    expect(await readdir(root)).toEqual(['a-file']);
  });

  it('JSON write of a circular value', async () => {
    // Guards against the TypeError of JSON.stringify escaping without the path being written.
    const value: Record<string, unknown> = {};
    value.self = value;
    const target = join(root, 'circular.json');

    const error = await rejection(writeJsonAtomic(target, value));

    expect(error.code).toBe('FILE_WRITE_FAILED');
    expect(error.message).toBe(`Cannot write ${target}: the value has no JSON form (Converting circular structure to JSON).`);
  });

  it('JSON write of a BigInt', async () => {
    const target = join(root, 'bigint.json');

    const error = await rejection(writeJsonAtomic(target, { step: 1n }));

    expect(error.message).toBe(`Cannot write ${target}: the value has no JSON form (Do not know how to serialize a BigInt).`);
  });
});

describe('JSONL robustness', () => {
  it('rejects a 50 MB invalid line quickly', async () => {
    // Guards against the error excerpt splitting the whole line into code points first, which
    // took 3 s and 1.1 GB of memory for one 50 MB line on a shared 2-core machine (now 0.13 s).
    const path = join(root, 'huge-invalid.jsonl');
    await writeFile(path, 'a'.repeat(50 * 1024 * 1024));

    const started = performance.now();
    const error = await rejection(readJsonl(path));
    const seconds = (performance.now() - started) / 1000;

    expect(error.code).toBe('JSONL_INVALID_LINE');
    expect(error.message).toContain(`: "${'a'.repeat(80)}…". Fix the line`);
    expect(seconds).toBeLessThan(1.5);
  });

  it('excerpt counts code points', () => {
    const emoji = '\u{1F600}';

    // 80 emoji are 160 UTF-16 code units and fit whole; an 81st is cut.
    expect(lineExcerpt(emoji.repeat(80))).toBe(JSON.stringify(emoji.repeat(80)));
    expect(lineExcerpt(emoji.repeat(81))).toBe(JSON.stringify(`${emoji.repeat(80)}…`));
    expect(lineExcerpt('b'.repeat(80))).toBe(JSON.stringify('b'.repeat(80)));
    expect(lineExcerpt('b'.repeat(81))).toBe(JSON.stringify(`${'b'.repeat(80)}…`));
  });
});

describe('safetensors write robustness', () => {
  it('rejects a disposed tensor', async () => {
    // Guards against tfjs's "Tensor is disposed" surfacing as FILE_WRITE_FAILED with advice to
    // check the folder, and against a partial file being left behind.
    await tf.setBackend('cpu');
    const tensorsBefore = tf.memory().numTensors;
    const kept = tf.ones([2]);
    const disposed = tf.zeros([3]);
    disposed.dispose();
    const target = join(root, 'disposed.safetensors');

    let error: unknown;
    try {
      await writeSafetensors(target, { kept, disposed });
    } catch (caught) {
      error = caught;
    }
    kept.dispose();

    expect(error).toBeInstanceOf(ArgumentError);
    expect((error as ArgumentError).code).toBe('SAFETENSORS_TENSOR_DISPOSED');
    expect((error as Error).message).toBe(
      'Cannot write tensor "disposed": it has been disposed. Write tensors before disposing them, or pass a clone.',
    );
    expect(await readdir(root)).not.toContain('disposed.safetensors');
    expect(tf.memory().numTensors).toBe(tensorsBefore);
  });
});
