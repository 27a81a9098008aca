export * from './atomic.js';
export { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16, isSafetensorsDtype, type SafetensorsDtype } from './dtypes.js';
export * from './safetensors.js';
export * from './jsonl.js';
