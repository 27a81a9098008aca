/**
 * Element-wise comparison of a tensor with expected values, with the tolerance rule of
 * `numpy.allclose`: an element passes when `|actual - expected| <= atol + rtol * |expected|`.
 */
import { AssertionError } from 'node:assert';

import * as tf from '@tensorflow/tfjs';

import { ArgumentError } from '../errors.js';

/** Nested arrays of numbers, as `tf.tensor` accepts them. */
export interface NestedNumberArray extends ReadonlyArray<number | NestedNumberArray> {}

/**
 * Expected values of a comparison:
 * - a tensor, whose shape must equal the actual tensor's shape;
 * - nested arrays, whose shape (from the nesting) must equal the actual shape;
 * - a typed array, compared element by element in row-major order; only the element count must match;
 * - a number, compared with every element.
 */
export type ExpectedValues = tf.Tensor | NestedNumberArray | Float32Array | Float64Array | Int32Array | number;

/** Options of {@link compareTensors} and {@link assertTensorsClose}. */
export interface TensorComparisonOptions {
  /**
   * Relative tolerance, a multiple of `|expected|`.
   * @default 1e-5
   */
  rtol?: number;
  /**
   * Absolute tolerance, added to the relative one.
   * @default 1e-8
   */
  atol?: number;
  /**
   * Count a NaN in both tensors at the same element as equal.
   * @default false
   */
  equalNaN?: boolean;
}

/** Result of {@link compareTensors}. */
export interface TensorComparison {
  /** True when the shapes match and every element is within tolerance. */
  pass: boolean;
  /** Shape of the actual tensor. */
  actualShape: number[];
  /** Shape of the expected values; `undefined` for a typed array or a number. */
  expectedShape: number[] | undefined;
  /** Elements compared; 0 when the shapes or element counts differ. */
  elementCount: number;
  /** Elements outside the tolerance. */
  mismatchCount: number;
  /** Largest `|actual - expected|` over all elements (NaN when an element is NaN on one side only). */
  maxAbsoluteError: number;
  /** Largest `|actual - expected| / |expected|` over the elements whose expected value is finite and not 0. */
  maxRelativeError: number;
  /** The element that exceeds its tolerance by the most, when one does. */
  worst?: {
    /** Multi-dimensional index of the element in the actual tensor. */
    index: number[];
    actual: number;
    expected: number;
    /** `atol + rtol * |expected|` at this element; 0 where a value is infinite. */
    allowed: number;
  };
  /** A one-line description of the result, for assertion messages. */
  message: string;
}

const DEFAULT_RTOL = 1e-5;
const DEFAULT_ATOL = 1e-8;

/**
 * Compares `actual` with `expected` element by element and returns the figures of the comparison.
 * Reads the tensor synchronously and creates no tensors that outlive the call.
 *
 * @example
 * ```ts
 * const result = compareTensors(weights, [[0.5, -0.25], [1, 0]], { rtol: 1e-6 });
 * if (!result.pass) console.log(result.message);
 * ```
 */
export function compareTensors(actual: tf.Tensor, expected: ExpectedValues, options: TensorComparisonOptions = {}): TensorComparison {
  const rtol = checkTolerance('rtol', options.rtol ?? DEFAULT_RTOL);
  const atol = checkTolerance('atol', options.atol ?? DEFAULT_ATOL);
  const equalNaN = options.equalNaN ?? false;
  const tolerance = `rtol ${rtol}, atol ${atol}`;

  const actualShape = [...actual.shape];
  const actualValues = actual.dataSync() as ArrayLike<number>;
  const { values: expectedValues, shape: expectedShape } = readExpected(expected, actualValues.length);

  const shapeMismatch = expectedShape !== undefined && !sameShape(actualShape, expectedShape);
  if (shapeMismatch || expectedValues.length !== actualValues.length) {
    const expectedText = expectedShape === undefined ? `${expectedValues.length} values` : `shape [${expectedShape.join(', ')}]`;
    return {
      pass: false,
      actualShape,
      expectedShape,
      elementCount: 0,
      mismatchCount: 0,
      maxAbsoluteError: Number.NaN,
      maxRelativeError: Number.NaN,
      message: `Shapes differ: actual [${actualShape.join(', ')}] (${actualValues.length} values), expected ${expectedText}.`,
    };
  }

  let mismatchCount = 0;
  let maxAbsoluteError = 0;
  let maxRelativeError = 0;
  let worstExcess = Number.NEGATIVE_INFINITY;
  let worstFlatIndex = -1;

  for (let index = 0; index < actualValues.length; index += 1) {
    const a = actualValues[index] as number;
    const e = expectedValues[index] as number;

    // Two NaNs are equal only with equalNaN; a NaN on one side always fails.
    if (Number.isNaN(a) || Number.isNaN(e)) {
      const equal = equalNaN && Number.isNaN(a) && Number.isNaN(e);
      if (!equal) {
        mismatchCount += 1;
        maxAbsoluteError = Number.NaN;
        if (worstExcess !== Number.POSITIVE_INFINITY) {
          worstExcess = Number.POSITIVE_INFINITY;
          worstFlatIndex = index;
        }
      }
      continue;
    }

    // An infinity passes only against the same infinity: the tolerance of an infinite expected
    // value would be infinite too, and would accept anything.
    const error = a === e ? 0 : Math.abs(a - e);
    const allowed = Number.isFinite(a) && Number.isFinite(e) ? atol + rtol * Math.abs(e) : 0;
    if (!Number.isNaN(maxAbsoluteError)) {
      maxAbsoluteError = Math.max(maxAbsoluteError, error);
    }
    if (e !== 0 && Number.isFinite(e)) {
      maxRelativeError = Math.max(maxRelativeError, error / Math.abs(e));
    }
    if (error > allowed) {
      mismatchCount += 1;
      if (error - allowed > worstExcess) {
        worstExcess = error - allowed;
        worstFlatIndex = index;
      }
    }
  }

  const result: TensorComparison = {
    pass: mismatchCount === 0,
    actualShape,
    expectedShape,
    elementCount: actualValues.length,
    mismatchCount,
    maxAbsoluteError,
    maxRelativeError,
    message: '',
  };

  if (worstFlatIndex >= 0) {
    const e = expectedValues[worstFlatIndex] as number;
    result.worst = {
      index: unravelIndex(worstFlatIndex, actualShape),
      actual: actualValues[worstFlatIndex] as number,
      expected: e,
      allowed: Number.isFinite(e) ? atol + rtol * Math.abs(e) : 0,
    };
    const worst = result.worst;
    result.message =
      `${mismatchCount} of ${actualValues.length} elements differ (${tolerance}). ` +
      `Worst at [${worst.index.join(', ')}]: actual ${worst.actual}, expected ${worst.expected}, ` +
      `error ${Math.abs(worst.actual - worst.expected)}, allowed ${worst.allowed}. ` +
      `Max absolute error ${maxAbsoluteError}, max relative error ${maxRelativeError}.`;
  } else {
    result.message =
      `All ${actualValues.length} elements are within tolerance (${tolerance}); ` +
      `max absolute error ${maxAbsoluteError}, max relative error ${maxRelativeError}.`;
  }
  return result;
}

/**
 * Throws an `AssertionError` (from `node:assert`, which test runners report as a failed
 * assertion) unless `actual` matches `expected` within tolerance. The message names the worst
 * element, its error and the allowed error.
 *
 * @example
 * ```ts
 * // In a vitest or node:test test:
 * assertTensorsClose(variable, [1.001, 2.002], { rtol: 1e-6 });
 * ```
 */
export function assertTensorsClose(actual: tf.Tensor, expected: ExpectedValues, options: TensorComparisonOptions = {}): void {
  const result = compareTensors(actual, expected, options);
  if (!result.pass) {
    throw new AssertionError({ message: result.message, actual: actual.arraySync(), expected: expectedForMessage(expected), operator: 'assertTensorsClose' });
  }
}

function checkTolerance(name: string, value: number): number {
  if (!Number.isFinite(value) || value < 0) {
    throw new ArgumentError('TESTING_INVALID_OPTION', `Invalid tolerance ${name}: ${value}. Expected a finite number of at least 0.`, {
      details: { [name]: value },
    });
  }
  return value;
}

function readExpected(expected: ExpectedValues, actualSize: number): { values: ArrayLike<number>; shape: number[] | undefined } {
  if (typeof expected === 'number') {
    return { values: new Float64Array(actualSize).fill(expected), shape: undefined };
  }
  if (expected instanceof tf.Tensor) {
    return { values: expected.dataSync() as ArrayLike<number>, shape: [...expected.shape] };
  }
  if (ArrayBuffer.isView(expected)) {
    return { values: expected, shape: undefined };
  }
  const shape = nestedShape(expected);
  return { values: (expected as unknown[]).flat(Number.POSITIVE_INFINITY) as number[], shape };
}

/** Shape of nested arrays from their first elements, checking that every row agrees. */
function nestedShape(values: NestedNumberArray): number[] {
  const shape: number[] = [];
  let level: unknown = values;
  while (Array.isArray(level)) {
    shape.push(level.length);
    level = level[0];
  }
  checkRagged(values, shape, 0, []);
  return shape;
}

function checkRagged(values: unknown, shape: number[], depth: number, path: number[]): void {
  if (depth === shape.length) {
    if (typeof values !== 'number') {
      throw raggedError(path, `a number, got ${JSON.stringify(values)}`);
    }
    return;
  }
  if (!Array.isArray(values) || values.length !== shape[depth]) {
    throw raggedError(path, `an array of ${shape[depth]} entries, as the first entry at this depth`);
  }
  values.forEach((value, index) => checkRagged(value, shape, depth + 1, [...path, index]));
}

function raggedError(path: number[], expectation: string): ArgumentError {
  return new ArgumentError(
    'TESTING_INVALID_EXPECTED',
    `Expected values are ragged: the entry at [${path.join(', ')}] should be ${expectation}. Give nested arrays of one shape.`,
    { details: { path } },
  );
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((dimension, index) => dimension === b[index]);
}

/** Turns a row-major flat index into a multi-dimensional index of `shape`. */
function unravelIndex(flatIndex: number, shape: readonly number[]): number[] {
  const index = new Array<number>(shape.length).fill(0);
  let remainder = flatIndex;
  for (let axis = shape.length - 1; axis >= 0; axis -= 1) {
    const size = shape[axis] as number;
    index[axis] = remainder % size;
    remainder = Math.floor(remainder / size);
  }
  return index;
}

function expectedForMessage(expected: ExpectedValues): unknown {
  if (expected instanceof tf.Tensor) return expected.arraySync();
  if (ArrayBuffer.isView(expected)) return Array.from(expected as ArrayLike<number>);
  return expected;
}
