export {};
export * from './hf-config.js';
export * from './checkpoint.js';
