/** Format detection and conversion between PEFT and mlx_lm adapter folders. */
import * as tf from '@tensorflow/tfjs';
import * as path from 'node:path';

import { FileFormatError } from '../errors.js';
import { checkAdapterFolder, fileExists, readAdapterConfig } from './common.js';
import { MLX_WEIGHTS_FILE, readMlxAdapter, writeMlxAdapter, type WriteMlxAdapterOptions } from './mlx.js';
import { PEFT_WEIGHTS_FILE, readPeftAdapter, writePeftAdapter, type WritePeftAdapterOptions } from './peft.js';
import type { AdapterFormat, LoraAdapter } from './types.js';

/** Options of {@link convertAdapter}: the target format and that format's writer options. */
export type ConvertAdapterOptions = ({ to: 'peft' } & WritePeftAdapterOptions) | ({ to: 'mlx' } & WriteMlxAdapterOptions);

/**
 * Tells which format an adapter folder is in, from its weights file: `adapter_model.safetensors`
 * is PEFT and `adapters.safetensors` is mlx_lm. A folder with both is decided by its
 * `adapter_config.json` (PEFT configs have `peft_type`).
 */
export async function detectAdapterFormat(folder: string): Promise<AdapterFormat> {
  await checkAdapterFolder(folder);
  const hasPeft = await fileExists(path.join(folder, PEFT_WEIGHTS_FILE));
  const hasMlx = await fileExists(path.join(folder, MLX_WEIGHTS_FILE));

  if (hasPeft && hasMlx) {
    const config = await readAdapterConfig(folder);
    return 'peft_type' in config ? 'peft' : 'mlx';
  }
  if (hasPeft) return 'peft';
  if (hasMlx) return 'mlx';

  const hasBin = await fileExists(path.join(folder, 'adapter_model.bin'));
  throw new FileFormatError(
    'ADAPTER_NOT_FOUND',
    `No adapter weights in ${folder}: expected ${PEFT_WEIGHTS_FILE} (PEFT) or ${MLX_WEIGHTS_FILE} (mlx_lm).` +
      (hasBin ? ' The folder has adapter_model.bin, which is not read; save the adapter with safe_serialization=True.' : ''),
    { details: { folder } },
  );
}

/** Reads a PEFT or mlx_lm adapter folder, detecting its format. */
export async function readAdapter(folder: string): Promise<LoraAdapter> {
  const format = await detectAdapterFormat(folder);
  return format === 'peft' ? readPeftAdapter(folder) : readMlxAdapter(folder);
}

/** Reads the adapter in `sourceDir` and writes it to `targetDir` in the format `options.to`. */
export async function convertAdapter(sourceDir: string, targetDir: string, options: ConvertAdapterOptions): Promise<void> {
  const adapter = await readAdapter(sourceDir);
  try {
    if (options.to === 'peft') {
      await writePeftAdapter(targetDir, adapter, options);
    } else {
      await writeMlxAdapter(targetDir, adapter, options);
    }
  } finally {
    tf.dispose(Object.values(adapter.weights));
  }
}
