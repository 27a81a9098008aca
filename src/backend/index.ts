/**
 * Selection of the TensorFlow.js backend.
 *
 * The library and the caller share one tfjs engine: the library imports `@tensorflow/tfjs` as a
 * peer of the caller's code (it is never bundled), so tensors created on either side are the same
 * kind of object, and a backend set here is also the caller's backend.
 */
import * as tf from '@tensorflow/tfjs';
import { createRequire } from 'node:module';

import { BackendError } from '../errors.js';

/** A backend the library can run on. `tensorflow` is libtensorflow through `tfjs-node(-gpu)`. */
export type BackendName = 'tensorflow' | 'wasm' | 'cpu';

/** The backend that {@link initBackend} selected. */
export interface BackendInfo {
  /** The tfjs backend now active. */
  name: BackendName;
  /** The npm package that provides it. */
  package: string;
}

/** Options of {@link initBackend}. */
export interface InitBackendOptions {
  /**
   * The backend to use, or `auto` for the best one installed:
   * `tensorflow` (from `@tensorflow/tfjs-node-gpu`, then `@tensorflow/tfjs-node`), then `wasm`, then `cpu`.
   * @default 'auto'
   */
  backend?: BackendName | 'auto';
}

const requireFromHere = createRequire(import.meta.url);

/**
 * Selects and initialises a tfjs backend, and returns which one runs.
 *
 * A named backend that cannot be loaded is an error; `auto` falls through to the next candidate.
 */
export async function initBackend(options: InitBackendOptions = {}): Promise<BackendInfo> {
  const requested = options.backend ?? 'auto';

  const candidates: BackendName[] = requested === 'auto' ? ['tensorflow', 'wasm', 'cpu'] : [requested];
  const failures: string[] = [];

  for (const name of candidates) {
    try {
      const info = await activate(name);
      return info;
    } catch (error) {
      failures.push(`${name}: ${(error as Error).message}`);
    }
  }

  throw new BackendError(
    'BACKEND_UNAVAILABLE',
    `Failed to initialise the tfjs backend "${requested}" (${failures.join('; ')}). ` +
      'Install the package that provides it, or choose another backend (auto, tensorflow, wasm, cpu).',
    { details: { requested, failures } },
  );
}

/** Returns the name of the active tfjs backend. */
export function currentBackend(): string {
  return tf.getBackend();
}

async function activate(name: BackendName): Promise<BackendInfo> {
  if (tf.getBackend() === name && name !== 'tensorflow') {
    return { name, package: name === 'wasm' ? '@tensorflow/tfjs-backend-wasm' : '@tensorflow/tfjs' };
  }

  if (name === 'tensorflow') {
    const pkg = loadNodeBinding();
    await setOrThrow('tensorflow');
    return { name, package: pkg };
  }

  if (name === 'wasm') {
    // The wasm package registers its backend on import; in Node it reads its .wasm files from its own folder.
    requireFromHere('@tensorflow/tfjs-backend-wasm');
    await setOrThrow('wasm');
    return { name, package: '@tensorflow/tfjs-backend-wasm' };
  }

  await setOrThrow('cpu');
  return { name, package: '@tensorflow/tfjs' };
}

function loadNodeBinding(): string {
  const errors: string[] = [];
  for (const pkg of ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node']) {
    try {
      requireFromHere(pkg);
      return pkg;
    } catch (error) {
      errors.push(`${pkg}: ${(error as Error).message.split('\n')[0]}`);
    }
  }
  throw new Error(`neither tfjs-node package could be loaded (${errors.join('; ')})`);
}

async function setOrThrow(name: string): Promise<void> {
  const ok = await tf.setBackend(name);
  if (!ok || tf.getBackend() !== name) {
    throw new Error(`tf.setBackend("${name}") failed`);
  }
  await tf.ready();
}
