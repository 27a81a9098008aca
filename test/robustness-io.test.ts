import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { FileFormatError } from '../src/errors.js';
import { writeDirectoryAtomic, writeFileAtomic, writeJsonAtomic } from '../src/io/index.js';

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
