export type { AdapterFormat, LoraAdapter } from './types.js';
export { layerAdapterKey, mlxKeyToPeft, parseLayerAdapterKey, peftKeyToMlx, type LayerAdapterKey } from './keys.js';
export { PEFT_WEIGHTS_FILE, readPeftAdapter, writePeftAdapter, type WritePeftAdapterOptions } from './peft.js';
export { MLX_WEIGHTS_FILE, readMlxAdapter, writeMlxAdapter, type WriteMlxAdapterOptions } from './mlx.js';
export { convertAdapter, detectAdapterFormat, readAdapter, type ConvertAdapterOptions } from './convert.js';
export { validateAdapter } from './validate.js';
