/**
 * LoRA options, adapter key names and the initial values of LoRA parameters.
 *
 * A LoRA linear layer computes `y = W x (+ b) + scale * B(A(dropout(x)))`. Parameters are stored in
 * the mlx_lm layout: `lora_a` has shape `[in, rank]` and `lora_b` has shape `[rank, out]`, under the
 * keys `model.layers.{i}.{module path}.lora_a` / `.lora_b`.
 */
import { ArgumentError } from '../errors.js';
import { SeededRandom } from './random.js';
import type { ModelConfig } from './types.js';

/** A projection that can carry a LoRA adapter. */
export type LoraTargetModule = 'q_proj' | 'k_proj' | 'v_proj' | 'o_proj' | 'gate_proj' | 'up_proj' | 'down_proj';

/** Every projection of a decoder layer, in the order the layer applies them. */
export const LORA_TARGET_MODULES: readonly LoraTargetModule[] = [
  'q_proj',
  'k_proj',
  'v_proj',
  'o_proj',
  'gate_proj',
  'up_proj',
  'down_proj',
];

/** Path of each projection inside a decoder layer, as Hugging Face and mlx_lm name it. */
export const LORA_MODULE_PATHS: Readonly<Record<LoraTargetModule, string>> = {
  q_proj: 'self_attn.q_proj',
  k_proj: 'self_attn.k_proj',
  v_proj: 'self_attn.v_proj',
  o_proj: 'self_attn.o_proj',
  gate_proj: 'mlp.gate_proj',
  up_proj: 'mlp.up_proj',
  down_proj: 'mlp.down_proj',
};

/** Options of the LoRA layers of a {@link CausalLM}. */
export interface LoraOptions {
  /** Rank `r` of each adapter. */
  rank: number;
  /**
   * Multiplier of the adapter output: the mlx_lm `scale`, which equals PEFT `lora_alpha / r`
   * (or `lora_alpha / sqrt(r)` with rsLoRA).
   */
  scale: number;
  /**
   * Dropout probability applied to the adapter input during training.
   * @default 0
   */
  dropout?: number;
  /**
   * Projections that get an adapter, by name (`q_proj`) or by path inside the layer (`self_attn.q_proj`).
   * @default all seven: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj
   */
  targetModules?: readonly string[];
  /**
   * Layer numbers (counted from 0) that get adapters.
   * @default every layer
   */
  layers?: readonly number[];
  /**
   * Seed of the generator that draws the initial `lora_a` values.
   * @default 0
   */
  seed?: number;
}

/** {@link LoraOptions} with every default filled in and every value checked. */
export interface ResolvedLoraOptions {
  rank: number;
  scale: number;
  dropout: number;
  targetModules: LoraTargetModule[];
  layers: number[];
  seed: number;
}

/** One LoRA-adapted projection: where it sits and its dimensions. */
export interface LoraModuleSpec {
  layer: number;
  module: LoraTargetModule;
  inFeatures: number;
  outFeatures: number;
  /** Adapter key of `lora_a`, for example `model.layers.0.self_attn.q_proj.lora_a`. */
  keyA: string;
  /** Adapter key of `lora_b`. */
  keyB: string;
}

/** Returns the adapter key prefix of a projection, for example `model.layers.3.mlp.down_proj`. */
export function loraModulePrefix(layer: number, module: LoraTargetModule): string {
  return `model.layers.${layer}.${LORA_MODULE_PATHS[module]}`;
}

/** Checks LoRA options against the model and fills in the defaults. */
export function resolveLoraOptions(options: LoraOptions, config: ModelConfig): ResolvedLoraOptions {
  const { rank, scale } = options;
  if (!Number.isInteger(rank) || rank < 1) {
    throw invalidOption('rank', rank, 'a positive integer');
  }
  if (typeof scale !== 'number' || !Number.isFinite(scale)) {
    throw invalidOption('scale', scale, 'a finite number');
  }

  const dropout = options.dropout ?? 0;
  if (typeof dropout !== 'number' || !(dropout >= 0 && dropout < 1)) {
    throw invalidOption('dropout', dropout, 'a number in [0, 1)');
  }

  const seed = options.seed ?? 0;
  if (!Number.isInteger(seed)) {
    throw invalidOption('seed', seed, 'an integer');
  }

  const requestedModules = (options.targetModules ?? LORA_TARGET_MODULES).map(moduleName);
  const unknownModules = requestedModules.filter((name) => !(LORA_TARGET_MODULES as readonly string[]).includes(name));
  if (unknownModules.length > 0 || requestedModules.length === 0) {
    throw invalidOption(
      'targetModules',
      options.targetModules,
      `a non-empty list drawn from ${LORA_TARGET_MODULES.join(', ')} (or their paths, such as self_attn.q_proj)`,
    );
  }
  // Keep the layer's order so that initial values do not depend on the order the caller listed modules in.
  const targetModules = LORA_TARGET_MODULES.filter((name) => requestedModules.includes(name));

  const numLayers = config.numHiddenLayers;
  const requestedLayers = options.layers ?? Array.from({ length: numLayers }, (_, i) => i);
  const badLayers = requestedLayers.filter((layer) => !Number.isInteger(layer) || layer < 0 || layer >= numLayers);
  if (badLayers.length > 0 || requestedLayers.length === 0) {
    throw invalidOption('layers', requestedLayers, `a non-empty list of integers in [0, ${numLayers - 1}]`);
  }
  const layers = [...new Set(requestedLayers)].sort((a, b) => a - b);

  // The update scale * A B of an [in, out] projection has rank at most min(in, out), so a larger
  // rank only adds memory, and a huge one overflows the typed array of lora_a.
  const narrowest = targetModules
    .map((module) => ({ module, shape: projectionShape(module, config) }))
    .reduce((best, next) => (Math.min(...next.shape) < Math.min(...best.shape) ? next : best));
  const maxRank = Math.min(...narrowest.shape);
  if (rank > maxRank) {
    throw invalidOption(
      'rank',
      rank,
      `a positive integer of at most ${maxRank}, the smaller dimension of ${narrowest.module} ([${narrowest.shape.join(', ')}]), ` +
        'because a LoRA update cannot have a higher rank than its matrix',
    );
  }

  return { rank, scale, dropout, targetModules, layers, seed };
}

/** Lists the adapted projections in initialisation order: layers ascending, then the layer's module order. */
export function loraModuleSpecs(options: ResolvedLoraOptions, config: ModelConfig): LoraModuleSpec[] {
  const specs: LoraModuleSpec[] = [];
  for (const layer of options.layers) {
    for (const module of options.targetModules) {
      const [inFeatures, outFeatures] = projectionShape(module, config);
      const prefix = loraModulePrefix(layer, module);
      specs.push({ layer, module, inFeatures, outFeatures, keyA: `${prefix}.lora_a`, keyB: `${prefix}.lora_b` });
    }
  }
  return specs;
}

/** Returns `[in, out]` of a projection. */
export function projectionShape(module: LoraTargetModule, config: ModelConfig): [number, number] {
  const hidden = config.hiddenSize;
  const attention = config.numAttentionHeads * config.headDim;
  const keyValue = config.numKeyValueHeads * config.headDim;
  switch (module) {
    case 'q_proj':
      return [hidden, attention];
    case 'k_proj':
    case 'v_proj':
      return [hidden, keyValue];
    case 'o_proj':
      return [attention, hidden];
    case 'gate_proj':
    case 'up_proj':
      return [hidden, config.intermediateSize];
    case 'down_proj':
      return [config.intermediateSize, hidden];
  }
}

/**
 * Draws the initial `lora_a` values of every adapted projection: uniform in `[-1/sqrt(in), 1/sqrt(in))`
 * (the kaiming-uniform bound PEFT and mlx_lm use), from one generator seeded with `seed`, filling each
 * `[in, rank]` matrix in row-major order, projections in {@link loraModuleSpecs} order.
 * `lora_b` starts at zero, so a fresh adapter leaves the model output unchanged.
 */
export function initialLoraA(specs: readonly LoraModuleSpec[], rank: number, seed: number): Float32Array[] {
  const random = new SeededRandom(seed);
  return specs.map((spec) => {
    const bound = 1 / Math.sqrt(spec.inFeatures);
    const values = new Float32Array(spec.inFeatures * rank);
    for (let i = 0; i < values.length; i++) {
      values[i] = (2 * random.nextFloat() - 1) * bound;
    }
    return values;
  });
}

/** Maps a module path such as `self_attn.q_proj` to its name `q_proj`; names pass through. */
function moduleName(nameOrPath: string): string {
  const match = Object.entries(LORA_MODULE_PATHS).find(([, path]) => path === nameOrPath);
  return match === undefined ? nameOrPath : match[0];
}

function invalidOption(field: string, value: unknown, expected: string): ArgumentError {
  return new ArgumentError(
    'LORA_INVALID_OPTION',
    `Invalid LoRA option ${field}: ${JSON.stringify(value)}. Expected ${expected}.`,
    { details: { field, value } },
  );
}
