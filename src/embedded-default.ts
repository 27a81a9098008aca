/**
 * The embedded default run: the tiny Qwen2 model pretrained on Brown Corpus press text, continued
 * with a LoRA adapter on Brown Corpus fiction while the press validation split measures forgetting.
 * Paths are resolved inside the installed package, so the run works from any working directory.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import type { NestedLearningConfigInput } from './config/index.js';

const PACKAGE_NAME = 'nested-learning';

/** Returns the folder of the `nested-learning` package: the nearest parent of this module with its package.json. */
function packageRoot(): string {
  const moduleDir = dirname(fileURLToPath(import.meta.url));
  let dir = moduleDir;
  for (;;) {
    const manifest = join(dir, 'package.json');
    if (existsSync(manifest) && readPackageName(manifest) === PACKAGE_NAME) {
      return dir;
    }
    const parent = dirname(dir);
    if (parent === dir) {
      // Reached only when the package was copied without its package.json: dist/ and src/ sit one level below the root.
      return join(moduleDir, '..');
    }
    dir = parent;
  }
}

function readPackageName(manifest: string): string | undefined {
  try {
    return (JSON.parse(readFileSync(manifest, 'utf8')) as { name?: string }).name;
  } catch {
    return undefined;
  }
}

/** Paths of the embedded model and data inside the package. */
export interface EmbeddedDefaultPaths {
  baseModelPath: string;
  /** Fiction, the new domain. */
  trainDataPath: string;
  valDataPath: string;
  /** Press validation split, the old domain the model was pretrained on. */
  retainDataPath: string;
}

/** Returns the absolute paths of the embedded model and data. */
export function embeddedDefaultPaths(): EmbeddedDefaultPaths {
  const root = packageRoot();
  return {
    baseModelPath: join(root, 'examples', 'models', 'tiny-qwen2'),
    trainDataPath: join(root, 'examples', 'data', 'fiction', 'train.jsonl'),
    valDataPath: join(root, 'examples', 'data', 'fiction', 'valid.jsonl'),
    retainDataPath: join(root, 'examples', 'data', 'press', 'valid.jsonl'),
  };
}

/**
 * Steps of the embedded default run. `nested-learning train` with 150 steps of 8 passages took
 * 3 min 14 s of wall time on 2 shared cores (AMD EPYC, load average about 4 to 5, wasm backend),
 * setup and evaluations included.
 */
export const EMBEDDED_DEFAULT_STEPS = 150;

/**
 * Returns the options of the embedded default run: nested tiers [1, 2, 4] by layer depth on a fresh
 * rank-8 adapter. `experimentName` carries the start time, so repeated runs do not collide.
 */
export function embeddedDefaultConfig(now: Date = new Date()): NestedLearningConfigInput {
  return {
    ...embeddedDefaultPaths(),
    experimentName: `tiny-qwen2-fiction-${timestampName(now)}`,
    tierUpdateFrequencies: [1, 2, 4],
    tierAssignmentStrategy: 'layer_depth',
    loraRank: 8,
    loraAlpha: 16,
    learningRate: 2e-3,
    lrSchedule: 'cosine',
    batchSize: 8,
    maxSeqLength: 256,
    numSteps: EMBEDDED_DEFAULT_STEPS,
    logEvery: 10,
    evalEvery: 25,
    evalBatches: 8,
    checkpointEvery: 50,
    keepLastNCheckpoints: 2,
  };
}

/** Formats a time as `YYYYMMDD-HHMMSS` in UTC. */
function timestampName(time: Date): string {
  return time.toISOString().slice(0, 19).replace(/[-:]/g, '').replace('T', '-');
}
