import * as tf from '@tensorflow/tfjs';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import {
  encodeSafetensors,
  NestedLearningError,
  openSafetensors,
  parseSafetensors,
  type RawTensor,
  type SafetensorsBuffer,
} from '../src/index.js';

/** mulberry32: a small seeded generator, so every failing case can be replayed from its index. */
function makeRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

const CASES = 2000;
const DISK_CASES = 100;

/** Valid files to mutate: several dtypes, metadata, empty tensors and a scalar. */
function seedFiles(): Uint8Array[] {
  const weight = tf.tensor([0.5, -1.25, 3, 1e-3, 7, -8], [2, 3]);
  const ids = tf.tensor([1, -2, 3], [3], 'int32');
  const files = [
    encodeSafetensors({ weight, ids }, { metadata: { format: 'pt' } }),
    encodeSafetensors({ weight }, { dtype: 'BF16' }),
    encodeSafetensors({
      half: { dtype: 'F16', shape: [4], data: new Uint8Array([0, 60, 0, 124, 0, 126, 1, 0]) },
      long: { dtype: 'I64', shape: [2], data: new Uint8Array([5, 0, 0, 0, 0, 0, 0, 0, 255, 255, 255, 255, 255, 255, 255, 255]) },
      empty: { dtype: 'F32', shape: [0, 4], data: new Uint8Array(0) },
      scalar: { dtype: 'F64', shape: [], data: new Uint8Array(8) },
      flags: { dtype: 'BOOL', shape: [3], data: new Uint8Array([1, 0, 1]) },
    }),
  ];
  tf.dispose([weight, ids]);
  return files;
}

const JSON_CHARACTERS = '{}[]:,"0123456789 -.eE\\u';

/** Applies one random mutation: byte flips, header-text edits, length-field changes, truncation or growth. */
function mutate(original: Uint8Array, random: () => number): Uint8Array {
  const pick = (limit: number): number => Math.floor(random() * limit);
  const headerLength = Number(new DataView(original.buffer, original.byteOffset).getBigUint64(0, true));
  const kind = pick(6);

  if (kind === 0) {
    const bytes = original.slice();
    const flips = 1 + pick(4);
    for (let flip = 0; flip < flips; flip += 1) {
      const at = pick(bytes.length);
      bytes[at] = (bytes[at] as number) ^ (1 << pick(8));
    }
    return bytes;
  }

  if (kind === 1 || kind === 2) {
    // Edit the header text: replace, insert or delete characters that matter to JSON.
    const text = new TextDecoder().decode(original.subarray(8, 8 + headerLength));
    const at = pick(text.length);
    const character = JSON_CHARACTERS[pick(JSON_CHARACTERS.length)] as string;
    const edited =
      kind === 1 ? text.slice(0, at) + character + text.slice(at + 1) : random() < 0.5 ? text.slice(0, at) + character + text.slice(at) : text.slice(0, at) + text.slice(at + 1);
    const header = new TextEncoder().encode(edited);
    const data = original.subarray(8 + headerLength);
    const bytes = new Uint8Array(8 + header.length + data.length);
    new DataView(bytes.buffer).setBigUint64(0, BigInt(header.length), true);
    bytes.set(header, 8);
    bytes.set(data, 8 + header.length);
    return bytes;
  }

  if (kind === 3) {
    const bytes = original.slice();
    const choices = [0n, 1n, BigInt(headerLength - 1), BigInt(headerLength + 1), BigInt(bytes.length), 2n ** 40n, 2n ** 63n, 2n ** 64n - 1n];
    new DataView(bytes.buffer).setBigUint64(0, choices[pick(choices.length)] as bigint, true);
    return bytes;
  }

  if (kind === 4) {
    return original.slice(0, pick(original.length));
  }

  const extra = new Uint8Array(1 + pick(16)).map(() => pick(256));
  const bytes = new Uint8Array(original.length + extra.length);
  bytes.set(original);
  bytes.set(extra, original.length);
  return bytes;
}

/**
 * Checks a file that parsed: every tensor decodes to its declared shape or fails with a typed
 * error, and re-encoding its raw bytes reproduces the same entries and bytes.
 */
function checkParsedFile(file: SafetensorsBuffer): void {
  const raws: Record<string, RawTensor> = {};
  for (const entry of file.entries) {
    const raw = file.readRaw(entry.name);
    expect(raw.data.length).toBe(entry.dataOffsets[1] - entry.dataOffsets[0]);
    raws[entry.name] = raw;
    try {
      const tensor = file.readTensor(entry.name);
      expect(tensor.shape).toEqual(entry.shape);
      tensor.dispose();
    } catch (error) {
      expectTypedError(error);
    }
  }

  const again = parseSafetensors(encodeSafetensors(raws, { metadata: file.metadata }));
  expect(again.metadata).toEqual(file.metadata);
  for (const entry of file.entries) {
    expect(again.readRaw(entry.name)).toEqual(raws[entry.name]);
  }
}

function expectTypedError(error: unknown): void {
  if (!NestedLearningError.isInstance(error) || !error.code.startsWith('SAFETENSORS_')) {
    throw error;
  }
}

let tmpDir: string;

beforeAll(async () => {
  await tf.setBackend('cpu');
  tmpDir = await fs.mkdtemp(path.join(os.tmpdir(), 'safetensors-fuzz-'));
});

afterAll(async () => {
  await fs.rm(tmpDir, { recursive: true, force: true });
});

describe('safetensors fuzz', () => {
  it('gives a typed error or a correct read', () => {
    const tensorsBefore = tf.memory().numTensors;
    const seeds = seedFiles();
    const random = makeRandom(20240611);
    const outcomes = { parsed: 0, rejected: 0 };
    let slowest = 0;

    for (let index = 0; index < CASES; index += 1) {
      const mutated = mutate(seeds[index % seeds.length] as Uint8Array, random);
      const started = performance.now();
      try {
        checkParsedFile(parseSafetensors(mutated));
        outcomes.parsed += 1;
      } catch (error) {
        try {
          expectTypedError(error);
        } catch (untyped) {
          throw new Error(`case ${index}: untyped failure ${String(untyped)}`, { cause: untyped });
        }
        outcomes.rejected += 1;
      }
      slowest = Math.max(slowest, performance.now() - started);
    }

    // Both outcomes must occur, or the mutations are too weak (or too strong) to test anything.
    expect(outcomes.parsed).toBeGreaterThan(50);
    expect(outcomes.rejected).toBeGreaterThan(500);
    expect(slowest).toBeLessThan(1000);
    expect(tf.memory().numTensors).toBe(tensorsBefore);
  });

  it('gives the same outcome from disk', async () => {
    const seeds = seedFiles();
    const random = makeRandom(7);
    const filePath = path.join(tmpDir, 'case.safetensors');

    for (let index = 0; index < DISK_CASES; index += 1) {
      const mutated = mutate(seeds[index % seeds.length] as Uint8Array, random);
      await fs.writeFile(filePath, mutated);

      let memoryCode: string | undefined;
      try {
        parseSafetensors(mutated);
      } catch (error) {
        expectTypedError(error);
        memoryCode = (error as NestedLearningError).code;
      }

      let diskCode: string | undefined;
      try {
        const file = await openSafetensors(filePath);
        for (const entry of file.entries) {
          expect(Array.from((await file.readRaw(entry.name)).data)).toEqual(Array.from(parseSafetensors(mutated).readRaw(entry.name).data));
        }
        await file.close();
      } catch (error) {
        expectTypedError(error);
        diskCode = (error as NestedLearningError).code;
      }
      expect(diskCode, `case ${index}`).toBe(memoryCode);
    }
  });
});
