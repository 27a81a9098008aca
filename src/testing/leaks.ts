/**
 * Tensor leak checks: run a function and compare the tfjs engine's live tensors and variables
 * before and after it.
 */
import { AssertionError } from 'node:assert';

import * as tf from '@tensorflow/tfjs';

import { ArgumentError } from '../errors.js';

/** Live tensors, data buffers, bytes and variables of the tfjs engine at one moment. */
export interface MemorySnapshot {
  /** `tf.memory().numTensors`. */
  numTensors: number;
  /** `tf.memory().numDataBuffers`. */
  numDataBuffers: number;
  /** `tf.memory().numBytes`. */
  numBytes: number;
  /** Names of the variables registered in the engine. */
  variableNames: string[];
}

/** Result of {@link checkTensorLeaks}. */
export interface LeakReport<T> {
  /** Return value of the checked function, awaited when it is a promise. */
  result: T;
  before: MemorySnapshot;
  after: MemorySnapshot;
  /** `after.numTensors - before.numTensors`; negative when the function disposed older tensors. */
  leakedTensors: number;
  /** `after.numBytes - before.numBytes`. */
  leakedBytes: number;
  /** Variables registered during the call and still registered after it. */
  newVariables: string[];
}

/** Options of {@link assertNoTensorLeaks}. */
export interface AssertNoTensorLeaksOptions {
  /**
   * Tensors the function may leave alive on purpose, for example the tensors it returns.
   * @default 0
   */
  allowedTensors?: number;
  /**
   * Allow new variables to stay registered, for example optimizer slots created on the first step.
   * @default false
   */
  allowNewVariables?: boolean;
}

/** Takes a {@link MemorySnapshot} of the tfjs engine now. */
export function memorySnapshot(): MemorySnapshot {
  const memory = tf.memory();
  return {
    numTensors: memory.numTensors,
    numDataBuffers: memory.numDataBuffers,
    numBytes: memory.numBytes,
    variableNames: Object.keys(tf.engine().registeredVariables),
  };
}

/**
 * Runs `fn` (sync or async) and reports how many tensors, bytes and variables it left alive.
 * An error thrown by `fn` propagates unchanged.
 *
 * Run it on work that has run once before: the first step of an optimizer creates its slots, and
 * tfjs backends cache some tensors on first use, which are not leaks.
 *
 * @example
 * ```ts
 * const report = await checkTensorLeaks(() => optimizer.applyGradients(gradients));
 * console.log(report.leakedTensors); // 0 when the step frees everything it allocates
 * ```
 */
export async function checkTensorLeaks<T>(fn: () => T | Promise<T>): Promise<LeakReport<T>> {
  const before = memorySnapshot();
  const result = await fn();
  const after = memorySnapshot();

  const known = new Set(before.variableNames);
  return {
    result,
    before,
    after,
    leakedTensors: after.numTensors - before.numTensors,
    leakedBytes: after.numBytes - before.numBytes,
    newVariables: after.variableNames.filter((name) => !known.has(name)),
  };
}

/**
 * Runs `fn` and throws an `AssertionError` (from `node:assert`) when it leaves more live tensors
 * than `allowedTensors`, or new variables unless `allowNewVariables`. Returns what `fn` returned.
 *
 * @example
 * ```ts
 * await assertNoTensorLeaks(() => {
 *   const { value, grads } = tf.variableGrads(loss);
 *   optimizer.applyGradients(grads);
 *   tf.dispose([value, ...Object.values(grads)]);
 * });
 * ```
 */
export async function assertNoTensorLeaks<T>(fn: () => T | Promise<T>, options: AssertNoTensorLeaksOptions = {}): Promise<T> {
  const allowedTensors = options.allowedTensors ?? 0;
  if (!Number.isInteger(allowedTensors) || allowedTensors < 0) {
    throw new ArgumentError('TESTING_INVALID_OPTION', `Invalid allowedTensors: ${allowedTensors}. Expected an integer of at least 0.`, {
      details: { allowedTensors },
    });
  }

  const report = await checkTensorLeaks(fn);
  const problems: string[] = [];
  if (report.leakedTensors > allowedTensors) {
    problems.push(
      `${report.leakedTensors} tensor(s) (${report.leakedBytes} bytes) stayed alive, ${allowedTensors} allowed ` +
        `(tf.memory().numTensors ${report.before.numTensors} before, ${report.after.numTensors} after)`,
    );
  }
  if (report.newVariables.length > 0 && options.allowNewVariables !== true) {
    problems.push(`${report.newVariables.length} new variable(s) stayed registered: ${report.newVariables.slice(0, 10).join(', ')}`);
  }
  if (problems.length > 0) {
    throw new AssertionError({
      message: `Tensor leak: ${problems.join('; ')}. Dispose them, or wrap the work in tf.tidy().`,
      actual: report.after.numTensors,
      expected: report.before.numTensors + allowedTensors,
      operator: 'assertNoTensorLeaks',
    });
  }
  return report.result;
}
