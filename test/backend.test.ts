import * as tf from '@tensorflow/tfjs';
import { describe, expect, it } from 'vitest';

import { BackendError, initBackend, NestedLearningError } from '../src/index.js';

describe('initBackend', () => {
  it('selects cpu by name', async () => {
    const info = await initBackend({ backend: 'cpu' });
    expect(info.name).toBe('cpu');
    expect(tf.getBackend()).toBe('cpu');
  });

  it('selects wasm by name', async () => {
    const info = await initBackend({ backend: 'wasm' });
    expect(info).toEqual({ name: 'wasm', package: '@tensorflow/tfjs-backend-wasm' });
    expect(tf.getBackend()).toBe('wasm');
  });

  it('auto falls back past a missing tfjs-node', async () => {
    const info = await initBackend({ backend: 'auto' });
    // tfjs-node is not installed in the test environment, so wasm is the best available backend.
    expect(info.name).toBe('wasm');
  });

  it('rejects tensorflow when tfjs-node is absent', async () => {
    const error = await initBackend({ backend: 'tensorflow' }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(BackendError);
    expect(NestedLearningError.isInstance(error)).toBe(true);
    expect((error as BackendError).code).toBe('BACKEND_UNAVAILABLE');
    expect((error as Error).message).toContain('@tensorflow/tfjs-node');
  });

  it('shares one engine with caller tensors', async () => {
    await initBackend({ backend: 'wasm' });
    const callerTensor = tf.tensor1d([1, 2, 3]);
    expect(callerTensor.dataSync()).toEqual(new Float32Array([1, 2, 3]));
    callerTensor.dispose();
  });
});
