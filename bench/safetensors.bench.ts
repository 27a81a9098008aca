/**
 * Read throughput of the safetensors reader, with bf16 widening to float32 tfjs tensors, as a
 * ratio of plain `fs` read throughput of the same file.
 *
 * Run: npx tsx --expose-gc bench/safetensors.bench.ts
 * (without --expose-gc it still runs, but garbage from one reader can slow the next).
 *
 * Writes a ~200 MiB BF16 file (50 tensors of [1024, 2048]) to a temporary folder and warms the
 * page cache. Each round then times every reader once, in turn, so that load from other processes
 * affects all of them alike. The report gives each reader's median throughput and the median of
 * the per-round ratios. The file is deleted at the end.
 */
import * as tf from '@tensorflow/tfjs';
import { createReadStream, promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { openSafetensors, readSafetensors, writeSafetensors, type RawTensor } from '../src/index.js';

const TENSOR_COUNT = 50;
const TENSOR_SHAPE = [1024, 2048];
const ROUNDS = 9;

/** BF16 patterns of values in roughly [-4, 4], from a fixed linear congruential sequence (no NaN). */
function randomBf16Tensor(seed: number): RawTensor {
  const count = TENSOR_SHAPE.reduce((product, dimension) => product * dimension, 1);
  const patterns = new Uint16Array(count);
  let state = seed >>> 0;
  for (let index = 0; index < count; index += 1) {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    const sign = state >>> 31;
    const exponent = 118 + ((state >>> 7) % 11);
    const mantissa = state & 0x7f;
    patterns[index] = (sign << 15) | (exponent << 7) | mantissa;
  }
  return { dtype: 'BF16', shape: TENSOR_SHAPE, data: new Uint8Array(patterns.buffer) };
}

async function readWholeFile(filePath: string): Promise<void> {
  await fs.readFile(filePath);
}

async function streamFile(filePath: string): Promise<void> {
  for await (const chunk of createReadStream(filePath, { highWaterMark: 1 << 20 })) {
    void chunk;
  }
}

async function readRawTensors(filePath: string): Promise<void> {
  const file = await openSafetensors(filePath);
  for (const entry of file.entries) {
    await file.readRaw(entry.name);
  }
  await file.close();
}

async function readWidened(filePath: string): Promise<void> {
  const { tensors } = await readSafetensors(filePath);
  tf.dispose(Object.values(tensors));
}

/** V8's collector, present when Node runs with --expose-gc. */
const collectGarbage = (globalThis as { gc?: () => void }).gc;

async function timeSeconds(run: () => Promise<void>): Promise<number> {
  // Free the previous reader's buffers first, so no reader pays for another's garbage.
  collectGarbage?.();
  const started = process.hrtime.bigint();
  await run();
  return Number(process.hrtime.bigint() - started) / 1e9;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] as number;
}

async function main(): Promise<void> {
  await tf.setBackend('cpu');
  const folder = await fs.mkdtemp(path.join(os.tmpdir(), 'safetensors-bench-'));
  const filePath = path.join(folder, 'bench.safetensors');

  try {
    const tensors: Record<string, RawTensor> = {};
    for (let index = 0; index < TENSOR_COUNT; index += 1) {
      tensors[`model.layers.${index}.mlp.up_proj.weight`] = randomBf16Tensor(index + 1);
    }
    await writeSafetensors(filePath, tensors);
    const { size } = await fs.stat(filePath);
    const megabytes = size / 2 ** 20;

    // Warm the page cache so every reader sees the same cached file.
    await readWholeFile(filePath);

    const readers: Array<[string, (file: string) => Promise<void>]> = [
      ['fs.readFile (whole file)', readWholeFile],
      ['fs.createReadStream (1 MiB chunks)', streamFile],
      ['openSafetensors + readRaw (no widening)', readRawTensors],
      ['readSafetensors (bf16 -> float32 tensors)', readWidened],
    ];
    const throughputs = new Map<string, number[]>(readers.map(([label]) => [label, []]));
    const ratios = { readFile: [] as number[], stream: [] as number[] };
    for (let round = 0; round < ROUNDS; round += 1) {
      const roundThroughput: number[] = [];
      for (const [label, reader] of readers) {
        const value = megabytes / (await timeSeconds(() => reader(filePath)));
        throughputs.get(label)?.push(value);
        roundThroughput.push(value);
      }
      const [readFile, stream, , widened] = roundThroughput as [number, number, number, number];
      ratios.readFile.push(widened / readFile);
      ratios.stream.push(widened / stream);
    }

    const cpus = os.cpus();
    console.log(`machine: ${cpus[0]?.model ?? 'unknown CPU'} x ${cpus.length}, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}, tfjs backend ${tf.getBackend()}`);
    console.log(`file: ${megabytes.toFixed(1)} MiB, ${TENSOR_COUNT} BF16 tensors of [${TENSOR_SHAPE.join(', ')}], ${ROUNDS} rounds, gc between runs: ${collectGarbage !== undefined}`);
    for (const [label, values] of throughputs) {
      console.log(`${label.padEnd(44)} median ${median(values).toFixed(0).padStart(5)} MiB/s (min ${Math.min(...values).toFixed(0)}, max ${Math.max(...values).toFixed(0)})`);
    }
    console.log(`ratio, readSafetensors / fs.readFile: median ${median(ratios.readFile).toFixed(2)} (min ${Math.min(...ratios.readFile).toFixed(2)}, max ${Math.max(...ratios.readFile).toFixed(2)})`);
    console.log(`ratio, readSafetensors / fs.createReadStream: median ${median(ratios.stream).toFixed(2)} (min ${Math.min(...ratios.stream).toFixed(2)}, max ${Math.max(...ratios.stream).toFixed(2)})`);
  } finally {
    await fs.rm(folder, { recursive: true, force: true });
  }
}

await main();
