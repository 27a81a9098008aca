/**
 * Read throughput of the safetensors reader, with bf16 widening to float32 tfjs tensors, as a
 * ratio of plain `fs` read throughput of the same file.
 *
 * Run: npx tsx --expose-gc bench/safetensors.bench.ts
 * (without --expose-gc it still runs, but garbage from one reader can slow the next).
 *
 * Writes a ~200 MiB BF16 file (50 tensors of [1024, 2048]) to a temporary folder and warms the
 * page cache. The first part then times `fs.readFile` and `readSafetensors` once each in a fresh
 * Node process per round, as when a program starts and loads a model. The second part times every
 * reader once per round, in turn, in this process, so that load from other processes affects all
 * of them alike. Memory that one reader freed can then be handed to the next without page faults,
 * which speeds up the reader that reuses it. A fresh process has no such memory. The report gives each
 * reader's median throughput and the median of the per-round ratios. The file is deleted at the
 * end.
 */
import * as tf from '@tensorflow/tfjs';
import { execFileSync } from 'node:child_process';
import { createReadStream, promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

import { openSafetensors, readSafetensors, writeSafetensors, type RawTensor } from '../src/index.js';

const TENSOR_COUNT = 50;
const TENSOR_SHAPE = [1024, 2048];
const ROUNDS = 9;
const FRESH_PROCESS_ROUNDS = 7;

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

/** Times one read of `filePath` in this process and prints the seconds as JSON. */
async function child(reader: string, filePath: string): Promise<void> {
  await tf.setBackend('cpu');
  const read = reader === 'readFile' ? readWholeFile : readWidened;
  const started = process.hrtime.bigint();
  await read(filePath);
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  process.stdout.write(`${JSON.stringify({ seconds })}\n`);
}

/** Runs {@link child} in a new Node process with this process's flags (the tsx loader included). */
function secondsInFreshProcess(reader: string, filePath: string): number {
  const script = fileURLToPath(import.meta.url);
  const output = execFileSync(process.execPath, [...process.execArgv, script, '--child', reader, filePath], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  const lastLine = output.trim().split('\n').pop() ?? '';
  return (JSON.parse(lastLine) as { seconds: number }).seconds;
}

/** Writes the benchmark file; the source tensors go out of scope when this returns. */
async function writeBenchFile(filePath: string): Promise<number> {
  const tensors: Record<string, RawTensor> = {};
  for (let index = 0; index < TENSOR_COUNT; index += 1) {
    tensors[`model.layers.${index}.mlp.up_proj.weight`] = randomBf16Tensor(index + 1);
  }
  await writeSafetensors(filePath, tensors);
  const { size } = await fs.stat(filePath);
  return size / 2 ** 20;
}

function summary(label: string, throughputs: number[]): string {
  return `${label.padEnd(44)} median ${median(throughputs).toFixed(0).padStart(5)} MiB/s (min ${Math.min(...throughputs).toFixed(0)}, max ${Math.max(...throughputs).toFixed(0)})`;
}

function ratioSummary(label: string, ratios: number[]): string {
  return `ratio, ${label}: median ${median(ratios).toFixed(2)} (min ${Math.min(...ratios).toFixed(2)}, max ${Math.max(...ratios).toFixed(2)})`;
}

async function main(): Promise<void> {
  await tf.setBackend('cpu');
  const folder = await fs.mkdtemp(path.join(os.tmpdir(), 'safetensors-bench-'));
  const filePath = path.join(folder, 'bench.safetensors');

  try {
    const megabytes = await writeBenchFile(filePath);
    collectGarbage?.();
    // Warm the page cache so every reader sees the same cached file.
    await readWholeFile(filePath);

    const cpus = os.cpus();
    console.log(`machine: ${cpus[0]?.model ?? 'unknown CPU'} x ${cpus.length}, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}, tfjs backend ${tf.getBackend()}`);
    console.log(`file: ${megabytes.toFixed(1)} MiB, ${TENSOR_COUNT} BF16 tensors of [${TENSOR_SHAPE.join(', ')}]`);

    // Fresh processes first, while this process uses little memory.
    const fresh = { readFile: [] as number[], widened: [] as number[], ratios: [] as number[] };
    for (let round = 0; round < FRESH_PROCESS_ROUNDS; round += 1) {
      const readFile = megabytes / secondsInFreshProcess('readFile', filePath);
      const widened = megabytes / secondsInFreshProcess('readSafetensors', filePath);
      fresh.readFile.push(readFile);
      fresh.widened.push(widened);
      fresh.ratios.push(widened / readFile);
    }
    console.log(`one read per fresh process, ${FRESH_PROCESS_ROUNDS} rounds:`);
    console.log(summary('fs.readFile (whole file)', fresh.readFile));
    console.log(summary('readSafetensors (bf16 -> float32 tensors)', fresh.widened));
    console.log(ratioSummary('readSafetensors / fs.readFile', fresh.ratios));

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
    console.log(`every reader in this process, ${ROUNDS} rounds, gc between runs: ${collectGarbage !== undefined}`);
    for (const [label, values] of throughputs) {
      console.log(summary(label, values));
    }
    console.log(ratioSummary('readSafetensors / fs.readFile', ratios.readFile));
    console.log(ratioSummary('readSafetensors / fs.createReadStream', ratios.stream));
  } finally {
    await fs.rm(folder, { recursive: true, force: true });
  }
}

if (process.argv[2] === '--child') {
  await child(process.argv[3] as string, process.argv[4] as string);
} else {
  await main();
}
