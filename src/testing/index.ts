/**
 * Helpers for testing code that uses this library, imported from `nested-learning/testing`:
 * tensor comparison with a `numpy.allclose` tolerance, tensor leak checks, and snapshots of
 * variables to see which ones an optimizer step moved. Failed checks throw `AssertionError` from
 * `node:assert`, which every Node test runner reports as a failed assertion. The helpers use the
 * same tfjs engine as the library and the caller.
 *
 * @module nested-learning/testing
 */
export { assertTensorsClose, compareTensors } from './compare.js';
export type { ExpectedValues, NestedNumberArray, TensorComparison, TensorComparisonOptions } from './compare.js';
export { assertNoTensorLeaks, checkTensorLeaks, memorySnapshot } from './leaks.js';
export type { AssertNoTensorLeaksOptions, LeakReport, MemorySnapshot } from './leaks.js';
export { captureWeights, weightChanges } from './weights.js';
export type { WeightChange, WeightSnapshot, WeightSource } from './weights.js';
